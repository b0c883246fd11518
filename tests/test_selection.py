"""Selection summary: validation-selected epoch vs the official test-threshold rule on a synthetic history."""
from __future__ import annotations

import math

import pytest

from kgdistill.study.official.selection import OFFICIAL_TEST_MRR_THRESHOLD, RULES, selection_frame, selection_summary

EPOCHS = [5, 10, 15, 20, 25, 30]
VALID = [0.30, 0.35, 0.36, 0.34, 0.36, 0.33]  # best 0.36 first reached at epoch 15 (tie at 25)
STUDENT_TEST = [0.31, 0.38, 0.37, 0.40, 0.3948, 0.41]  # 0.3948 exactly does not pass (strict >)
TEACHER_TEST = [0.35, 0.396, 0.39, 0.41, 0.40, 0.38]


def _metrics(mrr: float) -> dict:
    return {"MRR": mrr, "MR": 100.0, "H@1": mrr - 0.1, "H@3": mrr + 0.05, "H@10": mrr + 0.2}


def _history(with_test: bool = True) -> list[dict]:
    history = []
    for epoch in range(1, 31):
        entry = {"epoch": epoch, "seconds": 1.0, "loss": {"student": 1.0}}
        if epoch in EPOCHS:
            i = EPOCHS.index(epoch)
            entry["valid"] = {"student": _metrics(VALID[i]), "teacher": _metrics(VALID[i] + 0.01)}
            if with_test:
                entry["test"] = {"student": _metrics(STUDENT_TEST[i]), "teacher": _metrics(TEACHER_TEST[i])}
        history.append(entry)
    return history


def test_threshold_is_the_official_constant():
    assert OFFICIAL_TEST_MRR_THRESHOLD == 0.3948


def test_rules_pick_the_right_epochs():
    rows = selection_summary(_history(), model="student")
    assert list(rows) == list(RULES)
    assert {rule: rows[rule]["epoch"] for rule in RULES} == {
        "validation": 15, "official_first": 20, "official_last": 30, "final": 30, "max_test": 30,
    }
    assert rows["validation"]["MRR"] == 0.37 and rows["validation"]["valid_MRR"] == 0.36
    assert rows["validation"]["H@10"] == pytest.approx(0.57)
    assert rows["validation"]["optimism"] == 0.0
    assert rows["max_test"]["optimism"] == pytest.approx(0.41 - 0.37)
    assert rows["official_first"]["optimism"] == pytest.approx(0.40 - 0.37)


def test_official_rule_on_the_dense_source_reports_the_student_there():
    rows = selection_summary(_history(), model="student", rule_model="teacher")
    assert rows["official_first"]["epoch"] == 10 and rows["official_first"]["MRR"] == 0.38  # teacher 0.396 passes
    # teacher 0.40; 0.38 at 30 does not
    assert rows["official_last"]["epoch"] == 25 and rows["official_last"]["MRR"] == 0.3948
    assert rows["validation"]["epoch"] == 15


def test_no_evaluation_passing_gives_empty_rows():
    rows = selection_summary(_history(), model="student", threshold=0.5)
    for rule in ("official_first", "official_last"):
        assert rows[rule]["epoch"] is None and math.isnan(rows[rule]["MRR"]) and math.isnan(rows[rule]["optimism"])
    assert rows["validation"]["epoch"] == 15


def test_record_input_defaults_to_its_selected_model_and_report_shaped_metrics_work():
    history = _history()
    for entry in history:
        if "test" in entry:
            entry["test"] = {k: {"all": v} for k, v in entry["test"].items()}  # evaluation_report shape
    rows = selection_summary({"history": history, "selected_model": "student"})
    assert rows["official_last"]["epoch"] == 30


def test_frame():
    frame = selection_frame({"history": _history(), "selected_model": "student"}, rule_model="teacher")
    assert list(frame.index) == list(RULES) and frame.index.name == "rule"
    assert frame.loc["official_first", "epoch"] == 10
    assert frame.attrs == {"model": "student", "rule_model": "teacher", "threshold": OFFICIAL_TEST_MRR_THRESHOLD}
    frame = selection_frame(_history(), model="student", threshold=0.5)
    assert frame["epoch"].isna().sum() == 2


def test_missing_inputs_name_what_is_missing():
    with pytest.raises(ValueError, match=r"epoch 5 has validation metrics but no test metrics \(entry\['test'\]"):
        selection_summary(_history(with_test=False), model="student")
    with pytest.raises(ValueError, match=r"model 'model'.*\['student', 'teacher'\]"):
        selection_summary(_history(), model="model")
    history = _history()
    del history[9]["test"]["teacher"]
    with pytest.raises(ValueError, match=r"epoch 10: no test metrics for model 'teacher'"):
        selection_summary(history, model="student", rule_model="teacher")
    history = _history()
    del history[4]["test"]["student"]["H@3"]
    with pytest.raises(ValueError, match=r"lacks \['H@3'\]"):
        selection_summary(history, model="student")
    with pytest.raises(ValueError, match="no evaluation entries"):
        selection_summary([{"epoch": 1, "loss": {}}], model="student")
    with pytest.raises(ValueError, match="model is required"):
        selection_summary(_history())
    with pytest.raises(ValueError, match="no 'history'"):
        selection_summary({"selected_model": "student"})
    with pytest.raises(ValueError, match="threshold"):
        selection_summary(_history(), model="student", threshold=float("nan"))
