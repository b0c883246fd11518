"""Notebook 06's measured rows and the frames that put them beside the DistilE paper's numbers.

Owns a row of one run (:func:`run_row`: its test metrics, or NaN and :data:`NOT_TRAINED` without a
record) and :func:`compare`, which groups the rows of one (model, dim, method) - several when
the pair trains several seeds (the ``tie_seeds`` key, :mod:`.seeds`) - into one line: the mean
over the seeds with a record, ``±`` its standard deviation and ``seeds`` (how many), beside the
published number of the paper dimension the profile's dimension stands for (:func:`paper_dims`)
and the difference ``Δ``, metrics in the order of the MetaSD tables (:data:`DISTILE_METRICS`).
Torch-free: it reads records (JSON mappings) and plain numbers only.
"""
from __future__ import annotations

import math

import pandas as pd

from ...core.metrics import METRICS
from ..intervals import mean_sd
from ..tables import DAGGER, convergence_mark

#: the metrics of the DistilE tables, in the order of every table of the study (the MetaSD ones' too;
#: the DistilE paper prints MRR, H@10, H@3, H@1)
DISTILE_METRICS = METRICS
#: the paper's dimensions, matched by position with a profile's teacher_dim / student_dims
PAPER_TEACHER_DIM, PAPER_STUDENT_DIMS = 64, (32, 16, 8)
#: the DistilE paper's link-prediction table of each dataset
LINK_TABLES = {"WN18RR": 3, "FB15k-237": 4}
#: a row's ``converged`` when its run has no record (a section with ``train_missing: false``)
NOT_TRAINED = "not trained yet"


def paper_dims(teacher_dim: int | None = None, student_dims=()) -> dict[int, int]:
    """``{profile dim: paper dim}``: ``teacher_dim`` -> 64, ``student_dims`` -> 32/16/8 by position."""
    out = {teacher_dim: PAPER_TEACHER_DIM} if teacher_dim is not None else {}
    out.update(dict(zip(student_dims or (), PAPER_STUDENT_DIMS)))
    return out


def record_metric(record: dict, metric: str = "MRR") -> float:
    """A DistilE record's test ``metric`` of the model it selected (the student of a DS run)."""
    return record["test"][record["selected_model"]]["all"][metric]


def run_row(model: str, dim: int, method: str, record: dict | None, seed: int | None = None) -> dict:
    """A table row of ``record``'s test metrics (NaN and :data:`NOT_TRAINED` without a record);
    ``seed`` (a pair of the ``tie_seeds`` key) is kept as the row's ``seed``."""
    row = {"model": model, "dim": dim, "method": method}
    if seed is not None:
        row["seed"] = seed
    if record is None:
        return {**row, **dict.fromkeys(DISTILE_METRICS, float("nan")), "run": "", "converged": NOT_TRAINED}
    return {**row, **{m: record_metric(record, m) for m in DISTILE_METRICS}, "run": record["run_name"],
            "converged": convergence_mark([record])}


def merged_mark(marks: list[str]) -> str:
    """The ``converged`` text of a line over several seeds' rows (each ``"yes"``, ``"no †"`` or
    :data:`NOT_TRAINED`): :data:`NOT_TRAINED` when none has a record, else as
    :func:`kgdistill.study.tables.convergence_mark` over the rows with a record (``"2/2"``, ``"1/2 †"``)."""
    if len(marks) == 1:
        return marks[0]
    trained = [m for m in marks if m != NOT_TRAINED]
    if not trained:
        return NOT_TRAINED
    hit = sum(DAGGER in m for m in trained)
    text = ("no" if hit else "yes") if len(trained) == 1 else f"{len(trained) - hit}/{len(trained)}"
    return f"{text} {DAGGER}" if hit else text


def compare(rows: list[dict], paper: dict, metrics: tuple[str, ...] = DISTILE_METRICS, student_dims=None,
            teacher_dim: int | None = None) -> pd.DataFrame:
    """Measured rows beside the paper's: columns ``<m>``, ``<m> paper`` and ``<m> Δ`` (measured −
    paper) per metric, as in :func:`kgdistill.study.tables.results_table`.

    ``paper`` is a published table's ``rows`` mapping (``"<dim>/<method>" -> {model: metrics}``,
    teacher row ``"64/Tea."``); the profile's dimensions are matched to the paper's by position
    (teacher_dim -> 64, student_dims -> 32/16/8), shown in the column ``paper dim``. Rows that
    state ``converged`` (:func:`run_row`: ``"no †"`` when the run hit its epoch budget) keep it as a
    column (:func:`merged_mark` over seeds).

    Rows of the same (model, dim, method) - the seeds of a ``tie_seeds`` pair - make one line: each
    metric is the mean over the rows with a record; when some line has several rows the frame
    also has ``seeds`` (rows with a record, ``"1 of 3"`` while some are missing) and ``<m> ±``
    (their standard deviation, NaN below two).
    """
    dim_map = paper_dims(teacher_dim, student_dims)
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["dim"], row["method"]), []).append(row)
    several = any(len(group) > 1 for group in groups.values())
    out = []
    for (model, dim, method), group in groups.items():
        paper_dim = dim_map.get(dim, dim)
        published_row = (paper.get(f"{paper_dim}/{method}") or {}).get(model, {})
        entry = {"model": model, "dim": dim, "paper dim": paper_dim, "method": method}
        if "converged" in group[0]:
            entry["converged"] = merged_mark([str(r["converged"]) for r in group])
        trained = [r for r in group if r.get("converged") != NOT_TRAINED]
        if several:
            entry["seeds"] = len(trained) if len(trained) == len(group) else f"{len(trained)} of {len(group)}"
        for m in metrics:
            values = [r[m] for r in trained if not math.isnan(r[m])]
            mean, sd = mean_sd(values)
            entry[m] = mean if len(group) > 1 else group[0][m]
            if several:
                entry[f"{m} ±"] = sd
            entry[f"{m} paper"] = published_row.get(m, float("nan"))
            entry[f"{m} Δ"] = entry[m] - entry[f"{m} paper"]
        out.append(entry)
    return pd.DataFrame(out).set_index(["model", "dim", "method"])
