"""Unconverged numbers are marked: every record -> table function flags a row whose run hit its
epoch budget (a dagger in its ``converged`` column, or on its label) and the table's text and
saved files end with the footnote that says what the dagger means."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from kgdistill.metasd.config import RunConfig
from kgdistill.study.distile.grid import compare
from kgdistill.study.outputs import save_table
from kgdistill.study.profile import NamedRunSpec
from kgdistill.study.tables import (
    BUDGET_NOTE,
    DAGGER,
    bucket_frame,
    budget_hit,
    budget_note,
    convergence_mark,
    format_table,
    results_table,
    runs_frame,
    size_accuracy_frame,
)


def record(name: str, mrr: float, stop: str | None, model: str = "model") -> dict:
    """A finished run's record; ``stop`` is its stop_reason (None: a record from before the rule)."""
    metrics = {"MRR": mrr, "MR": 2.0, "H@1": mrr / 2, "H@3": mrr, "H@10": mrr}
    out = {
        "run_name": name, "selected_model": model, "selected_epoch": 4, "best_valid_mrr": mrr,
        "config": RunConfig(rank=8).to_dict(), "dims": {model: 8}, "seconds_per_epoch": 1.0,
        "history": [{"epoch": e, "seconds": 1.0, "valid": {model: metrics}} for e in (2, 4)],
        "test": {model: {"all": metrics, "per_relation": {"r": metrics | {"triples": 2}}}},
        "parameter_counts": {model: {"dense": 100, "nonzero": 100}},
    }
    if stop is not None:
        out.update(stop_reason=stop, converged=stop == "plateau", stopped_epoch=4)
    return out


@pytest.fixture
def runs():
    """Row "converged": two seeds, both stopped by the rule; "hit": one seed hit its budget;
    "old": a record written before records stated how they stopped (= budget)."""
    records = {
        "a0": record("a0", 0.5, "plateau"), "a1": record("a1", 0.6, "plateau"),
        "b0": record("b0", 0.4, "plateau"), "b1": record("b1", 0.3, "budget"),
        "c0": record("c0", 0.2, None),
    }
    specs = [NamedRunSpec("converged", "D", 0, "a0"), NamedRunSpec("converged", "D", 1, "a1"),
             NamedRunSpec("hit", "D", 0, "b0"), NamedRunSpec("hit", "D", 1, "b1"), NamedRunSpec("old", "D", 0, "c0")]
    return specs, records


def test_budget_hit_and_the_mark():
    assert not budget_hit({"stop_reason": "plateau"})
    assert budget_hit({"stop_reason": "budget"}) and budget_hit({})  # no field: trained its whole budget
    assert convergence_mark([{"stop_reason": "plateau"}]) == "yes"
    assert convergence_mark([{}]) == f"no {DAGGER}"
    assert convergence_mark([{"stop_reason": "plateau"}, {"stop_reason": "budget"}]) == f"1/2 {DAGGER}"
    assert convergence_mark([{"stop_reason": "plateau"}] * 2) == "2/2" and convergence_mark([]) == "-"


def test_a_results_table_marks_the_rows_that_hit_their_budget(runs):
    specs, records = runs
    frame = results_table(specs, records, quoted={"TransE": "LibKGE"})
    assert frame.loc["converged", "converged"] == "2/2"
    assert frame.loc["hit", "converged"] == f"1/2 {DAGGER}"
    assert frame.loc["old", "converged"] == f"no {DAGGER}"
    assert frame.loc["TransE", "converged"] == "-"  # quoted, not run here
    assert list(frame.columns[:2]) == ["source", "converged"]
    text = format_table(frame)
    assert text.endswith(BUDGET_NOTE) and f"1/2 {DAGGER}" in text
    clean = results_table(specs[:2], records)
    assert budget_note(clean) == "" and not format_table(clean).endswith(BUDGET_NOTE)


def test_runs_and_size_frames_and_bucket_labels_are_marked(runs):
    specs, records = runs
    frame = runs_frame(specs, records)
    assert list(frame["converged"]) == ["yes", "yes", "yes", f"no {DAGGER}", f"no {DAGGER}"]
    assert list(frame["stopped_epoch"]) == [4, 4, 4, 4, 4]
    specs_with_recipe = [type("Spec", (), {"row": s.row, "recipe": s.row, "run_name": s.run_name, "model": None})()
                         for s in specs]
    points = size_accuracy_frame(specs_with_recipe, records)
    assert points.loc["hit", "converged"] == f"1/2 {DAGGER}" and points.loc["converged", "converged"] == "2/2"
    buckets = bucket_frame(specs, records, {"r": 5}, [0, 10])
    assert "converged" in buckets.columns and f"hit {DAGGER}" in buckets.columns and f"old {DAGGER}" in buckets.columns
    assert format_table(buckets).endswith(BUDGET_NOTE)


def test_saved_tables_carry_the_footnote(runs, tmp_path, monkeypatch):
    (tmp_path / "params").mkdir()
    (tmp_path / "pyproject.toml").write_text("")
    monkeypatch.setenv("KGDISTILL_ROOT", str(tmp_path))
    specs, records = runs
    paths = save_table(results_table(specs, records), "marked", "demo", caption="c", note="a note")
    md = paths["md"].read_text()
    assert md.rstrip().endswith(BUDGET_NOTE) and "a note" in md and f"1/2 {DAGGER}" in md
    assert "not converged" in paths["tex"].read_text()
    back = pd.read_csv(paths["csv"], index_col=0)
    assert back.loc["hit", "converged"] == f"1/2 {DAGGER}"
    clean = save_table(results_table(specs[:2], records), "clean", "demo")
    assert "not converged" not in clean["md"].read_text()


def test_distile_tables_mark_budget_hit_runs():
    from kgdistill.study.distile.rows import run_row

    rows = [run_row("TransE", 8, "Tea.", record("t", 0.3, "plateau")),
            run_row("TransE", 4, "DS", record("s", 0.2, "budget"))]
    frame = compare(rows, {}, metrics=("MRR",), student_dims=[4], teacher_dim=8)
    assert list(frame["converged"]) == ["yes", f"no {DAGGER}"]
    assert format_table(frame).endswith(BUDGET_NOTE)
    assert math.isnan(frame["MRR paper"].iloc[0])
