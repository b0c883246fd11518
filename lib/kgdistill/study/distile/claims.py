"""The DistilE paper's main claim, pair by pair: a distilled (DS) student beats the same-size
student trained alone (no-DS).

:func:`ds_gains` turns a link-prediction table (:func:`kgdistill.study.distile.rows.compare`) into one
difference per (model, student dim) - with several seeds (the ``tie_seeds`` key) the mean of the
differences paired by seed, their standard deviation and 95% t-interval -, and :func:`ds_verdict`
says in one sentence what those differences show, whatever they show, so that a notebook's
reading follows its data. The rule (:func:`reading`): a pair is a *gain* or a *loss* only when its
interval excludes 0, a *tie* when it contains 0; a pair with one seed is a *single* observation,
counted as neither.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd

from ..intervals import mean_sd, t_interval
from ..tables import DAGGER
from .seeds import pair_names

#: column of :func:`ds_gains`: the mean DS − no-DS difference (paired by seed)
GAIN = "DS − no-DS"
#: the readings of a pair (:func:`reading`)
GAIN_READ, LOSS_READ, TIE_READ, SINGLE_READ, UNMEASURED_READ = "gain", "loss", "tie", "single", "-"


def selected_stage(record: dict | None) -> int | None:
    """The training stage (0: plain run, 1: teacher frozen, 2: teacher co-trained) of a record's
    selected epoch; None without a record."""
    if record is None:
        return None
    return next(h["stage"] for h in record["history"] if h["epoch"] == record["selected_epoch"])


def reading(seeds: int, low: float, high: float) -> str:
    """A pair's reading from its paired differences: ``"gain"`` (the 95% interval lies above 0),
    ``"loss"`` (below 0), ``"tie"`` (it contains 0), ``"single"`` (one seed: no interval, neither a
    gain nor a loss), ``"-"`` (no seed with both runs)."""
    if seeds == 0:
        return UNMEASURED_READ
    if seeds == 1 or math.isnan(low):
        return SINGLE_READ
    return GAIN_READ if low > 0 else LOSS_READ if high < 0 else TIE_READ


def ds_gains(table: pd.DataFrame, metric: str = "MRR", ds_records: Mapping[tuple[str, int], object] | None = None,
             differences: Mapping[tuple[str, int], Mapping[int, float]] | None = None) -> pd.DataFrame:
    """DS minus no-DS per (model, student dim) of a link-prediction table (:func:`compare`).

    ``differences`` (``{(model, dim): {seed: DS − no-DS}}``, NaN for a seed whose DS or no-DS run
    has no record) pairs the two students by seed; without it each pair is the table's one
    difference. Columns: ``DS − no-DS`` (the mean over the seeds with both runs; NaN while there is
    none), ``seeds`` (how many), ``reading`` (:func:`reading`), ``paper`` (the published difference)
    and ``converged`` (both lines' marks, ``"yes"`` when every run stopped by the convergence
    rule). When some pair has several seeds also ``planned`` (seeds listed), ``sd`` (of the paired
    differences) and ``95% low`` / ``95% high`` (the t-interval of their mean,
    :func:`kgdistill.study.intervals.t_interval`).

    With ``ds_records`` (``{(model, dim): the DS students' records}``: one record, a list over seeds,
    or None) also what stage 2 did: ``DS best in`` (the stage of each student's selected epoch,
    :func:`selected_stage`: ``"S1"`` teacher frozen, ``"S2"`` co-trained, joined by ``/`` over
    seeds; ``"-"`` no record), ``Tea.`` (the teacher's own test metric, from the table's ``Tea.``
    row) and ``Tea. after`` (the co-trained teacher's at the student's selected epoch, mean over
    seeds; equal to ``Tea.`` when that epoch is in stage 1)."""
    frame = table.reset_index()
    teachers = frame[frame["method"] == "Tea."].set_index("model")[metric]
    lines = []
    for (model, dim), group in frame[frame["method"].isin(["DS", "no-DS"])].groupby(["model", "dim"], sort=False):
        by = group.set_index("method")
        if not {"DS", "no-DS"} <= set(by.index):
            continue
        if differences is not None and (model, dim) in differences:
            by_seed = dict(differences[(model, dim)])
        else:
            by_seed = {0: by.loc["DS", metric] - by.loc["no-DS", metric]}
        paired = [d for d in by_seed.values() if not math.isnan(d)]
        mean, low, high = t_interval(paired)
        marks = {str(by.loc[m, "converged"]) for m in ("DS", "no-DS")} if "converged" in by else {"-"}
        line = {"model": model, "dim": dim, GAIN: mean, "seeds": len(paired), "planned": len(by_seed),
                "sd": mean_sd(paired)[1], "95% low": low, "95% high": high,
                "reading": reading(len(paired), low, high),
                "paper": by.loc["DS", f"{metric} paper"] - by.loc["no-DS", f"{metric} paper"],
                "converged": "yes" if marks == {"yes"} else " / ".join(sorted(marks))}
        if ds_records is not None:
            records = _as_list(ds_records.get((model, dim)))
            stages = [selected_stage(r) for r in records]
            line["DS best in"] = "/".join(f"S{stage}" for stage in stages) if stages else "-"
            line["Tea."] = teachers.get(model, float("nan"))
            line["Tea. after"] = (mean_sd([r["test"]["teacher"]["all"][metric] for r in records])[0]
                                  if records else float("nan"))
        lines.append(line)
    gains = pd.DataFrame(lines).set_index(["model", "dim"])
    if not (gains["planned"] > 1).any():
        gains = gains.drop(columns=["planned", "sd", "95% low", "95% high"])
    return gains


def _as_list(records) -> list[dict]:
    if records is None:
        return []
    return [records] if isinstance(records, Mapping) else [r for r in records if r is not None]


def ds_verdict(gains: pd.DataFrame) -> str:
    """One sentence on a :func:`ds_gains` frame, counted from its numbers.

    Pairs with several seeds are counted by their 95% interval (:func:`reading`): DS above no-DS
    beyond it (gain), below it (loss), or a tie; pairs with one seed are single observations,
    named by sign but counted as neither. Then the paper's count over the same pairs, how many
    pairs did not converge, seeds still untrained, the pairs whose DS student was best in stage 1
    and those whose teacher stage 2 pulled below half its score. Pairs with an untrained run are
    counted as such, not as either side."""
    seeds = gains["seeds"] if "seeds" in gains else pd.Series(
        [0 if math.isnan(x) else 1 for x in gains[GAIN]], index=gains.index)
    readings = gains["reading"] if "reading" in gains else pd.Series(
        [reading(n, math.nan, math.nan) for n in seeds], index=gains.index)
    unconverged = [DAGGER in str(c) for c in gains["converged"]]
    measured = gains[seeds > 0]
    if measured.empty:
        sentence = f"No pair has both runs trained yet ({_pairs(len(gains))} planned)."
        if any(unconverged):
            sentence += (f" The runs trained so far in {sum(unconverged)} of them are unconverged ({DAGGER}: "
                         "stopped at their epoch budget).")
        return sentence
    parts = []
    several = measured[seeds[measured.index] > 1]
    if len(several):
        counts = sorted(set(seeds[several.index]))
        n_text = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
        by = {r: [i for i in several.index if readings[i] == r] for r in (GAIN_READ, LOSS_READ, TIE_READ)}
        parts.append(f"DS is above no-DS beyond its 95% interval (paired by seed) in {len(by[GAIN_READ])} of "
                     f"{_pairs(len(several))} with {n_text} seeds{_named(by[GAIN_READ])}, "
                     f"below it in {len(by[LOSS_READ])}{_named(by[LOSS_READ])}, "
                     f"a tie (the interval contains 0) in {len(by[TIE_READ])}{_named(by[TIE_READ])}")
    single = measured[seeds[measured.index] == 1]
    if len(single):
        above = [i for i in single.index if single.loc[i, GAIN] > 0]
        below = [i for i in single.index if single.loc[i, GAIN] < 0]
        text = (f"{len(single)} single observation{'s' if len(single) != 1 else ''} (one seed, no interval: not "
                f"counted as gains or losses): DS − no-DS > 0 in {len(above)}{_named(above)}, "
                f"< 0 in {len(below)}{_named(below)}")
        if len(single) - len(above) - len(below):
            text += f", = 0 in {len(single) - len(above) - len(below)}"
        parts.append(text)
    paper_above = int((measured["paper"] > 0).sum())
    sentence = "; ".join(parts) + f". The paper: above in {paper_above} of these {len(measured)}."
    hit = int(sum(u for u, s in zip(unconverged, seeds) if s > 0))
    sentence += (" Every measured pair converged." if not hit
                 else f" {hit} of them {'is' if hit == 1 else 'are'} unconverged ({DAGGER}: a run stopped at its epoch "
                      "budget): not results.")
    if "planned" in gains:
        short = [i for i in measured.index if gains.loc[i, "planned"] > seeds[i]]
        if short:
            sentence += " Seeds not trained yet: " + ", ".join(
                f"{m} {d} ({seeds[(m, d)]} of {gains.loc[(m, d), 'planned']} trained)" for m, d in short) + "."
    sentence += _stage_notes(measured)
    if len(measured) < len(gains):
        left = len(gains) - len(measured)
        sentence += f" {_pairs(left)} {'is' if left == 1 else 'are'} not trained yet."
    return sentence


def _stage_notes(measured: pd.DataFrame) -> str:
    """What stage 2 did in the measured pairs: students best in stage 1, teachers pulled below half."""
    text = ""
    if "DS best in" in measured:
        stages = {pair: str(measured.loc[pair, "DS best in"]).split("/") for pair in measured.index}
        early = {pair: s for pair, s in stages.items() if "S1" in s}
        if early:
            names = ", ".join(f"{m} {d}" + (f" ({s.count('S1')} of {len(s)} seeds)" if len(s) > 1 else "")
                              for (m, d), s in early.items())
            text += (f" In {len(early)} ({names}) the DS student's best validation epoch lies in stage 1: "
                     "co-training the teacher (stage 2) never improved on it.")
    if "Tea. after" in measured:
        halved = measured[measured["Tea. after"] < 0.5 * measured["Tea."]]
        if len(halved):
            text += f" Stage 2 pulled the teacher below half its own score in {len(halved)}{_named(halved.index)}."
    return text


def _named(pairs: Sequence) -> str:
    return f" ({pair_names(pairs)})" if len(pairs) else ""


def _pairs(n: int) -> str:
    return f"{n} pair" + ("" if n == 1 else "s")
