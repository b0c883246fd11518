"""DistilE as an added row of the MetaSD Table 1: sizing beside MetaSD, profile section, table row."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from kgdistill import study
from kgdistill.core.models import build_model
from kgdistill.core.pruning import kept_count
from kgdistill.distile import build_kge
from kgdistill.metasd.config import RunConfig
from kgdistill.study.distile.in_table1 import (
    check_table1_section,
    dim_within,
    dims_beside_metasd,
    kge_dense_size,
    metasd_sizes,
    table1_rows,
)
from kgdistill.study.distile.planning import table1_planned_runs
from kgdistill.study.profile import config_for, load_profile, published, trained_on
from kgdistill.study.tables import results_table, runs_frame


def test_sizes_follow_the_two_layouts():
    config = RunConfig(model="ComplEx", rank=32, gamma=0.9)
    sizes = metasd_sizes(config, 135, 46)
    dense = build_model("ComplEx", 135, 46, 32).parameter_counts()["dense"]
    assert sizes == {"source": dense, "student": kept_count(dense, 0.9)} == {"source": (135 + 2 * 46) * 2 * 32,
                                                                             "student": 1453}
    for model in ("TransE", "TransH", "ComplEx", "RotatE"):
        assert kge_dense_size(model, 135, 46, 7) == build_kge(model, 135, 46, 7).parameter_counts()["dense"]
    assert kge_dense_size("ComplEx", 135, 46, 7) == (135 + 46) * 2 * 7


@pytest.mark.parametrize("model", ["TransE", "TransH", "ComplEx", "RotatE"])
@pytest.mark.parametrize("budget", [1000, 1448, 1453, 14_528, 60_060_000])
def test_dim_within_is_the_largest_dim_not_above_the_budget(model, budget):
    n, r = 135, 46
    dim = dim_within(model, n, r, budget)
    assert kge_dense_size(model, n, r, dim) <= budget < kge_dense_size(model, n, r, dim + 1)


def test_dim_within_names_the_fix_when_even_dim_1_is_too_large():
    with pytest.raises(ValueError, match="raise the MetaSD rank"):
        dim_within("ComplEx", 135, 46, 100)


def test_dims_beside_metasd_umls_and_the_real_benchmarks():
    umls = dims_beside_metasd(RunConfig(rank=32, gamma=0.9), 135, 46)
    assert ((umls["teacher_dim"], umls["teacher_size"], umls["student_dim"], umls["student_size"])
            == (40, 14_480, 4, 1_448))
    # the paper's rank 2000 on FB15k-237 (14,541 entities, 237 relations) and WN18RR (40,943 / 11)
    fb = dims_beside_metasd(RunConfig(rank=2000, gamma=0.9), 14_541, 237)
    assert (fb["metasd_source"], fb["teacher_dim"], fb["student_dim"]) == (60_060_000, 2032, 203)
    wn = dims_beside_metasd(RunConfig(rank=2000, gamma=0.9), 40_943, 11)
    assert (wn["teacher_dim"], wn["student_dim"]) == (2000, 200)
    for dims in (umls, fb, wn):
        assert dims["teacher_size"] <= dims["metasd_source"] and dims["student_size"] <= dims["metasd_student"]


@pytest.mark.parametrize("name", ["smoke", "cpu", "paper"])
def test_every_profile_adds_the_row_sized_within_metasd(name):
    profile = load_profile(name)  # check_table1_section ran here
    block = profile["distile_in_table1"]
    assert "added" in block["row"] and "not in MetaSD paper" in block["row"]
    for ds in profile["tables"]["table1"]["datasets"]:
        assert block["row"] not in published("metasd", "table1", ds), "the row must have no published numbers"
        config = config_for(profile, ds, block.get("beside", "MetaSD"))
        trained = trained_on(profile, ds)
        stats = published("datasets", "stats")[trained] if trained in ("FB15k-237", "WN18RR") else None
        n, r = (stats["entities"], stats["relations"]) if stats else (135, 46)
        dims = dims_beside_metasd(config, n, r)
        assert 0 < dims["student_dim"] < dims["teacher_dim"]
        assert dims["student_size"] <= kept_count(dims["metasd_source"], config.gamma)


def test_a_bad_field_in_the_section_is_named():
    profile = copy.deepcopy(load_profile("smoke"))
    profile["distile_in_table1"]["config"]["lerning_rate"] = 0.1
    with pytest.raises(ValueError, match="lerning_rate"):
        check_table1_section(profile)
    profile = copy.deepcopy(load_profile("smoke"))
    profile["distile_in_table1"]["beside"] = "MetaSDD"
    with pytest.raises(ValueError, match="MetaSDD"):
        check_table1_section(profile)


def test_table1_rows_train_teacher_and_student_and_join_the_table(runs_dir, umls):
    torch.set_num_threads(1)
    # in-process: torch was imported without the smoke profile's env, so the pins are not in force
    S = study.Study("smoke", results_dir=runs_dir.parent, runs_dir=runs_dir, enforce_env=False)
    S.device = "cpu"
    S._datasets["UMLS"] = umls
    S.profile["seeds"] = [0]
    S.profile["distile_in_table1"]["config"].update(max_epochs=2, stage1_epochs=1, eval_every=1)
    out = table1_rows(S)
    assert [(s.paper_dataset, s.seed) for s in out.specs] == [("FB15k-237", 0), ("WN18RR", 0)]
    # UMLS stands in for both datasets with the same DistilE settings: one teacher, one student
    assert len(out.records) == 2 and out.specs[0].run_name == out.specs[1].run_name
    student = out.records[out.specs[0].run_name]
    assert student["method"] == "ds" and student["config"]["dim"] == 4 and student["config"]["teacher"]["dim"] == 40
    assert list(out.sizes["student dim"]) == [4, 4] and list(out.sizes["teacher dim"]) == [40, 40]
    # a table of the added row alone: measured values, the record's size and dim, no paper numbers
    frame = results_table(out.specs[:1], out.records, published("metasd", "table1", "FB15k-237"))
    row = frame.loc[out.specs[0].row]
    assert row["MRR"] == student["test"]["student"]["all"]["MRR"] and row["size"] == 1448 and row["dim"] == 4
    assert math.isnan(row["MRR paper"]) and math.isnan(row["size paper"]) and row["source"] == "measured"
    runs = runs_frame(out.specs, out.records)
    assert list(runs["model"]) == ["student"] and runs["max_epochs"].iloc[0] == 2

    # scripts/train_runs.py trains these same runs ahead of the notebook: teachers first, then students
    planned = table1_planned_runs(S.profile, lambda name: umls)
    assert [(ds, role) for ds, role, _ in planned] == [("FB15k-237", "teacher"), ("WN18RR", "teacher"),
                                                       ("FB15k-237", "student"), ("WN18RR", "student")]
    assert {c.run_name() for *_, c in planned} == set(out.records)
    S.profile["distile_in_table1"]["grid"] = {"learning_rate": [0.01, 0.1]}
    assert table1_planned_runs(S.profile, lambda name: umls) == []  # the teacher is chosen by training


def test_the_experiments_module_still_offers_every_name_its_callers_use():
    """kgdistill.study.plan and the notebooks import from kgdistill.study.distile.experiments; the split kept
    it whole."""
    from kgdistill.study.distile import experiments, grid, in_table1, planning

    assert experiments.table1_planned_runs is planning.table1_planned_runs
    assert experiments.distile_planned_runs is planning.distile_planned_runs
    assert experiments.table1_rows is in_table1.table1_rows and experiments.DistilEStudy is grid.DistilEStudy
    assert experiments.check_table1_section is check_table1_section
