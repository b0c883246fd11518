"""How optimistic is test-set checkpoint selection? Our validation rule next to the official one.

A run record's ``history`` is a list of per-epoch entries; an *evaluation entry* carries
``entry["valid"][model]`` and (records that keep per-evaluation test metrics)
``entry["test"][model]``, each a metrics dict with ``MRR``, ``H@1``, ``H@3``, ``H@10``.

Rules compared by :func:`selection_summary`, all for one reported ``model``:

``validation``
    our rule: the first evaluation with the highest validation MRR (what our tables report).
``official_first`` / ``official_last``
    the official ``metasd.py`` rule: at every evaluation the weights are saved to ``checkpoint``
    when the TEST MRR exceeds :data:`OFFICIAL_TEST_MRR_THRESHOLD` (strictly), overwriting the
    previous file, so the checkpoint left on disk is the *last* passing evaluation; the *first*
    passing one is when a threshold-based early stop would have fired. The code thresholds the
    dense source's test MRR (``rule_model="teacher"`` for our MetaSD records); see
    ``docs/official_code_audit.md``, point 3.
``final``
    the last evaluation (the official ``final_checkpoint``, which its README evaluates).
``max_test``
    the evaluation with the highest test MRR of ``model`` (the optimism's upper bound).

Each row holds the epoch, the validation MRR there, the test metrics of ``model`` there, and
``optimism``: its test MRR minus the validation-selected test MRR. Rows of a rule that selects
nothing (no evaluation passes the threshold) have ``epoch`` None and NaN metrics.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

#: ``metasd.py``: ``if test["MRR"] > 0.3948: save(t_model, save_path, "checkpoint")`` - one constant
#: for every dataset (above the MRRs the paper publishes for MetaSD and RP on FB15k-237).
from ...core.metrics import METRICS

OFFICIAL_TEST_MRR_THRESHOLD = 0.3948
RULES = ("validation", "official_first", "official_last", "final", "max_test")

History = Sequence[Mapping[str, Any]]


def evaluation_entries(history: History, model: str, rule_model: str | None = None) -> list[Mapping[str, Any]]:
    """The history entries that carry validation metrics, checked to carry test metrics of
    ``model`` (and ``rule_model``) too; raises ``ValueError`` naming what is missing."""
    entries = [e for e in history if "valid" in e]
    if not entries:
        raise ValueError(
            "the run's history has no evaluation entries (no entry has 'valid'); selection needs the history of a "
            "finished run record (record['history'])"
        )
    for entry in entries:
        epoch = entry.get("epoch", "?")
        for name in dict.fromkeys(n for n in (model, rule_model) if n is not None):
            if name not in entry["valid"]:
                raise ValueError(
                    f"history entry of epoch {epoch}: no validation metrics for model {name!r} in entry['valid'] "
                    f"(models there: {sorted(entry['valid'])}); pass one of them as model/rule_model"
                )
            if "test" not in entry:
                raise ValueError(
                    f"history entry of epoch {epoch} has validation metrics but no test metrics (entry['test'] is "
                    f"missing): this record was trained without per-evaluation test metrics; retrain it with them "
                    f"kept (config field 'test_history', docs/official_code_audit.md) to compare selection rules"
                )
            if name not in entry["test"]:
                raise ValueError(
                    f"history entry of epoch {epoch}: no test metrics for model {name!r} in entry['test'] "
                    f"(models there: {sorted(entry['test'])})"
                )
            missing = [k for k in METRICS if k not in _metrics(entry["test"][name])]
            if missing:
                raise ValueError(f"history entry of epoch {epoch}: entry['test'][{name!r}] lacks {missing}")
    return entries


def selection_summary(
    record_or_history: Mapping[str, Any] | History,
    model: str | None = None,
    threshold: float = OFFICIAL_TEST_MRR_THRESHOLD,
    rule_model: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Rows ``{rule: {"epoch", "valid_MRR", "MRR", "H@1", "H@3", "H@10", "optimism"}}`` for the
    rules of :data:`RULES` (see the module docstring).

    ``record_or_history``: a run record (its ``history`` is used; ``model`` defaults to its
    ``selected_model``) or a history list. ``rule_model``: the model whose test MRR the official
    rule thresholds (default ``model``; the official code thresholds the dense source, our
    ``"teacher"``). Ties pick the earliest evaluation.
    """
    if isinstance(record_or_history, Mapping):
        if "history" not in record_or_history:
            raise ValueError("record has no 'history'; pass a finished run record or its history list")
        history = record_or_history["history"]
        model = model or record_or_history.get("selected_model")
    else:
        history = record_or_history
    if model is None:
        raise ValueError("model is required with a bare history (e.g. 'student' or 'model')")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite MRR value, got {threshold!r}")
    rule_model = rule_model or model
    entries = evaluation_entries(history, model, rule_model)

    def valid_mrr(e):
        return float(_metrics(e["valid"][model])["MRR"])

    def test_mrr(e, name=model):
        return float(_metrics(e["test"][name])["MRR"])

    picks: dict[str, Mapping[str, Any] | None] = {}
    picks["validation"] = max(entries, key=valid_mrr)  # max returns the first of equal keys
    passing = [e for e in entries if test_mrr(e, rule_model) > threshold]
    picks["official_first"] = passing[0] if passing else None
    picks["official_last"] = passing[-1] if passing else None
    picks["final"] = entries[-1]
    picks["max_test"] = max(entries, key=test_mrr)
    reference = test_mrr(picks["validation"])
    rows = {}
    for rule in RULES:
        entry = picks[rule]
        if entry is None:
            rows[rule] = {"epoch": None, "valid_MRR": math.nan, **{k: math.nan for k in METRICS}, "optimism": math.nan}
            continue
        test = _metrics(entry["test"][model])
        rows[rule] = {
            "epoch": entry.get("epoch"),
            "valid_MRR": valid_mrr(entry),
            **{k: float(test[k]) for k in METRICS},
            "optimism": float(test["MRR"]) - reference,
        }
    return rows


def selection_frame(
    record_or_history: Mapping[str, Any] | History,
    model: str | None = None,
    threshold: float = OFFICIAL_TEST_MRR_THRESHOLD,
    rule_model: str | None = None,
):
    """:func:`selection_summary` as a pandas DataFrame indexed by rule; ``frame.attrs`` holds the
    model, rule model and threshold."""
    import pandas as pd

    rows = selection_summary(record_or_history, model, threshold, rule_model)
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "rule"
    frame["epoch"] = frame["epoch"].astype("Int64")
    if isinstance(record_or_history, Mapping):
        model = model or record_or_history.get("selected_model")
    frame.attrs.update({"model": model, "rule_model": rule_model or model, "threshold": threshold})
    return frame


def _metrics(value: Mapping[str, Any]) -> Mapping[str, Any]:
    """A metrics dict, accepting an :func:`kgdistill.core.evaluation.evaluation_report` (``{"all": ...}``)."""
    if "MRR" not in value and "all" in value:
        return value["all"]
    return value
