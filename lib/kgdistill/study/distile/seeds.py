"""The ``tie_seeds`` key of a profile's ``distile:`` section: more seeds for the (backbone, student
dim) pairs whose one-seed DS − no-DS difference is too small to read.

One seed gives one DS − no-DS difference per pair; a difference within a seed's noise is a tie
that counting signs would still call a gain or a loss. ``tie_seeds`` lists such pairs: their
no-DS and DS students train once per listed seed (every DS student distils from the same teacher
run, the section's own, seed 0), and notebook 06 shows the pair's mean over seeds and its mean
paired difference with a 95% t-interval (:func:`kgdistill.study.distile.claims.ds_gains`). Keys:

* ``pairs`` (required): ``{backbone: [student dims]}``, the pairs that get the seeds;
* ``seeds`` (default ``[0, 1, 2]``): the seeds each listed pair trains, distinct non-negative
  integers; a pair's line is over exactly these (list the section's own seed, 0, to keep its run);
* ``dataset`` (default: the first of ``datasets``): the paper dataset whose link-prediction table
  (Table 3: WN18RR) trains the seeds; the other table keeps one seed per pair;
* ``within`` (default 0.01): the tie width the list was chosen by - the pairs whose seed-0
  |DS − no-DS| test MRR is at most ``within``. :func:`tie_check` tells the notebook's reader
  whether the seed-0 table still picks the same pairs.

Seed 0 of a listed pair is the section's own run (same config, same name); the other seeds are
new runs (``-s1-``, ``-s2-`` in their names) that ``scripts/train_runs.py`` lists with rows
``... (Table 3 seed 1)``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

TIE_SEEDS = "tie_seeds"
#: the key's schema (kgdistill.study.profile checks the keys; :func:`check_tie_seeds` the values)
TIE_SEEDS_SCHEMA = {"dataset": None, "seeds": None, "pairs": {"*": None}, "within": None}
DEFAULT_SEEDS, DEFAULT_WITHIN = (0, 1, 2), 0.01


def tie_spec(section: Mapping) -> dict | None:
    """The section's ``tie_seeds`` with its defaults filled in (None without the key):
    ``{"dataset", "seeds", "pairs": {model: [dims]}, "within"}``."""
    spec = section.get(TIE_SEEDS)
    if not spec:
        return None
    return {"dataset": spec.get("dataset") or next(iter(section["datasets"])),
            "seeds": [int(s) for s in spec.get("seeds", DEFAULT_SEEDS)],
            "pairs": {model: [int(d) for d in dims] for model, dims in (spec.get("pairs") or {}).items()},
            "within": float(spec.get("within", DEFAULT_WITHIN))}


def check_tie_seeds(section: Mapping, where: str = "distile") -> None:
    """Raise ``ValueError`` naming the place when ``tie_seeds`` names a dataset, backbone or
    student dim the section does not have, or its seeds / within are not what they must be."""
    raw = section.get(TIE_SEEDS)
    if not raw:
        return
    where = f"{where}.{TIE_SEEDS}"
    if not isinstance(raw.get("pairs"), Mapping) or not raw["pairs"]:
        raise ValueError(f"{where}.pairs: expected a mapping backbone -> [student dims], got {raw.get('pairs')!r}")
    seeds = raw.get("seeds", DEFAULT_SEEDS)
    if (not isinstance(seeds, (list, tuple)) or not seeds or len(set(seeds)) != len(seeds)
            or not all(isinstance(s, int) and s >= 0 for s in seeds)):
        raise ValueError(f"{where}.seeds: expected a list of distinct non-negative integers, got {seeds!r}")
    within = raw.get("within", DEFAULT_WITHIN)
    if not isinstance(within, (int, float)) or within <= 0:
        raise ValueError(f"{where}.within: expected a positive number, got {within!r}")
    spec = tie_spec(section)
    if spec["dataset"] not in section["datasets"]:
        raise ValueError(f"{where}.dataset: {spec['dataset']!r} is not a paper dataset of distile.datasets "
                         f"{sorted(section['datasets'])}")
    for model, dims in raw["pairs"].items():
        if model not in section["models"]:
            raise ValueError(f"{where}.pairs: {model!r} is not a backbone of distile.models {section['models']}")
        if not isinstance(dims, (list, tuple)) or not set(dims) <= set(section["student_dims"]):
            raise ValueError(f"{where}.pairs.{model}: {dims!r} must list student dims of distile.student_dims "
                             f"{section['student_dims']}")


def pair_seeds(section: Mapping, paper_dataset: str, model: str, dim: int) -> list[int] | None:
    """The seeds a (model, student dim) pair of ``paper_dataset`` trains: ``tie_seeds.seeds`` when
    the key lists the pair there, else None (the section's own run, one seed)."""
    spec = tie_spec(section)
    if spec is None or spec["dataset"] != paper_dataset or dim not in spec["pairs"].get(model, ()):
        return None
    return spec["seeds"]


def pair_names(pairs) -> str:
    """``"RotatE 32, TransE 32"`` of (model, dim) pairs."""
    return ", ".join(f"{model} {dim}" for model, dim in pairs)


def tie_check(section: Mapping, paper_dataset: str, seed0: Mapping[tuple[str, int], float]) -> str:
    """Whether the seed-0 table still picks ``tie_seeds``' pairs, one line ("" without the key).

    ``seed0`` holds each pair's DS − no-DS test MRR of the section's own runs (NaN while one is not
    trained). Names the pairs within ``±within`` and, on the key's dataset, says whether that set
    equals the listed pairs (and which differ) - so a reader sees whether the list is still right."""
    spec = tie_spec(section)
    if spec is None:
        return ""
    width = f"±{spec['within']:g}"
    measured = {pair: d for pair, d in seed0.items() if not math.isnan(d)}
    inside = [pair for pair, d in measured.items() if abs(d) <= spec["within"]]
    plural = "s" if len(measured) != 1 else ""
    found = (f"seed 0: DS − no-DS test MRR within {width} in {len(inside)} of {len(measured)} measured pair{plural}"
             + (f" ({', '.join(f'{m} {d} {measured[(m, d)]:+.4f}' for m, d in inside)})" if inside else ""))
    if len(measured) < len(seed0):
        found += f", {len(seed0) - len(measured)} not trained yet"
    if paper_dataset != spec["dataset"]:
        return f"{found}; tie_seeds adds seeds on {spec['dataset']} only."
    listed = [(model, dim) for model, dims in spec["pairs"].items() for dim in dims]
    seeds = ", ".join(map(str, spec["seeds"]))
    outside = [p for p in listed if p in measured and p not in inside]
    unlisted = [p for p in inside if p not in listed]
    unknown = [p for p in listed if p not in measured]
    if not outside and not unlisted:
        return (f"{found}; tie_seeds lists the same pairs (seeds {seeds})"
                + (f", and {pair_names(unknown)}, not trained at seed 0 yet" if unknown else "") + ".")
    parts = ([f"listed but not within {width}: {pair_names(outside)}"] if outside else []) + (
        [f"within but not listed: {pair_names(unlisted)}"] if unlisted else []) + (
        [f"listed, not trained at seed 0 yet: {pair_names(unknown)}"] if unknown else [])
    return f"{found}; this differs from tie_seeds.pairs ({pair_names(listed)}, seeds {seeds}): {'; '.join(parts)}."
