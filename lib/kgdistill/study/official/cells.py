"""Notebook 07's cells and tables: each run's student metrics per eval mode x rate x selection,
the per-dataset tables beside the published row, the selection table and the reading.

Unconverged numbers are marked as in every table of the study: a ``converged`` column
(:func:`kgdistill.study.tables.convergence_mark`: ``"no †"``, ``"1/2 †"`` when a run behind the row
stopped at its epoch budget), and the reading names the recipes marked † and says their numbers
are unconverged."""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from ...core.metrics import METRICS
from ..tables import DAGGER, budget_hit, convergence_mark
from .section import SELECTIONS
from .selection import selection_summary

#: what a cell holds (its ``status``)
MEASURED, NOT_STORED, NO_EPOCH, NOT_TRAINED = (
    "measured", "not stored at that epoch", "rule selects no epoch", "run not trained yet"
)
SELECTION_LABELS = {"validation": "valid", "official_last": "test: official rule (last)",
                    "official_first": "test: official rule (first)", "final": "final epoch", "max_test": "test: max"}


def _cell(mode: str, rate: float, selection: str, epoch: int | None, metrics: Mapping | None, read: Mapping | None,
          status: str, budget: bool | None = None) -> dict:
    values = {m: float(metrics[m]) if metrics else math.nan for m in METRICS}
    return {"mode": mode, "rate": rate, "selection": selection, "epoch": epoch, **values,
            "read": int(read["total"]) if read else None, "dense": int(read["dense"]) if read else None,
            "status": status, "budget_hit": budget}


def run_cells(record: Mapping[str, Any], block: Mapping[str, Any]) -> list[dict]:
    """The cells of one pruned-student run: for each ``eval_modes`` x ``eval_rates`` x
    (``validation``, ``test``) a dict ``{mode, rate, selection, epoch, MRR, H@1, H@3, H@10, read,
    dense, status, budget_hit}`` (``read``: non-zero parameters the scorer reads, ``dense``: the
    source's P, ``budget_hit``: the run stopped at its epoch budget, :func:`~kgdistill.study.tables.budget_hit`).

    Validation cells come from ``record["student_eval"]`` (the validation-selected epoch). The test
    cell takes the epoch of ``block["test_rule"]`` (:func:`~kgdistill.study.official.selection.selection_summary`
    on the history's test metrics, ``threshold``/``rule_model`` from the block): when that is the
    validation-selected epoch, the same numbers; at another epoch only the pruned student at the
    training rate is stored (the history), anything else is ``NOT_STORED``; a rule that selects
    nothing gives ``NO_EPOCH``. The pruned mode reads exactly the mask's ⌈(1−γ)·P⌉ positions at
    every epoch, so its read count is the validation cell's.
    """
    if "student_eval" not in record:
        raise ValueError(f"record {record.get('run_name')} has no 'student_eval': it was trained before pruned "
                         f"students stored their evaluation modes; retrain it")
    gamma = float(record["config"]["gamma"])
    stored = {(row["mode"], round(float(row["gamma"]), 9)): row for row in record["student_eval"]}
    summary = selection_summary(record, "student", block["threshold"], block["rule_model"])
    valid_epoch, pick = summary["validation"]["epoch"], summary[block["test_rule"]]
    cells = []
    for mode in block["eval_modes"]:
        for rate in map(float, block["eval_rates"]):
            row = stored.get((mode, round(rate, 9)))
            if row is None:
                raise ValueError(f"record {record.get('run_name')} has no student_eval row for mode {mode!r} "
                                 f"at rate {rate}; it has {sorted(stored)} "
                                 f"(config fields 'student_eval_modes', 'student_eval_gammas')")
            cells.append(_cell(mode, rate, "validation", valid_epoch, row["metrics"], row["read"], MEASURED))
            if pick["epoch"] is None:
                cells.append(_cell(mode, rate, "test", None, None, None, NO_EPOCH))
            elif pick["epoch"] == valid_epoch:
                cells.append(_cell(mode, rate, "test", valid_epoch, row["metrics"], row["read"], MEASURED))
            elif mode == "pruned" and math.isclose(rate, gamma):
                cells.append(_cell(mode, rate, "test", pick["epoch"], pick, row["read"], MEASURED))
            else:
                cells.append(_cell(mode, rate, "test", pick["epoch"], None, None, NOT_STORED))
    hit = budget_hit(record)
    return [{**cell, "budget_hit": hit} for cell in cells]


def missing_cells(block: Mapping[str, Any]) -> list[dict]:
    """The cells of a run without a record (all ``NOT_TRAINED``; ``budget_hit`` None)."""
    return [_cell(mode, float(rate), sel, None, None, None, NOT_TRAINED)
            for mode in block["eval_modes"] for rate in block["eval_rates"] for sel in SELECTIONS]


# --- a dataset's table ------------------------------------------------------------------------------
def _convergence(group: Sequence[dict]) -> str:
    """:func:`~kgdistill.study.tables.convergence_mark` of the trained seeds behind a row's cells."""
    trained = [c["budget_hit"] for c in group if c.get("budget_hit") is not None]
    return convergence_mark([{"stop_reason": "budget" if hit else "plateau"} for hit in trained])


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _std(values: Sequence[float]) -> float:
    if len(values) < 2:
        return math.nan
    mean = _mean(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def dataset_table(cells_by_recipe: Mapping[str, Sequence[Sequence[dict]]], block: Mapping[str, Any],
                  published_row: Mapping[str, Any] | None = None):
    """One dataset's table: a row per recipe label x mode x rate x selection, the mean over seeds.

    ``cells_by_recipe``: label -> one :func:`run_cells` list per seed (same order). A cell is
    shown only when every seed has it (else its status, numbers ``NaN``). Columns: ``eval``,
    ``rate``, ``selected on``, ``epoch`` (per seed, ``/``-joined), ``converged`` (of the trained
    seeds, :func:`~kgdistill.study.tables.convergence_mark`: ends in † when one hit its epoch
    budget; ``-`` when none is trained), ``MRR`` (``MRR ±``: std over
    seeds when more than one), ``H@1``, ``H@3``, ``H@10``, ``parameters read`` (mean non-zero
    parameters the scorer reads), ``read / source`` (of the dense source's P), ``runs``, ``cell``.
    ``published_row`` (published.yaml's MetaSD row) adds a last row ``MetaSD (published)`` with
    the columns ``<metric> paper`` and ``size paper``, empty on the measured rows.
    """
    import pandas as pd

    n_seeds = max((len(runs) for runs in cells_by_recipe.values()), default=1)
    rows, index = [], []
    for label, runs in cells_by_recipe.items():
        for position in range(len(runs[0]) if runs else 0):
            group = [cells[position] for cells in runs]
            first = group[0]
            statuses = [c["status"] for c in group if c["status"] != MEASURED]
            missing = NOT_TRAINED if NOT_TRAINED in statuses else next(iter(statuses), None)
            row = {"eval": first["mode"], "rate": f"{first['rate']:g}",
                   "selected on": ("valid" if first["selection"] == "validation"
                                   else SELECTION_LABELS[block["test_rule"]]),
                   "epoch": "/".join("-" if c["epoch"] is None else str(c["epoch"]) for c in group),
                   "converged": _convergence(group)}
            for metric in METRICS:
                values = [c[metric] for c in group]
                row[metric] = math.nan if missing else _mean(values)
                if metric == "MRR" and n_seeds > 1:
                    row["MRR ±"] = math.nan if missing else _std(values)
            row["parameters read"] = math.nan if missing else _mean([c["read"] for c in group])
            row["read / source"] = math.nan if missing else _mean([c["read"] / c["dense"] for c in group])
            row["runs"] = len(group)
            row["cell"] = missing or MEASURED
            rows.append(row)
            index.append(label)
    frame = pd.DataFrame(rows, index=index)
    if published_row:
        paper = {"eval": "as published", "rate": "0.9", "selected on": "-", "epoch": "-", "runs": 0,
                 "cell": "published"}
        paper.update({f"{m} paper": float(published_row[m]) for m in METRICS})
        paper["size paper"] = float(published_row["size"])
        frame = pd.concat([frame, pd.DataFrame([paper], index=["MetaSD (published)"])])
    return frame


def selection_table(records: Mapping[str, Mapping[str, Any]], block: Mapping[str, Any]):
    """Every selection rule of :mod:`kgdistill.study.official.selection` for each run (``records``: row label ->
    record, e.g. ``"official code s0"``): epoch, whether the run converged
    (:func:`~kgdistill.study.tables.convergence_mark`: ``"no †"`` for a budget hit), the student's
    validation and test MRR there, and ``optimism`` = its test MRR minus the validation-selected one."""
    import pandas as pd

    rows, index = [], []
    for label, record in records.items():
        summary = selection_summary(record, "student", block["threshold"], block["rule_model"])
        for rule, values in summary.items():
            rows.append({"rule": SELECTION_LABELS[rule],
                         "epoch": "-" if values["epoch"] is None else str(values["epoch"]),
                         "converged": convergence_mark([record]),
                         "valid MRR": values["valid_MRR"], "MRR": values["MRR"], "H@10": values["H@10"],
                         "optimism": values["optimism"]})
            index.append(label)
    return pd.DataFrame(rows, index=index,
                        columns=["rule", "epoch", "converged", "valid MRR", "MRR", "H@10", "optimism"])


def source_point(records: Sequence[Mapping[str, Any]]) -> dict:
    """The dense source (``teacher``) at the validation-selected epoch, mean over ``records``:
    ``{"MRR", "parameters"}`` (its non-zero parameters), the reference point of the figure."""
    return {"MRR": _mean([r["test"]["teacher"]["all"]["MRR"] for r in records]),
            "parameters": _mean([r["parameter_counts"]["teacher"]["nonzero"] for r in records])}


# --- what the tables say ----------------------------------------------------------------------------
def _value(frame, label: str, mode: str, rate: float, selection: str, column: str = "MRR") -> float:
    """One number of a :func:`dataset_table` (NaN when the row is absent or not available)."""
    if label not in frame.index:
        return math.nan
    rows = frame.loc[[label]]
    chosen = rows[(rows["eval"] == mode) & (rows["rate"] == f"{rate:g}")
                  & ((rows["selected on"] == "valid") == (selection == "validation"))]
    return float(chosen[column].iloc[0]) if len(chosen) else math.nan


def _signed(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:+.4f}"


def reading(title: str, frame, block: Mapping[str, Any], published_row: Mapping[str, Any] | None = None) -> str:
    """A few sentences with the numbers of one dataset's table (4 decimals; deterministic). A recipe
    whose runs include a budget hit (``converged`` ends in †) carries † after its name, and a last
    sentence names those recipes: their numbers are unconverged."""
    labels = list(block["recipes"])
    rates = [float(r) for r in block["eval_rates"]]
    train, other = rates[0], (rates[1] if len(rates) > 1 else None)
    modes = list(block["eval_modes"])
    lines = [f"{title}:"]
    if frame.empty or frame["cell"].isin([NOT_TRAINED, "published"]).all():
        return "\n".join(lines + ["  no run of this dataset is trained yet."])

    marks = _marks(frame, labels)
    shown = {label: f"{label} {DAGGER}" if marks[label] else label for label in labels}

    def per_recipe(fn) -> str:
        return ", ".join(f"{_signed(fn(label))} ({shown[label]})" for label in labels)

    if "official_dense" in modes and "pruned" in modes:
        ratio = [_value(frame, label, "official_dense", train, "validation", "parameters read") /
                 _value(frame, label, "pruned", train, "validation", "parameters read") for label in labels]
        lines.append(f"  official_dense minus pruned MRR at rate {train:g} (valid-selected): "
                     + per_recipe(lambda label: _value(frame, label, "official_dense", train, "validation")
                                  - _value(frame, label, "pruned", train, "validation"))
                     + f"; it reads {' / '.join('n/a' if math.isnan(x) else f'{x:.1f}x' for x in ratio)} "
                     "as many parameters "
                     + f"({' / '.join(_fraction(frame, label, 'official_dense', train) for label in labels)} "
                     "of the source).")
    if other is not None:
        lines.append(f"  rate {other:g} minus rate {train:g}, pruned, valid-selected: MRR "
                     + per_recipe(lambda label: _value(frame, label, "pruned", other, "validation")
                                  - _value(frame, label, "pruned", train, "validation"))
                     + ".")
    if len(labels) > 1:
        a, b = labels[0], labels[1]
        delta = [_value(frame, b, m, r, "validation") - _value(frame, a, m, r, "validation")
                 for m in modes for r in rates]
        lines.append(f"  {shown[b]} minus {shown[a]}, valid-selected MRR, " + ", ".join(
            f"{m} {r:g}: {_signed(d)}" for (m, r), d in zip([(m, r) for m in modes for r in rates], delta)) + ".")
    optimism = per_recipe(lambda label: _value(frame, label, "pruned", train, "test")
                          - _value(frame, label, "pruned", train, "validation"))
    no_epoch = frame[(frame["eval"] == "pruned") & (frame["rate"] == f"{train:g}") & (frame["cell"] == NO_EPOCH)]
    lines.append(f"  {SELECTION_LABELS[block['test_rule']]} minus valid selection, pruned {train:g}: MRR {optimism}"
                 + (f" (n/a for {', '.join(dict.fromkeys(no_epoch.index))}: the rule selects no evaluation)."
                    if len(no_epoch) else "."))
    if published_row:
        read = _fraction(frame, labels[-1], modes[-1], rates[-1])
        lines.append(f"  published MetaSD: MRR {float(published_row['MRR']):.4f} "
                     f"at size {float(published_row['size']):,.0f} (10% of a rank-2000 source); "
                     f"{shown[labels[-1]]} in {modes[-1]} mode at rate {rates[-1]:g} reads {read} of its source here.")
    hit = [f"{label} (converged: {marks[label]})" for label in labels if marks[label]]
    if hit:
        lines.append(f"  {DAGGER} unconverged: the runs of {', '.join(hit)} stopped at their epoch budget before "
                     f"the convergence rule was met; every number marked {DAGGER} describes an unfinished training, "
                     "not a result.")
    return "\n".join(lines)


def _marks(frame, labels: Sequence[str]) -> dict[str, str]:
    """Per recipe label, its ``converged`` mark without the dagger (``"no"``, ``"1/2"``) when a run
    behind it hit its epoch budget, else ``""`` (from the table's ``converged`` column)."""
    out = {}
    for label in labels:
        marks = [str(m) for m in frame.loc[[label], "converged"]] if label in frame.index else []
        marked = next((m for m in marks if DAGGER in m), "")
        out[label] = marked.replace(DAGGER, "").strip()
    return out


def _fraction(frame, label: str, mode: str, rate: float) -> str:
    x = _value(frame, label, mode, rate, "validation", "read / source")
    return "n/a" if math.isnan(x) else f"{x:.1%}"


# --- everything notebook 07 shows ---------------------------------------------------------------------
