"""Compression at equal size (notebook 08): the rows, their run configs and the tables.

The question behind MetaSD's Table 1 and Figure 1: at the pruned student's number of non-zero
parameters, ⌈(1−γ)·P⌉ of a rank-R ComplEx source's P, which way of getting a model of that size
is best? For each benchmark, source rank R and seed of the profile's ``equal_size`` section the
rows (:data:`ROWS`) are

* ``source``: the dense rank-R ComplEx (full size, for reference);
* ``MetaSD`` (pruned student; its official-dense evaluation as a second column), ``MetaSD w/o M``,
  ``MetaSD w/o P``, ``KD`` and ``DML`` students (KD from the source run);
* ``dense alone``: a ComplEx of the largest rank whose dense size is at most the student's
  (:func:`small_rank`), trained alone;
* ``one-shot prune``: the trained source through a global magnitude mask, no training;
  ``prune + fine-tune``: the same, fine-tuned with the mask fixed (method ``prune_finetune``);
* ``source fp16`` / ``source int8`` and ``dense alone fp16`` / ``int8``: those dense models
  stored at reduced precision (:func:`kgdistill.compression.oneshot.quantize`), compared by bytes.

This module builds the configs (:func:`run_configs`, :func:`section_runs`, :func:`check_equal_size_section`;
it imports no profile or table module, so :mod:`kgdistill.study.profile` can check the section: callers
pass the benchmarks' sizes) and compares MetaSD with the best alternative on per-seed
measurements (:func:`best_alternative`, :func:`paired_comparison`; the interval: :mod:`.intervals`). Training,
the post-hoc rows and the summary table are :mod:`kgdistill.study.equal_size_study`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import pandas as pd

from ..compression.oneshot import SCHEMES
from ..core.models import backbone, rank_for_budget
from ..core.pruning import kept_count
from ..metasd.config import RunConfig
from .intervals import t_interval
from .profile import published, register_section

EQUAL_SIZE_SECTION = "equal_size"
#: keys of the profile section (kgdistill.study.profile checks them; "RunConfig": a mapping of its fields)
SECTION_SCHEMA = {
    "datasets": None, "source_ranks": None, "gamma": None, "seeds": None, "quantize": None, "train_missing": None,
    "config": "RunConfig", "per_dataset": {"*": "RunConfig"}, "per_row": {"*": "RunConfig"},
}


@dataclass(frozen=True)
class Row:
    """A row of the table: a trained run (``method``) or a transform (``transform``: one-shot
    pruning or a quantization scheme) of the weights of the trained row ``of``. ``basis`` says
    what it is compared at: ``full size``, ``equal size`` (the student's non-zero count) or
    ``bytes`` (quantized: all parameters, fewer bytes each)."""

    label: str
    basis: str
    method: str | None = None
    of: str | None = None
    transform: str | None = None


SOURCE, METASD, DENSE = "source", "MetaSD", "dense alone"
_TRAINED = (
    Row(SOURCE, "full size", "baseline"),
    Row(METASD, "equal size", "metasd"),
    Row("MetaSD w/o M", "equal size", "metasd_wo_m"),
    Row("MetaSD w/o P", "equal size", "metasd_wo_p"),
    Row("KD", "equal size", "kd"),
    Row("DML", "equal size", "dml"),
    Row(DENSE, "equal size", "baseline"),
    Row("one-shot prune", "equal size", of=SOURCE, transform="one_shot"),
    Row("prune + fine-tune", "equal size", "prune_finetune"),
)
#: every row, in table order; the quantized rows follow for each scheme of :data:`SCHEMES`
ROWS: tuple[Row, ...] = _TRAINED + tuple(
    Row(f"{of} {scheme}", "bytes", of=of, transform=scheme) for of in (SOURCE, DENSE) for scheme in SCHEMES
)
ROW_BY_LABEL = {row.label: row for row in ROWS}
TRAINED_ROWS = tuple(row.label for row in ROWS if row.method)
#: the rows MetaSD is compared with (same non-zero count, own weights); the quantized dense-alone
#: copies are left out: they are the dense-alone row at fewer bytes, not another way to train
ALTERNATIVES = tuple(row.label for row in ROWS if row.basis == "equal size" and row.label != METASD)


# --- the section and its configs -----------------------------------------------------------------
def small_rank(model: str, n_entities: int, n_relations: int, source_rank: int, gamma: float) -> int:
    """Rank of the dense model trained alone: the largest whose dense size is at most the pruned
    student's ⌈(1−γ)·P⌉ (``P``: the rank-``source_rank`` source's size)."""
    dense = backbone(model).dense_size(n_entities, n_relations, source_rank)
    return rank_for_budget(model, n_entities, n_relations, kept_count(dense, gamma))


def sizes_from_stats(stats: Mapping[str, Mapping]) -> dict[str, tuple[int, int]]:
    """``{benchmark: (entities, relations)}`` from dataset statistics such as
    ``published("datasets", "stats")``."""
    return {name: (int(row["entities"]), int(row["relations"])) for name, row in stats.items()}


def run_configs(section: dict, dataset: str, source_rank: int, seed: int,
                sizes: Mapping[str, tuple[int, int]]) -> dict[str, RunConfig]:
    """``{row label: RunConfig}`` of the trained rows (:data:`TRAINED_ROWS`) on ``dataset`` for one
    source rank and seed: ``section.config`` | ``per_dataset[dataset]`` | ``per_row[label]``, then
    ``dataset``, ``seed``, the rank (the source's; the dense-alone row's :func:`small_rank`) and γ.
    ``sizes`` maps a benchmark to ``(entities, relations)``."""
    if dataset not in sizes:
        raise ValueError(
            f"section {EQUAL_SIZE_SECTION}: no entity/relation counts for {dataset!r}; known: {sorted(sizes)}"
        )
    base = {**(section.get("config") or {}), **((section.get("per_dataset") or {}).get(dataset) or {})}
    per_row = section.get("per_row") or {}
    gamma = float(section.get("gamma", 0.9))

    def config(label: str, **fields) -> RunConfig:
        values = {**base, **(per_row.get(label) or {}), **fields}
        values.setdefault("rank", int(source_rank))
        try:
            return RunConfig.from_dict({**values, "dataset": dataset, "seed": int(seed), "gamma": gamma})
        except ValueError as err:
            raise ValueError(f"profile section {EQUAL_SIZE_SECTION}, row {label!r} on {dataset}: {err}") from err

    source = config(SOURCE, method="baseline", rank=int(source_rank))
    out = {}
    for row in ROWS:
        if not row.method:
            continue
        if row.label == SOURCE:
            out[row.label] = source
        elif row.label == DENSE:
            n_e, n_r = sizes[dataset]
            out[row.label] = config(DENSE, method="baseline",
                                    rank=small_rank(source.model, n_e, n_r, source_rank, gamma))
        elif row.method in ("kd", "prune_finetune"):
            out[row.label] = config(row.label, method=row.method, teacher=source.to_dict(), rank=int(source_rank))
        else:
            out[row.label] = config(row.label, method=row.method, rank=int(source_rank))
    return out


@dataclass(frozen=True)
class SectionRun:
    """One trained run of the section: a row on a benchmark, for a source rank and seed."""

    dataset: str
    source_rank: int
    seed: int
    row: str
    config: RunConfig

    @property
    def label(self) -> str:
        """``"MetaSD [r100]"``: the row and the source rank it is sized by (bracketed, so that
        ``scripts/train_runs.py --match "[r100]"`` selects one rank: "[r100]" is no part of "[r1000]")."""
        return f"{self.row} [r{self.source_rank}]"


def section_runs(section: dict, sizes: Mapping[str, tuple[int, int]]) -> list[SectionRun]:
    """Every trained run of the section, by source rank, seed, benchmark and row - the order a
    queue trains them in, so that an interrupted queue leaves whole seeds of every benchmark (a
    run shared by two rows, e.g. the rank-1000 dense-alone model and the rank-100 source, appears
    twice)."""
    return [
        SectionRun(dataset, int(rank), int(seed), label, config)
        for rank in section["source_ranks"]
        for seed in section["seeds"]
        for dataset in section["datasets"]
        for label, config in run_configs(section, dataset, int(rank), int(seed), sizes).items()
    ]


def check_equal_size_section(
    section: dict, sizes: Mapping[str, tuple[int, int]], where: str = EQUAL_SIZE_SECTION
) -> None:
    """Fail at profile load time, naming the key, when the section cannot build its configs."""
    for key in ("datasets", "source_ranks", "seeds"):
        if not section.get(key):
            raise ValueError(f"{where}: '{key}' must list at least one value")
    unknown = sorted(set(section.get("per_row") or {}) - set(TRAINED_ROWS))
    if unknown:
        raise ValueError(f"{where}.per_row: {unknown} are not trained rows; choose from {list(TRAINED_ROWS)}")
    unknown = sorted(set(section.get("per_dataset") or {}) - set(section["datasets"]))
    if unknown:
        raise ValueError(f"{where}.per_dataset: {unknown} are not in {where}.datasets {section['datasets']}")
    bad = sorted(set(section.get("quantize", SCHEMES)) - set(SCHEMES))
    if bad:
        raise ValueError(
            f"{where}.quantize: {bad} are not schemes of kgdistill.compression.oneshot; choose from {list(SCHEMES)}"
        )
    section_runs(section, sizes)  # every config validates


def shown_rows(section: dict) -> list[str]:
    """The row labels of the tables: every row but the quantization schemes the section leaves out."""
    schemes = section.get("quantize", SCHEMES)
    return [row.label for row in ROWS if row.transform not in SCHEMES or row.transform in schemes]


# --- the paired comparison ---------------------------------------------------------------------------
def best_alternative(measurements: pd.DataFrame, candidates: Sequence[str] = ALTERNATIVES) -> str:
    """The equal-size alternative to MetaSD with the highest mean VALIDATION MRR (never test);
    the first in :data:`ROWS` order on ties."""
    means = measurements.groupby("row")["valid MRR"].mean()
    present = [c for c in candidates if c in means.index]
    if not present:
        raise ValueError(f"no equal-size alternative among the measured rows {sorted(means.index)}")
    return max(present, key=lambda label: (means[label], -present.index(label)))


def paired_comparison(measurements: pd.DataFrame, other: str | None = None) -> dict:
    """MetaSD's pruned student against ``other`` (default: :func:`best_alternative`) on one
    benchmark and source rank: per-seed test-MRR differences (MetaSD − other, same seed, so the
    same source run where one is shared), their mean and 95% t-interval (:func:`t_interval`).

    Returns ``{"alternative", "valid MRR" (both means), "differences" ({seed: Δ}), "mean",
    "low", "high", "seeds", "verdict"}``; the verdict names the better one when the interval
    excludes 0, else says the difference is not resolved."""
    other = other or best_alternative(measurements)
    by_seed = {row: measurements[measurements["row"] == row].set_index("seed") for row in (METASD, other)}
    seeds = sorted(set(by_seed[METASD].index) & set(by_seed[other].index))
    differences = {int(s): float(by_seed[METASD].loc[s, "MRR"] - by_seed[other].loc[s, "MRR"]) for s in seeds}
    mean, low, high = t_interval(list(differences.values()))
    if low > 0:
        verdict = f"MetaSD better than {other}"
    elif high < 0:
        verdict = f"{other} better than MetaSD"
    else:
        verdict = "not resolved (the interval contains 0)" if not math.isnan(low) else "one seed: no interval"
    valid = {row: float(by_seed[row].loc[seeds, "valid MRR"].mean()) for row in (METASD, other)}
    return {"alternative": other, "valid MRR": valid, "differences": differences, "mean": mean, "low": low,
            "high": high, "seeds": len(seeds), "verdict": verdict}


def comparison_frame(results: Mapping[tuple[str, int], dict]) -> pd.DataFrame:
    """One line per (benchmark, source rank) of :func:`paired_comparison` results: the alternative
    chosen on validation, both validation MRRs, the mean test-MRR difference with its 95% interval,
    the per-seed differences and the verdict (text at 4 decimals: nbval compares it)."""
    lines = []
    for (dataset, rank), c in results.items():
        lines.append({
            "dataset": dataset, "source rank": rank, "best alternative (valid)": c["alternative"],
            "valid MRR MetaSD": c["valid MRR"][METASD], "valid MRR alt.": c["valid MRR"][c["alternative"]],
            "test MRR Δ": c["mean"], "95% interval": _interval_text(c["low"], c["high"]),
            "per-seed Δ": " ".join(f"{d:+.4f}" for d in c["differences"].values()),
            "seeds": c["seeds"], "verdict": c["verdict"],
        })
    return pd.DataFrame(lines).set_index(["dataset", "source rank"])


def _interval_text(low: float, high: float) -> str:
    return "-" if math.isnan(low) else f"[{low:+.4f}, {high:+.4f}]"


def _check(profile: dict) -> None:
    where = f"profile {profile.get('_path', profile['name'])}: {EQUAL_SIZE_SECTION}"
    check_equal_size_section(profile[EQUAL_SIZE_SECTION], sizes_from_stats(published("datasets", "stats")), where)


register_section(EQUAL_SIZE_SECTION, SECTION_SCHEMA, _check)
