"""Notebook 07 (kgdistill.study.official): the profiles' `official` recipe resolves to the switches of
docs/official_code_audit.md and trains; the table builder picks the right epochs and cells on a
synthetic record; a bad eval option fails at profile load naming the field; the plan lists the runs."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from kgdistill import RunConfig, run
from kgdistill.study.official import (
    MEASURED,
    NO_EPOCH,
    NOT_STORED,
    NOT_TRAINED,
    OfficialResults,
    dataset_table,
    missing_cells,
    official_specs,
    reading,
    run_cells,
    section,
    selection_table,
)
from kgdistill.study.plan import OFFICIAL_ROW, matching, planned_runs
from kgdistill.study.profile import config_for, load_profile

ROOT = Path(__file__).resolve().parent.parent
OFFICIAL, PAPER_EQ = "MetaSD (official code)", "MetaSD (paper equations)"
#: docs/official_code_audit.md, "Switches to add": the official code's values
SWITCHES = dict(temperature=3.0, kl_mode="official", kl_temperature_squared=False, loss_weighting="unit",
                teacher_warm_step=True, quiz_selection="head", quiz_per_meta_step="all", soft_mask_epsilon=1e-8,
                rp_weight=4.0, test_history=True, student_eval_gammas=(0.8,),
                student_eval_modes=("pruned", "official_dense"),
                method="metasd", meta_order="sequential", virtual_lr=0.1, meta_lr=1e-4, regularizer="DURA_W")


# --- the recipes --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["smoke", "cpu", "paper"])
@pytest.mark.parametrize("dataset", ["FB15k-237", "WN18RR"])
def test_the_official_recipe_is_the_official_switches(name, dataset):
    profile = load_profile(name)
    config = config_for(profile, dataset, OFFICIAL)
    assert {k: getattr(config, k) for k in SWITCHES} == SWITCHES
    assert config.entity_weights == (dataset == "WN18RR")  # WN18RR: --use_weight True (point 5)
    paper_eq = config_for(profile, dataset, PAPER_EQ)
    # the two recipes differ only by the switches (the paper equations keep every default)
    differing = {f for f in RunConfig.field_names() if getattr(config, f) != getattr(paper_eq, f)}
    assert differing <= set(SWITCHES) and "test_history" not in differing and "student_eval_gammas" not in differing
    if name != "smoke":  # = Table 1's MetaSD run plus the per-evaluation test metrics and the 0.8 evaluation
        metasd = config_for(profile, dataset, "MetaSD")
        assert paper_eq.replace(test_history=False, student_eval_gammas=()) == metasd


def test_the_official_recipe_trains_on_a_tiny_graph(tmp_path):
    """The cpu profile's WN18RR recipe (RP 4 with entity weights on the tail CE, Step 0, whole quiz,
    soft mask) shrunk onto Nations: it trains and stores every eval mode and rate and the test history."""
    config = config_for(load_profile("cpu"), "WN18RR", OFFICIAL).replace(
        dataset="Nations", rank=4, batch_size=256, max_epochs=2, eval_every=1)
    record = run(config, tmp_path, device="cpu")
    rows = {(r["mode"], r["gamma"]) for r in record["student_eval"]}
    assert rows == {(m, g) for m in ("pruned", "official_dense") for g in (0.9, 0.8)}
    assert all("test" in h for h in record["history"] if "valid" in h)
    assert record["quiz_size"] == int(0.02 * 2 * 1592)  # the head of the reciprocal train array
    block = section(load_profile("cpu"))
    cells = run_cells(record, block)
    assert len(cells) == 2 * 2 * 2 and {c["status"] for c in cells} <= {MEASURED, NOT_STORED}


# --- the table builder on a synthetic record ---------------------------------------------------------------
def metrics(mrr: float) -> dict:
    return {"MRR": mrr, "H@1": mrr / 2, "H@3": mrr, "H@10": min(1.0, 1.5 * mrr)}


def fake_record(valid: list[float], test: list[float], source_test: list[float], name: str = "fake") -> dict:
    """Evaluations at epochs 1..n: the student's validation and test MRR and the dense source's test MRR;
    student_eval at the validation-selected epoch (pruned 0.9 = that epoch's test MRR)."""
    history = [{"epoch": e + 1, "valid": {"student": metrics(v), "teacher": metrics(0.5)},
                "test": {"student": metrics(t), "teacher": metrics(s)}}
               for e, (v, t, s) in enumerate(zip(valid, test, source_test))]
    best = max(range(len(valid)), key=lambda i: valid[i])
    p = 1000
    evals = [{"mode": "pruned", "gamma": 0.9, "metrics": metrics(test[best]), "read": {"total": 100, "dense": p}},
             {"mode": "official_dense", "gamma": 0.9, "metrics": metrics(test[best] + 0.1),
              "read": {"total": 900, "dense": p}},
             {"mode": "pruned", "gamma": 0.8, "metrics": metrics(test[best] + 0.05),
              "read": {"total": 200, "dense": p}},
             {"mode": "official_dense", "gamma": 0.8, "metrics": metrics(test[best] + 0.15),
              "read": {"total": 920, "dense": p}}]
    return {"run_name": name, "config": {"gamma": 0.9}, "selected_model": "student", "selected_epoch": best + 1,
            "history": history, "student_eval": evals, "stopped_epoch": len(valid), "converged": False,
            "test": {"teacher": {"all": metrics(0.6)}, "student": {"all": metrics(test[best])}},
            "parameter_counts": {"teacher": {"nonzero": p}, "student": {"nonzero": 100}}, "seconds_per_epoch": 1.0}


BLOCK = {"recipes": {"paper equations": PAPER_EQ, "official code": OFFICIAL},
         "eval_modes": ["pruned", "official_dense"], "eval_rates": [0.9, 0.8], "test_rule": "official_last",
         "threshold": 0.3948, "rule_model": "teacher", "small_graphs": {}}


def cells_by_key(cells: list[dict]) -> dict:
    return {(c["mode"], c["rate"], c["selection"]): c for c in cells}


def test_run_cells_take_the_official_rules_epoch_and_mark_what_is_not_stored():
    # valid picks epoch 2; the source passes 0.3948 at epochs 1 and 3 -> the official rule keeps epoch 3
    record = fake_record(valid=[0.20, 0.30, 0.25], test=[0.21, 0.28, 0.33], source_test=[0.40, 0.39, 0.41])
    cells = cells_by_key(run_cells(record, BLOCK))
    assert cells[("pruned", 0.9, "validation")]["epoch"] == 2 and cells[("pruned", 0.9, "validation")]["MRR"] == 0.28
    assert cells[("official_dense", 0.8, "validation")]["MRR"] == pytest.approx(0.43)
    assert cells[("official_dense", 0.8, "validation")]["read"] == 920
    test = cells[("pruned", 0.9, "test")]  # from the history at epoch 3, the mask's read count
    assert (test["epoch"], test["MRR"], test["read"], test["status"]) == (3, 0.33, 100, MEASURED)
    for key in [("pruned", 0.8, "test"), ("official_dense", 0.9, "test"), ("official_dense", 0.8, "test")]:
        assert cells[key]["status"] == NOT_STORED and cells[key]["epoch"] == 3 and math.isnan(cells[key]["MRR"])
    first = cells_by_key(run_cells(record, {**BLOCK, "test_rule": "official_first"}))
    assert first[("pruned", 0.9, "test")]["epoch"] == 1 and first[("pruned", 0.9, "test")]["MRR"] == 0.21
    higher = cells_by_key(run_cells(record, {**BLOCK, "threshold": 0.405, "test_rule": "official_first"}))
    assert higher[("pruned", 0.9, "test")]["epoch"] == 3  # only the source's 0.41 passes 0.405
    # a rule that picks the validation-selected epoch: every cell exists, equal to the validation cells
    mid = fake_record(valid=[0.20, 0.30, 0.25], test=[0.21, 0.35, 0.33], source_test=[0.1, 0.1, 0.1])
    both = cells_by_key(run_cells(mid, {**BLOCK, "test_rule": "max_test"}))
    for mode in ("pruned", "official_dense"):
        for rate in (0.9, 0.8):
            assert both[(mode, rate, "test")]["MRR"] == both[(mode, rate, "validation")]["MRR"]
            assert both[(mode, rate, "test")]["status"] == MEASURED
    # no evaluation passes the threshold: the official rule selects nothing
    none = cells_by_key(run_cells(mid, BLOCK))
    assert all(none[(m, r, "test")]["status"] == NO_EPOCH for m in ("pruned", "official_dense") for r in (0.9, 0.8))


def test_dataset_table_means_seeds_and_puts_the_published_row_in_paper_columns():
    a = fake_record([0.2, 0.3], [0.21, 0.30], [0.5, 0.5], "a")
    b = fake_record([0.2, 0.3], [0.21, 0.34], [0.5, 0.5], "b")
    c = fake_record([0.3, 0.2], [0.25, 0.20], [0.5, 0.5], "c")  # selects epoch 1: official_last (epoch 2) not stored
    cells = {"paper equations": [run_cells(a, BLOCK), run_cells(b, BLOCK)],
             "official code": [run_cells(a, BLOCK), run_cells(c, BLOCK)]}
    paper = {"MRR": 0.391, "H@1": 0.3, "H@3": 0.428, "H@10": 0.571, "size": 6_000_000}
    frame = dataset_table(cells, BLOCK, paper)
    assert list(frame.index[:8]) == ["paper equations"] * 8 and frame.index[-1] == "MetaSD (published)"
    first = frame.iloc[0]
    assert (first["eval"], first["rate"], first["selected on"], first["epoch"]) == ("pruned", "0.9", "valid", "2/2")
    assert first["MRR"] == pytest.approx(0.32) and first["MRR ±"] == pytest.approx(math.sqrt(0.0008))
    assert first["parameters read"] == 100 and first["read / source"] == pytest.approx(0.1) and first["runs"] == 2
    official = frame.loc["official code"]
    dense_test = official[(official["eval"] == "official_dense") & (official["selected on"] != "valid")].iloc[0]
    assert dense_test["cell"] == NOT_STORED and math.isnan(dense_test["MRR"]) and dense_test["epoch"] == "2/2"
    published = frame.loc["MetaSD (published)"]
    assert published["MRR paper"] == 0.391 and published["size paper"] == 6_000_000 and math.isnan(published["MRR"])
    assert frame.drop(index="MetaSD (published)")["MRR paper"].isna().all()  # published numbers only in its row
    missing = dataset_table({"paper equations": [missing_cells(BLOCK)]}, BLOCK)
    assert (missing["cell"] == NOT_TRAINED).all() and missing["MRR"].isna().all()
    mixed = dataset_table({"official code": [run_cells(c, BLOCK), missing_cells(BLOCK)]}, BLOCK)
    assert (mixed["cell"] == NOT_TRAINED).all() and list(mixed["epoch"][:2]) == ["1/-", "2/-"]  # a seed missing wins
    assert "no run of this dataset is trained yet" in reading(
        "X", dataset_table({"official code": [missing_cells(BLOCK)]}, BLOCK, paper), BLOCK)


def test_selection_table_reading_and_figure():
    import matplotlib

    matplotlib.use("Agg")
    record = fake_record([0.20, 0.30, 0.25], [0.21, 0.28, 0.33], [0.40, 0.39, 0.41])
    rules = selection_table({"official code s0": record}, BLOCK)
    assert list(rules["rule"]) == ["valid", "test: official rule (first)", "test: official rule (last)", "final epoch",
                                   "test: max"]
    assert list(rules["epoch"]) == ["2", "1", "3", "3", "3"] and rules["optimism"].iloc[2] == pytest.approx(0.05)

    class Spec:  # what OfficialResults reads of a RunSpec
        def __init__(self, row, name):
            self.row, self.run_name, self.seed, self.paper_dataset, self.recipe = (
                row, name, 0, "FB15k-237", BLOCK["recipes"][row])
            self.config = RunConfig(dataset="FB15k-237")

    specs = [Spec("paper equations", "a"), Spec("official code", "b")]
    results = OfficialResults(BLOCK, specs, {"a": record}, {"FB15k-237": "FB15k-237"}, {"FB15k-237": None}, "cpu")
    assert (results.missing == ["b"]
            and 'scripts/train_runs.py --profile cpu --match "notebook 07"' in results.describe())
    text = reading("FB15k-237", results.tables["FB15k-237"], BLOCK)
    assert "the rule selects no evaluation" not in text
    never = reading("X", dataset_table({"paper equations": [run_cells(record, {**BLOCK, "threshold": 0.9})]}, BLOCK),
                    BLOCK)
    # fake_record states no stop_reason: a budget hit, so its recipe is marked † (tests/test_table_marks.py)
    assert ("MRR n/a (paper equations †), n/a (official code) "
            "(n/a for paper equations: the rule selects no evaluation).") in never
    assert ("official_dense minus pruned MRR at rate 0.9 (valid-selected): +0.1000 (paper equations †), "
            "n/a (official code)") in text
    assert "test: official rule (last) minus valid selection, pruned 0.9: MRR +0.0500 (paper equations †)" in text
    fig = results.figure()
    assert len(fig.axes) == 1 and fig.axes[0].get_xscale() == "log"


# --- the profile section ----------------------------------------------------------------------------------
def profile_with(tmp_path: Path, **changes) -> Path:
    raw = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())
    block = raw["official_code"]
    for key, value in changes.items():
        if key.startswith("recipe:"):
            raw["recipes"][key.split(":", 1)[1]].update(value)
        else:
            block[key] = value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.parametrize("changes, match", [
    (dict(eval_modes=["pruned", "dense"]), r"official_code\.eval_modes: unknown student evaluation mode 'dense'"),
    (dict(eval_rates=[0.9, 0.7]), r"official_code\.eval_rates: rate 0\.7 does not apply .*'student_eval_gammas'"),
    (dict(eval_rates=[1.2]), r"official_code\.eval_rates: pruning rate 1\.2 is outside \(0, 1\)"),
    (dict(test_rule="validation"), r"official_code\.test_rule: 'validation' is not a test-set rule"),
    (dict(rule_model="source"), r"official_code\.rule_model"),
    (dict(threshold="high"), r"official_code\.threshold"),
    (dict(recipes={"dml": "DML"}), r"official_code\.recipes: recipe 'DML' .* pruned student"),
    (dict(tets_rule="max_test"), r"in official_code: unknown key.*'tets_rule' -> 'test_rule'"),
    ({"recipe:MetaSD (paper equations)": {"test_history": False}}, r"needs config field 'test_history'"),
    ({"recipe:MetaSD (official code)": {"student_eval_modes": ["pruned"]}},
     r"official_code\.eval_modes: .* 'student_eval_modes'"),
    ({"recipe:MetaSD (official code)": {"student_eval_gammas": [1.5]}}, r"config field 'student_eval_gammas'"),
])
def test_bad_eval_options_fail_at_profile_load_naming_the_field(tmp_path, changes, match):
    with pytest.raises(ValueError, match=match):
        load_profile(profile_with(tmp_path, **changes))


def test_the_plan_lists_the_sections_runs():
    profile = load_profile("cpu")
    specs = official_specs(profile)
    runs = matching(planned_runs(profile), [OFFICIAL_ROW])
    assert {r.name for r in runs} == {s.run_name for s in specs} and len(runs) == 2 * 2 + 2 * 3
    assert {r.group for r in runs} == {OFFICIAL, PAPER_EQ}
    assert {r.paper_dataset for r in runs} == {"FB15k-237", "WN18RR", "Kinship"}
    kinship = [s.config for s in specs if s.paper_dataset == "Kinship"]
    assert {(c.dataset, c.rank, c.max_epochs, c.mask_schedule) for c in kinship} == {("Kinship", 100, 100, "epoch")}
    assert (matching(runs, [f"{OFFICIAL_ROW} Kinship"])
            and all(r.paper_dataset == "Kinship" for r in matching(runs, [f"{OFFICIAL_ROW} Kinship"])))


@pytest.mark.parametrize("name", ["smoke", "cpu"])
def test_the_sections_runs_keep_their_pinned_hashes(name):
    """``tests/data/plan_official_<profile>.tsv``: the section's plan (run name with its config hash,
    dataset, group, rows) when its records were made; a changed hash would orphan the committed records."""
    lines = (ROOT / "tests" / "data" / f"plan_official_{name}.tsv").read_text().splitlines()
    expected = [tuple(line.split("\t")) for line in lines]
    runs = matching(planned_runs(load_profile(name)), [OFFICIAL_ROW])
    assert [(r.name, r.paper_dataset, r.group, " | ".join(r.rows)) for r in runs] == expected
