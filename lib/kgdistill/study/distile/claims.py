"""The DistilE paper's main claim, pair by pair: a distilled (DS) student beats the same-size
student trained alone (no-DS).

:func:`ds_gains` turns a link-prediction table (:func:`kgdistill.study.distile.grid.compare`) into one
difference per (model, student dim); :func:`ds_verdict` says in one sentence what those
differences show, whatever they show, so that a notebook's reading follows its data.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd


def selected_stage(record: dict | None) -> int | None:
    """The training stage (0: plain run, 1: teacher frozen, 2: teacher co-trained) of a record's
    selected epoch; None without a record."""
    if record is None:
        return None
    return next(h["stage"] for h in record["history"] if h["epoch"] == record["selected_epoch"])


def ds_gains(table: pd.DataFrame, metric: str = "MRR", ds_records: Mapping[tuple[str, int], dict | None] | None = None
             ) -> pd.DataFrame:
    """DS minus no-DS per (model, student dim) of a link-prediction table (:func:`compare`):
    columns ``DS − no-DS`` (measured; NaN while either run is untrained), ``paper`` (the
    published difference) and ``converged`` (both runs' marks, ``"yes"`` when both stopped by
    the convergence rule).

    With ``ds_records`` (``{(model, dim): the DS student's record or None}``) also what stage 2
    did: ``DS best in`` (the stage of the student's selected epoch, :func:`selected_stage`:
    ``"S1"`` teacher frozen, ``"S2"`` co-trained, ``"-"`` no record), ``Tea.`` (the teacher's own
    test metric, from the table's ``Tea.`` row) and ``Tea. after`` (the co-trained teacher's, at
    the student's selected epoch; equal to ``Tea.`` when that epoch is in stage 1)."""
    frame = table.reset_index()
    teachers = frame[frame["method"] == "Tea."].set_index("model")[metric]
    lines = []
    for (model, dim), group in frame[frame["method"].isin(["DS", "no-DS"])].groupby(["model", "dim"], sort=False):
        by = group.set_index("method")
        if not {"DS", "no-DS"} <= set(by.index):
            continue
        marks = {str(by.loc[m, "converged"]) for m in ("DS", "no-DS")} if "converged" in by else {"-"}
        line = {"model": model, "dim": dim, "DS − no-DS": by.loc["DS", metric] - by.loc["no-DS", metric],
                "paper": by.loc["DS", f"{metric} paper"] - by.loc["no-DS", f"{metric} paper"],
                "converged": "yes" if marks == {"yes"} else " / ".join(sorted(marks))}
        if ds_records is not None:
            record = ds_records.get((model, dim))
            stage = selected_stage(record)
            line["DS best in"] = f"S{stage}" if stage else "-"
            line["Tea."] = teachers.get(model, float("nan"))
            line["Tea. after"] = record["test"]["teacher"]["all"][metric] if record else float("nan")
        lines.append(line)
    return pd.DataFrame(lines).set_index(["model", "dim"])


def ds_verdict(gains: pd.DataFrame) -> str:
    """One sentence on a :func:`ds_gains` frame: in how many measured pairs DS is above / below
    no-DS (naming the pairs above), how many of those pairs converged, and the paper's count over
    the same pairs. Pairs with an untrained run are counted as such, not as either side."""
    measured = gains[[not math.isnan(x) for x in gains["DS − no-DS"]]]
    if measured.empty:
        return f"No pair has both runs trained yet ({_pairs(len(gains))} planned)."
    above = measured[measured["DS − no-DS"] > 0]
    below = measured[measured["DS − no-DS"] < 0]
    named = ", ".join(f"{model} {dim}" for model, dim in above.index)
    paper_above = int((measured["paper"] > 0).sum())
    converged = int((measured["converged"] == "yes").sum())
    parts = [f"DS is above no-DS in {len(above)} of {_pairs(len(measured))} measured"
             + (f" ({named})" if named else ""),
             f"below in {len(below)}"]
    if len(measured) - len(above) - len(below):
        parts.append(f"equal in {len(measured) - len(above) - len(below)}")
    sentence = ", ".join(parts) + f"; the paper: above in {paper_above} of these {len(measured)}."
    sentence += (" Every measured pair converged." if converged == len(measured)
                 else f" {len(measured) - converged} of them hit an epoch budget: not results.")
    in_stage1 = measured[measured["DS best in"] == "S1"] if "DS best in" in measured else measured.iloc[:0]
    if len(in_stage1):
        names = ", ".join(f"{model} {dim}" for model, dim in in_stage1.index)
        sentence += (f" In {len(in_stage1)} ({names}) the DS student's best validation epoch lies in stage 1: "
                     "co-training the teacher (stage 2) never improved on it.")
    if "Tea. after" in measured:
        halved = measured[measured["Tea. after"] < 0.5 * measured["Tea."]]
        if len(halved):
            names = ", ".join(f"{model} {dim}" for model, dim in halved.index)
            sentence += f" Stage 2 pulled the teacher below half its own score in {len(halved)} ({names})."
    if len(measured) < len(gains):
        left = len(gains) - len(measured)
        sentence += f" {_pairs(left)} {'is' if left == 1 else 'are'} not trained yet."
    return sentence


def _pairs(n: int) -> str:
    return f"{n} pair" + ("" if n == 1 else "s")
