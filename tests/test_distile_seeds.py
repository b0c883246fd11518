"""Notebook 06's seeds for tie pairs and Table 5's repeated timing.

The ``tie_seeds`` key (kgdistill.study.distile.seeds): the planned runs, the mean over seeds in the
link-prediction table, the paired DS − no-DS interval and its reading (gain / loss only when the
95% interval excludes 0, tie when it contains 0, single for one seed, a missing seed left out of
the pairing), the seed-0 check of the list; Table 5's median, range and speed-ups of medians.
"""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from kgdistill.distile import DistilEConfig
from kgdistill.study.distile.claims import ds_gains, ds_verdict, reading
from kgdistill.study.distile.planning import distile_planned_runs
from kgdistill.study.distile.rows import NOT_TRAINED, compare
from kgdistill.study.distile.seeds import check_tie_seeds, pair_seeds, tie_check
from kgdistill.study.intervals import t_interval

SECTION = {
    "datasets": {"WN18RR": "Nations", "FB15k-237": "Kinship"}, "models": ["TransE", "RotatE"], "teacher_dim": 8,
    "student_dims": [4, 2], "teacher_dims": [8], "config": {"max_epochs": 2, "stage1_epochs": 1, "eval_every": 1},
    "grid": {}, "ablation": {"dataset": "WN18RR"}, "figure2": {"dataset": "WN18RR", "model": "TransE"},
    "figure3": {"dataset": "FB15k-237", "model": "TransE", "dim": 4, "eval_every": 2},
}
TIES = {"dataset": "WN18RR", "seeds": [0, 1, 2], "pairs": {"RotatE": [4, 2], "TransE": [4]}, "within": 0.01}


def _row(model, dim, method, mrr, seed=None, converged="yes"):
    row = {"model": model, "dim": dim, "method": method, "MRR": mrr, "H@10": 0.0, "H@3": 0.0, "H@1": 0.0,
           "converged": NOT_TRAINED if math.isnan(mrr) else converged}
    return row if seed is None else {**row, "seed": seed}


def _gains(differences: dict, single: dict | None = None) -> pd.DataFrame:
    """ds_gains of a table whose pairs have the given per-seed differences (no-DS 0.3 + seed/100)."""
    rows = []
    for (model, dim), by_seed in differences.items():
        for seed, d in by_seed.items():
            base = 0.3 + seed / 100
            rows += [_row(model, dim, "no-DS", base, seed), _row(model, dim, "DS", base + d, seed)]
    for (model, dim), d in (single or {}).items():
        rows += [_row(model, dim, "no-DS", 0.3), _row(model, dim, "DS", 0.3 + d)]
    table = compare(rows, {}, student_dims=[4, 2])
    return ds_gains(table, differences=differences)


# --- the interval rule ---------------------------------------------------------------------------------
def test_an_interval_that_contains_0_is_a_tie_one_that_excludes_it_a_gain_or_a_loss():
    gains = _gains({("RotatE", 4): {0: -0.005, 1: 0.004, 2: 0.001},     # straddles 0
                    ("RotatE", 2): {0: 0.020, 1: 0.022, 2: 0.018},      # clearly above
                    ("TransE", 4): {0: -0.030, 1: -0.028, 2: -0.033}})  # clearly below
    assert gains["reading"].tolist() == ["tie", "gain", "loss"]
    mean, low, high = t_interval([-0.005, 0.004, 0.001])
    tie = gains.loc[("RotatE", 4)]
    assert tie["DS − no-DS"] == pytest.approx(mean) and tie["95% low"] == pytest.approx(low)
    assert tie["95% low"] < 0 < tie["95% high"] == pytest.approx(high)
    assert tie["sd"] == pytest.approx(pd.Series([-0.005, 0.004, 0.001]).std()) and tie["seeds"] == tie["planned"] == 3
    assert ds_verdict(gains).startswith(
        "DS is above no-DS beyond its 95% interval (paired by seed) in 1 of 3 pairs with 3 seeds (RotatE 2), "
        "below it in 1 (TransE 4), a tie (the interval contains 0) in 1 (RotatE 4). The paper: ")


def test_a_one_seed_pair_is_a_single_observation_not_a_gain():
    gains = _gains({("RotatE", 4): {0: 0.020, 1: 0.021}}, single={("TransE", 4): 0.05, ("TransE", 2): -0.04})
    assert gains.loc[("TransE", 4), "reading"] == "single" and math.isnan(gains.loc[("TransE", 4), "95% low"])
    assert gains.loc[("TransE", 4), "seeds"] == 1 and gains.loc[("TransE", 4), "planned"] == 1
    verdict = ds_verdict(gains)
    assert "(paired by seed) in 1 of 1 pair with 2 seeds (RotatE 4), below it in 0, a tie" in verdict
    tight = _gains({("RotatE", 4): {0: 0.002, 1: 0.003}})  # two seeds: t(1) = 12.7 makes the interval wide
    assert tight.loc[("RotatE", 4), "reading"] == "tie"
    assert ("2 single observations (one seed, no interval: not counted as gains or losses): DS − no-DS > 0 in 1 "
            "(TransE 4), < 0 in 1 (TransE 2).") in verdict
    assert reading(1, math.nan, math.nan) == "single" and reading(0, math.nan, math.nan) == "-"
    assert reading(3, 0.0, 0.1) == "tie" and reading(3, 0.001, 0.1) == "gain" and reading(3, -0.1, -0.001) == "loss"


def test_a_missing_seed_is_left_out_of_the_pairing_and_named():
    # seed 1's DS run and seed 2's no-DS run are not trained: the pair has one paired seed left
    rows = [_row("RotatE", 4, "no-DS", 0.30, 0), _row("RotatE", 4, "DS", 0.31, 0),
            _row("RotatE", 4, "no-DS", 0.32, 1), _row("RotatE", 4, "DS", math.nan, 1),
            _row("RotatE", 4, "no-DS", math.nan, 2), _row("RotatE", 4, "DS", 0.29, 2)]
    table = compare(rows, {}, metrics=("MRR",), student_dims=[4])
    assert table.loc[("RotatE", 4, "no-DS"), "MRR"] == pytest.approx(0.31)  # mean of the seeds with a record
    assert table["seeds"].tolist() == ["2 of 3", "2 of 3"]
    assert table.loc[("RotatE", 4, "DS"), "MRR ±"] == pytest.approx(pd.Series([0.31, 0.29]).std())
    gains = ds_gains(table, differences={("RotatE", 4): {0: 0.01, 1: math.nan, 2: math.nan}})
    line = gains.loc[("RotatE", 4)]
    assert (line["seeds"], line["planned"], line["reading"]) == (1, 3, "single")
    assert line["DS − no-DS"] == pytest.approx(0.01)
    assert "Seeds not trained yet: RotatE 4 (1 of 3 trained)." in ds_verdict(gains)
    # two of three paired: an interval over two seeds
    two = ds_gains(table, differences={("RotatE", 4): {0: 0.01, 1: 0.012, 2: math.nan}})
    assert two.loc[("RotatE", 4), "seeds"] == 2 and two.loc[("RotatE", 4), "reading"] in ("gain", "tie")
    none = ds_gains(table, differences={("RotatE", 4): {0: math.nan, 1: math.nan, 2: math.nan}})
    assert none.loc[("RotatE", 4), "reading"] == "-" and ds_verdict(none).startswith("No pair has both runs trained")


def test_compare_keeps_one_seed_tables_as_they_were():
    rows = [_row("TransE", 8, "Tea.", 0.5), _row("TransE", 4, "no-DS", 0.2), _row("TransE", 4, "DS", math.nan)]
    table = compare(rows, {}, metrics=("MRR",), student_dims=[4], teacher_dim=8)
    assert list(table.columns) == ["paper dim", "converged", "MRR", "MRR paper", "MRR Δ"]  # Δ as in the MetaSD tables
    assert table["converged"].tolist() == ["yes", "yes", NOT_TRAINED]


def test_seed_lines_merge_their_convergence_marks():
    rows = [_row("RotatE", 4, "DS", 0.3, 0), _row("RotatE", 4, "DS", 0.31, 1, converged="no †"),
            _row("RotatE", 4, "DS", math.nan, 2)]
    table = compare(rows, {}, metrics=("MRR",), student_dims=[4])
    assert table["converged"].tolist() == ["1/2 †"] and table["seeds"].tolist() == ["2 of 3"]


def test_ds_records_per_seed_give_each_seeds_stage_and_the_mean_teacher():
    def ds_record(stage, teacher_mrr):
        return {"selected_epoch": 2, "history": [{"epoch": 1, "stage": 1}, {"epoch": 2, "stage": stage}],
                "test": {"teacher": {"all": {"MRR": teacher_mrr}}}}

    rows = [_row("RotatE", 8, "Tea.", 0.4)] + [_row("RotatE", 4, m, 0.3, s) for s in (0, 1) for m in ("no-DS", "DS")]
    table = compare(rows, {}, student_dims=[4], teacher_dim=8)
    gains = ds_gains(table, ds_records={("RotatE", 4): [ds_record(1, 0.4), ds_record(2, 0.1)]},
                     differences={("RotatE", 4): {0: 0.0, 1: 0.0}})
    assert gains.loc[("RotatE", 4), "DS best in"] == "S1/S2"
    assert gains.loc[("RotatE", 4), "Tea. after"] == pytest.approx(0.25)
    assert "In 1 (RotatE 4 (1 of 2 seeds)) the DS student's best validation epoch lies in stage 1" in ds_verdict(gains)


# --- the section key, the plan and the seed-0 check ------------------------------------------------------
def test_tie_seeds_plan_the_other_seeds_with_the_seed_0_teacher_and_keep_every_other_name():
    before = {c.run_name(): (c, used) for c, used in distile_planned_runs(SECTION)}
    after = {c.run_name(): (c, used) for c, used in distile_planned_runs({**SECTION, "tie_seeds": TIES})}
    assert set(before) <= set(after)  # seed 0 is the section's own run: same config, same name
    assert all(after[name][1] == used for name, (_, used) in before.items())
    new = [after[name] for name in set(after) - set(before)]
    assert len(new) == 3 * 2 * 2  # 3 pairs x seeds 1, 2 x no-DS and DS
    assert {(c.model, c.dim, c.method, c.seed) for c, _ in new} == {
        (model, dim, method, seed) for model, dim in (("RotatE", 4), ("RotatE", 2), ("TransE", 4))
        for method in ("plain", "ds") for seed in (1, 2)}
    assert all(c.dataset == "Nations" and used == [f"Table 3 seed {c.seed}"] for c, used in new)
    teachers = {DistilEConfig.from_dict(c.teacher).run_name() for c, _ in new if c.method == "ds"}
    assert len(teachers) == 2 and all(name in before and "-d8-s0-" in name for name in teachers)
    assert pair_seeds({**SECTION, "tie_seeds": TIES}, "FB15k-237", "RotatE", 4) is None  # the other table: one seed
    assert pair_seeds({**SECTION, "tie_seeds": TIES}, "WN18RR", "RotatE", 2) == [0, 1, 2]
    assert pair_seeds(SECTION, "WN18RR", "RotatE", 2) is None


@pytest.mark.parametrize("change, message", [
    ({"pairs": {"ComplEx": [4]}}, "not a backbone"),
    ({"pairs": {"RotatE": [16]}}, "student dims"),
    ({"seeds": [0, 0]}, "distinct"),
    ({"seeds": []}, "distinct"),
    ({"within": 0}, "positive"),
    ({"dataset": "YAGO"}, "not a paper dataset"),
    ({"pairs": None}, "pairs"),
])
def test_a_bad_tie_seeds_key_is_named(change, message):
    with pytest.raises(ValueError, match=message):
        check_tie_seeds({**SECTION, "tie_seeds": {**TIES, **change}})
    check_tie_seeds({**SECTION, "tie_seeds": TIES})  # the good one passes


def test_every_profile_with_tie_seeds_loads_and_lists_pairs_of_its_own_table():
    from kgdistill.study.profile import load_profile

    for name in ("smoke", "cpu"):
        section = load_profile(name)["distile"]
        assert section["tie_seeds"]["pairs"] and 0 in section["tie_seeds"]["seeds"]
        check_tie_seeds(section)


def test_tie_check_says_whether_the_seed_0_table_picks_the_listed_pairs():
    section = {**SECTION, "tie_seeds": TIES}
    seed0 = {("TransE", 4): -0.005, ("TransE", 2): 0.05, ("RotatE", 4): 0.004, ("RotatE", 2): -0.0004}
    assert tie_check(section, "WN18RR", seed0) == (
        "seed 0: DS − no-DS test MRR within ±0.01 in 3 of 4 measured pairs (TransE 4 -0.0050, RotatE 4 +0.0040, "
        "RotatE 2 -0.0004); tie_seeds lists the same pairs (seeds 0, 1, 2).")
    moved = {**seed0, ("TransE", 4): 0.02, ("TransE", 2): 0.001}
    assert tie_check(section, "WN18RR", moved).endswith(
        "this differs from tie_seeds.pairs (RotatE 4, RotatE 2, TransE 4, seeds 0, 1, 2): listed but not within "
        "±0.01: TransE 4; within but not listed: TransE 2.")
    untrained = {**seed0, ("TransE", 4): math.nan}
    assert tie_check(section, "WN18RR", untrained).endswith(
        "1 not trained yet; tie_seeds lists the same pairs (seeds 0, 1, 2), and TransE 4, not trained at seed 0 yet.")
    assert tie_check(section, "FB15k-237", seed0).endswith("; tie_seeds adds seeds on WN18RR only.")
    assert tie_check(SECTION, "WN18RR", seed0) == ""


# --- Table 5 -------------------------------------------------------------------------------------------
def test_table5_reports_the_median_and_range_and_speedups_of_medians(nations, monkeypatch):
    from kgdistill.distile import timing

    passes = {8: [3.0, 9.0, 4.0], 4: [2.0, 1.0, 20.0]}  # one disturbed pass each
    monkeypatch.setattr(timing, "link_prediction_seconds", lambda model, *a, **k: passes[model.dim])
    rows = timing.inference_table(nations, "TransE", [8, 4], repeats=3)
    assert [(r["seconds"], r["seconds min"], r["seconds max"], r["repeats"]) for r in rows] == [
        (4.0, 3.0, 9.0, 3), (2.0, 1.0, 20.0, 3)]
    assert rows[1]["speedup"] == 2.0  # 4.0 / 2.0, not the ratio of means (5.33 / 7.67)


def test_table5_times_each_pass_and_names_the_machine(nations):
    from kgdistill.core.records import cpu_model, machine_description
    from kgdistill.distile.timing import link_prediction_seconds
    from kgdistill.study.distile.grid import DistilEStudy

    seconds = link_prediction_seconds(_model(nations), torch.tensor([[0, 0, 1], [1, 1, 2]]), repeats=2)
    assert len(seconds) == 2 and all(s > 0 for s in seconds)
    assert cpu_model() and cpu_model() in machine_description(torch.device("cpu"))
    section = {"datasets": {"WN18RR": "Nations"}, "models": ["TransE"], "teacher_dim": 8, "student_dims": [4],
               "timing": {"dataset": "WN18RR", "repeats": 2, "triples": 20}}
    study = DistilEStudy(section, ".", device="cpu")
    study._datasets["Nations"] = nations
    caption = study.timing_caption()
    assert caption.startswith("20 triples of Nations ranked (batch 1024) on cpu (") and "median of 2 passes" in caption
    table = study.timing_table()
    assert list(table.index) == [("TransE", 8), ("TransE", 4)] and (table["repeats"] == 2).all()
    assert (table["seconds min"] <= table["seconds"]).all() and (table["seconds"] <= table["seconds max"]).all()
    study.section = {**section, "timing": {**section["timing"], "repeats": 0}}
    with pytest.raises(ValueError, match="timing.repeats"):
        study.timing_caption()
    before = torch.get_num_threads()  # timing.threads: the threads while timing, restored after
    torch.set_num_threads(2)
    try:
        study.section = {**section, "timing": {**section["timing"], "threads": 1}}
        assert "1 threads)" in study.timing_caption() and len(study.timing()) == 2
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    study.section = {**section, "timing": {**section["timing"], "threads": 0}}
    with pytest.raises(ValueError, match="timing.threads"):
        study.timing()


def _model(dataset):
    from kgdistill.distile import build_kge

    torch.manual_seed(0)
    return build_kge("TransE", dataset.n_entities, dataset.n_relations, 4)


def test_the_study_trains_the_seeds_it_plans_and_pairs_them(nations, runs_dir):
    from kgdistill.study.distile.grid import DistilEStudy

    section = {"datasets": {"WN18RR": "Nations"}, "models": ["TransE"], "teacher_dim": 8, "student_dims": [4],
               "teacher_dims": [8], "config": {"max_epochs": 2, "stage1_epochs": 1, "eval_every": 1}, "grid": {},
               "ablation": {"dataset": "WN18RR"}, "figure2": {"dataset": "WN18RR", "model": "TransE"},
               "figure3": {"dataset": "WN18RR", "model": "TransE", "dim": 4, "eval_every": 1},
               "tie_seeds": {"seeds": [0, 1], "pairs": {"TransE": [4]}}}
    study = DistilEStudy(section, runs_dir, device="cpu")
    study._datasets["Nations"] = nations
    rows = study.link_prediction("WN18RR")
    assert [(r["method"], r.get("seed")) for r in rows] == [("Tea.", None), ("no-DS", 0), ("DS", 0), ("no-DS", 1),
                                                            ("DS", 1)]
    assert sorted(c.run_name() for c, used in distile_planned_runs(section) if "Table 3" in " ".join(used)) == sorted(
        study.records)
    table = study.link_prediction_table("WN18RR")
    assert table.loc[("TransE", 4, "DS"), "seeds"] == 2
    assert table.loc[("TransE", 4, "DS"), "MRR"] == pytest.approx((rows[2]["MRR"] + rows[4]["MRR"]) / 2)
    gains = study.ds_gains("WN18RR", table)
    paired = [rows[2]["MRR"] - rows[1]["MRR"], rows[4]["MRR"] - rows[3]["MRR"]]
    assert gains.loc[("TransE", 4), "DS − no-DS"] == pytest.approx(sum(paired) / 2)
    assert gains.loc[("TransE", 4), "95% low"] == pytest.approx(t_interval(paired)[1])
    assert gains.loc[("TransE", 4), "DS best in"].count("/") == 1  # one stage per seed
    d0 = paired[0]
    assert study.tie_check("WN18RR").startswith(f"seed 0: DS − no-DS test MRR within ±0.01 in {int(abs(d0) <= 0.01)} "
                                                "of 1 measured pair")
    assert "tie_seeds: seeds [0, 1] on WN18RR for TransE [4]" in study.describe()
