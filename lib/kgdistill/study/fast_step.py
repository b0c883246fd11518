"""Evidence that the fast step costs nothing: converged test MRR of the chunked bf16 path against
the autograd fp32 path, paired by seed.

:func:`fast_twin` is a run's config on the fast path (``one_vs_all: chunked``, ``precision:
bf16``; nothing else changes, so the pair differs only by the step). :func:`evidence_runs` takes
the reference runs from a profile's plan (by default notebook 08's baselines and MetaSD runs on
Kinship and UMLS at the source ranks, 5 seeds: committed, converged fp32 records) and
:func:`paired_table` compares each with its twin: per dataset, rank, method and model the mean of
each path, the mean paired difference (fast − fp32), its 95% t-interval and n. A difference
beyond :data:`TOLERANCE` is a defect to find, not a footnote.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import pandas as pd

from ..metasd.config import RunConfig
from ..protocol.registry import family_of
from .intervals import t_interval
from .plan import EQUAL_SIZE, PlannedRun

#: the largest paired mean difference in test MRR (fast − fp32) the fast path may show
TOLERANCE = 0.005
#: the fields that put a run on the fast path
FAST = {"one_vs_all": "chunked", "precision": "bf16"}


def fast_twin(config: RunConfig, precision: str = FAST["precision"]) -> RunConfig:
    """``config`` on the chunked path in ``precision`` (default bf16: the fast path; fp32 separates
    what chunking changes from what bf16 changes). A KD teacher is left on its own path."""
    return config.replace(**{**FAST, "precision": precision})


def evidence_runs(plan: Iterable[PlannedRun], datasets: Sequence[str] = ("Kinship", "UMLS"),
                  methods: Sequence[str] = ("baseline", "metasd"), ranks: Sequence[int] = (100, 1000),
                  groups: Sequence[str] = (EQUAL_SIZE,)) -> list[RunConfig]:
    """The reference configs of the comparison: planned runs of ``groups`` (default notebook 08's)
    and ``methods`` on ``datasets`` at ``ranks`` that are on the autograd fp32 path, each once,
    the cheapest first (by rank, baselines before MetaSD)."""
    out: dict[str, RunConfig] = {}
    for run in plan:
        config = run.config
        if run.group not in groups or family_of(config).config_class is not RunConfig:
            continue
        if config.dataset not in datasets or config.method not in methods or config.rank not in ranks:
            continue
        if config.one_vs_all != "autograd":
            continue
        out.setdefault(config.run_name(), config)
    return sorted(out.values(), key=lambda c: (c.rank, c.method != "baseline", c.dataset, c.seed))


def _mrr(record: Mapping, model: str) -> float:
    return float(record["test"][model]["all"]["MRR"])


def paired_table(pairs: Iterable[tuple[RunConfig, Mapping | None, Mapping | None]]) -> pd.DataFrame:
    """One row per (dataset, rank, method, model): ``fp32`` and ``fast`` mean test MRR, ``Δ mean``
    (fast − fp32, paired by seed), ``95% low`` / ``95% high``, ``n`` (seeds with both records),
    ``converged`` (pairs where both runs stopped by the convergence rule) and ``verdict``
    (``within ±0.005``; ``beyond ±0.005, CI ∋ 0``: the mean is outside the tolerance but the
    interval does not exclude no difference, more seeds decide; ``beyond ±0.005: defect``; or
    ``n < 2``). ``pairs``: ``(reference config, its
    record or None, its twin's record or None)``."""
    groups: dict[tuple, list[tuple[float, float, bool]]] = {}
    for config, reference, fast in pairs:
        if reference is None or fast is None:
            continue
        for model in reference["test"]:
            key = (config.dataset, config.rank, config.method, model)
            both = bool(reference.get("converged")) and bool(fast.get("converged"))
            groups.setdefault(key, []).append((_mrr(reference, model), _mrr(fast, model), both))
    rows = []
    for (dataset, rank, method, model), values in sorted(groups.items()):
        diffs = [f - r for r, f, _ in values]
        mean, low, high = t_interval(diffs)
        n = len(values)
        if n < 2:
            verdict = "n < 2"
        elif abs(mean) <= TOLERANCE:
            verdict = "within ±0.005"
        else:
            verdict = "beyond ±0.005, CI ∋ 0" if low <= 0 <= high else "beyond ±0.005: defect"
        rows.append({"dataset": dataset, "rank": rank, "method": method, "model": model,
                     "fp32": sum(r for r, _, _ in values) / n, "fast": sum(f for _, f, _ in values) / n,
                     "Δ mean": mean, "95% low": low, "95% high": high, "n": n,
                     "converged": f"{sum(c for _, _, c in values)}/{n}", "verdict": verdict})
    return pd.DataFrame(rows)
