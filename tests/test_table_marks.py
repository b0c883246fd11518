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


# --- every saved table of the study's sections, built by the function its notebook calls ----------------------
def saved_text(paths: dict) -> str:
    return paths["md"].read_text()


@pytest.fixture
def out(tmp_path):
    """Where the tables below are saved (``root`` of save_table / save_tables)."""
    return tmp_path / "saved"


def official_record(name: str, stop: str) -> dict:
    """A pruned-student run of notebook 07 (epochs 1..2, student_eval at the selected epoch 2)."""
    def m(x: float) -> dict:
        return {"MRR": x, "H@1": x / 2, "H@3": x, "H@10": min(1.0, 1.5 * x)}

    history = [{"epoch": e, "valid": {"student": m(0.1 * e), "teacher": m(0.5)},
                "test": {"student": m(0.1 * e), "teacher": m(0.4)}} for e in (1, 2)]
    evals = [{"mode": mode, "gamma": rate, "metrics": m(0.2), "read": {"total": 100, "dense": 1000}}
             for mode in ("pruned", "official_dense") for rate in (0.9, 0.8)]
    return {"run_name": name, "config": {"gamma": 0.9}, "selected_model": "student", "selected_epoch": 2,
            "history": history, "student_eval": evals, "stopped_epoch": 2, "stop_reason": stop,
            "converged": stop == "plateau", "seconds_per_epoch": 1.0,
            "test": {"teacher": {"all": m(0.6)}, "student": {"all": m(0.2)}},
            "parameter_counts": {"teacher": {"nonzero": 1000}, "student": {"nonzero": 100}}}


def official_results(paper_stop: str, official_stop: str):
    """Notebook 07's object (what ``Study.official_code()`` returns) over one dataset, one seed per recipe."""
    from kgdistill.study.official import OfficialResults

    block = {"recipes": {"paper equations": "MetaSD", "official code": "MetaSD (official code)"},
             "eval_modes": ["pruned", "official_dense"], "eval_rates": [0.9, 0.8], "test_rule": "official_last",
             "threshold": 0.3948, "rule_model": "teacher", "small_graphs": {}}

    class Spec:  # what OfficialResults reads of a RunSpec
        def __init__(self, row, name):
            self.row, self.run_name, self.seed, self.paper_dataset = row, name, 0, "Kinship"
            self.config = RunConfig(dataset="Kinship")

    records = {"a": official_record("a", paper_stop), "b": official_record("b", official_stop)}
    specs = [Spec("paper equations", "a"), Spec("official code", "b")]
    return OfficialResults(block, specs, records, {"Kinship": "Kinship"}, {"Kinship": None}, "cpu")


def test_notebook_07_tables_reading_and_figure_mark_the_budget_hit_recipe(out):
    import matplotlib

    from kgdistill.study.outputs import save_tables

    matplotlib.use("Agg")
    official = official_results("budget", "plateau")
    table, rules = official.tables["Kinship"], official.selection["Kinship"]
    assert set(table.loc["paper equations", "converged"]) == {f"no {DAGGER}"}
    assert set(table.loc["official code", "converged"]) == {"yes"}
    assert list(rules["converged"]) == [f"no {DAGGER}"] * 5 + ["yes"] * 5
    for frames, name in ((official.tables, "official_code_{key}"),
                         (official.selection, "official_code_selection_{key}")):
        assert format_table(frames["Kinship"]).endswith(BUDGET_NOTE)
        md = saved_text(save_tables(frames, name, "demo", caption="c", root=out, show=False)["Kinship"])
        assert md.rstrip().endswith(BUDGET_NOTE) and f"no {DAGGER}" in md
    text = official.reading()
    assert "(paper equations †)" in text and "official code †" not in text
    assert text.splitlines()[-1] == (
        "  † unconverged: the runs of paper equations (converged: no) stopped at their epoch budget before the "
        "convergence rule was met; every number marked † describes an unfinished training, not a result.")
    described = official.describe().splitlines()
    assert described[1].endswith("s0: selected epoch 2 of 2, stopped by the epoch budget (not converged †)")
    assert described[2].endswith("s0: selected epoch 2 of 2, converged")
    fig = official.figure()
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "paper equations †" in legend and "official code" in legend
    assert any("† not converged (a run stopped at its epoch budget): paper equations in Kinship" in t.get_text()
               for t in fig.texts)


def test_notebook_07_without_a_budget_hit_shows_no_mark(out):
    import matplotlib

    from kgdistill.study.outputs import save_tables

    matplotlib.use("Agg")
    official = official_results("plateau", "plateau")
    for frame in (official.tables["Kinship"], official.selection["Kinship"]):
        assert budget_note(frame) == "" and DAGGER not in format_table(frame)
    paths = save_tables(official.tables, "official_code_{key}", "demo", root=out, show=False)
    assert "not converged" not in saved_text(paths["Kinship"])
    assert DAGGER not in official.reading() and DAGGER not in official.describe()
    fig = official.figure()
    assert not any(DAGGER in t.get_text() for t in [*fig.texts, *fig.legends[0].get_texts()])


def test_the_footprint_table_marks_a_budget_hit_run(umls, tmp_path, out):
    """Notebook 05's footprint, on a really trained one-epoch MetaSD run (a budget hit): the
    measured frame (:func:`footprint`), its summary and the saved ``footprint`` table."""
    from kgdistill.protocol.runner import run
    from kgdistill.study.footprint import Footprint, footprint
    from kgdistill.study.profile import config_for, load_profile

    config = config_for(load_profile("smoke"), "FB15k-237", "MetaSD").replace(
        dataset="UMLS", rank=4, max_epochs=1, eval_every=1)
    record = run(config, tmp_path / "runs", device="cpu")
    assert budget_hit(record)
    run_dir = next((tmp_path / "runs").glob(f"{record['run_name']}*"))
    frame = footprint(record, run_dir, umls, tmp_path / "export", queries=20, repeats=1)
    assert list(frame["converged"]) == [f"no {DAGGER}"] * 3
    summary = Footprint(study=None, spec=None, record=record, frame=frame).summary()
    assert f"no {DAGGER}" in summary.splitlines()[1] and BUDGET_NOTE in summary
    md = saved_text(save_table(frame, "footprint", "demo", caption="c", root=out))
    assert md.rstrip().endswith(BUDGET_NOTE)
    converged = frame.assign(converged=convergence_mark([{"stop_reason": "plateau"}]))
    assert "not converged" not in saved_text(save_table(converged, "footprint_ok", "demo", root=out))


def test_the_equal_size_tables_comparison_and_figure_mark_budget_hits(out):
    """Notebook 08 (``EqualSize.tables``, ``comparisons``, ``figure``) on a measurements frame where
    one seed of KD hit its budget."""
    import matplotlib

    from kgdistill.study.equal_size import ALTERNATIVES, METASD, SOURCE
    from kgdistill.study.equal_size_study import EqualSize
    from kgdistill.study.outputs import save_tables

    matplotlib.use("Agg")
    lines = []
    for row in (SOURCE, METASD, *ALTERNATIVES):
        for seed in (0, 1):
            mrr = 0.3 + 0.05 * seed + (0.1 if row == "KD" else 0.0)
            lines.append({"dataset": "Nations", "source rank": 12, "row": row, "seed": seed, "MRR": mrr,
                          "valid MRR": mrr, "converged": not (row == "KD" and seed == 1),
                          "size": 1000 if row == SOURCE else 100, "bytes": 4000, "H@1": mrr, "H@10": mrr,
                          "MRR official-dense": math.nan, "parameters read (official-dense)": math.nan})

    class Study:  # what EqualSize reads of a Study once its measurements exist
        def section(self, name):
            return {"datasets": ["Nations"], "source_ranks": [12], "seeds": [0, 1], "quantize": []}

    E = EqualSize(Study(), [], {}, _measured=pd.DataFrame(lines))
    tables = E.tables()
    table = tables[("Nations", 12)]
    assert table.loc["KD", "converged"] == f"1/2 {DAGGER}" and table.loc[METASD, "converged"] == "2/2"
    md = saved_text(save_tables(tables, "equal_size_{key[0]}_r{key[1]}", "demo", root=out, show=False)[("Nations", 12)])
    assert md.rstrip().endswith(BUDGET_NOTE)
    comparison = E.comparisons()  # MetaSD against KD (best on validation), one of whose runs hit its budget
    assert comparison.loc[("Nations", 12), "best alternative (valid)"] == "KD"
    assert comparison.loc[("Nations", 12), "converged"] == f"3/4 {DAGGER}"
    md = saved_text(save_tables(comparison, "equal_size_comparison", "demo", root=out, show=False)[
        "equal_size_comparison"])
    assert md.rstrip().endswith(BUDGET_NOTE)
    fig = E.figure()
    legend = [t.get_text() for t in fig.axes[-1].get_legend().get_texts()]
    assert "KD †" in legend and METASD in legend
    assert any("not converged" in t.get_text() for t in fig.texts)


def test_the_distile_link_table_is_saved_with_the_footnote(out):
    """Notebook 06's link-prediction tables (``DistilEStudy.link_prediction_table`` = :func:`compare`)."""
    from kgdistill.study.distile.rows import run_row

    rows = [run_row("TransE", 8, "Tea.", record("t", 0.3, "plateau")),
            run_row("TransE", 4, "DS", record("s", 0.2, "budget"))]
    frame = compare(rows, {}, metrics=("MRR",), student_dims=[4], teacher_dim=8)
    md = saved_text(save_table(frame, "distile_table3", "demo", root=out))
    assert md.rstrip().endswith(BUDGET_NOTE) and f"no {DAGGER}" in md


def test_validation_curves_of_budget_hit_runs_are_labelled(runs):
    """Notebook 03's figure (``figures.valid_curves`` of ``study.valid_curves``): the printed frame is
    unchanged, the lines of rows with a budget hit are labelled † and a note says why."""
    import matplotlib

    from kgdistill.study import figures
    from kgdistill.study.tables import valid_curves

    matplotlib.use("Agg")
    specs, records = runs
    curves = valid_curves(specs, records)
    assert list(curves.columns) == ["converged/s0", "converged/s1", "hit/s0", "hit/s1", "old/s0"]
    fig = figures.valid_curves(curves, "t")
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["converged", f"hit {DAGGER}",
                                                                          f"old {DAGGER}"]
    assert any("stopped at its epoch budget" in t.get_text() for t in fig.texts)
    clean = figures.valid_curves(valid_curves(specs[:2], records), "t")
    assert not any(DAGGER in t.get_text() for t in [*clean.texts, *clean.axes[0].get_legend().get_texts()])
