"""params/gpu.yaml: the paper profile's decisive runs, each estimated to fit one hold of the GPU machine,
with the figures its header states equal to what kgdistill.study.costs computes."""
from __future__ import annotations

import re

import pytest

from kgdistill.metasd.config import RunConfig
from kgdistill.study.costs import GraphSize, run_cost, student_rank
from kgdistill.study.plan import planned_runs
from kgdistill.study.profile import config_for, load_profile

#: minutes of compute one hold of the GPU machine gives (held 30 minutes, started and fetched inside)
HOLD_MINUTES = 25
#: what a gpu run may change against the paper profile's run of the same recipe
BUDGET_FIELDS = {"max_epochs", "patience", "min_delta"}
#: the official recipe's switches (docs/official_code_audit.md) and its WN18RR reading (point 5)
OFFICIAL_FIELDS = {"temperature", "kl_mode", "kl_temperature_squared", "loss_weighting", "teacher_warm_step",
                   "quiz_selection", "quiz_per_meta_step", "soft_mask_epsilon", "student_eval_modes",
                   "student_eval_gammas", "test_history", "rp_weight", "entity_weights"}


@pytest.fixture(scope="module")
def gpu():
    return load_profile("gpu")


@pytest.fixture(scope="module")
def runs(gpu):
    return planned_runs(gpu)


def _paper_twin(paper: dict, paper_dataset: str, row: str) -> RunConfig:
    """The paper profile's run a gpu row stands for ("RP r200" is Figure 1's RP curve at rank 200)."""
    if row == "RP r200":
        return config_for(paper, paper_dataset, "RP", rank=200)
    return config_for(paper, paper_dataset, row)


def _differences(a: dict, b: dict) -> set[str]:
    return {k for k in a if k != "teacher" and a[k] != b[k]}


def test_the_gpu_profile_is_the_paper_profiles_decisive_subset(gpu, runs):
    paper = load_profile(gpu["subset_of"])
    assert {(r.paper_dataset, r.rows) for r in runs} == {
        (d, (row,)) for d in ("FB15k-237", "WN18RR") for row in ("RP", "RP r200", "KD", "DML", "MetaSD")}
    for run in runs:
        (row,) = run.rows
        ours, theirs = run.config.to_dict(), _paper_twin(paper, run.paper_dataset, row).to_dict()
        allowed = BUDGET_FIELDS | (OFFICIAL_FIELDS if row == "MetaSD" else set())
        assert _differences(ours, theirs) <= allowed, (row, run.paper_dataset, _differences(ours, theirs) - allowed)
        if ours["teacher"]:
            assert _differences(ours["teacher"], theirs["teacher"]) <= BUDGET_FIELDS
        assert run.config.patience > 0  # the convergence rule is on


def test_students_have_the_dense_baselines_size(runs):
    sizes = {(r.paper_dataset, r.rows[0]): r.config for r in runs}
    for dataset in ("FB15k-237", "WN18RR"):
        graph = GraphSize.of(dataset)
        dense = sizes[dataset, "RP r200"].rank
        assert dense == 200
        for row in ("KD", "DML"):
            assert student_rank(sizes[dataset, row], graph) == dense
        assert sizes[dataset, "MetaSD"].rank == sizes[dataset, "RP"].rank == 2000


def test_every_run_fits_one_hold_even_with_its_teacher(runs):
    minutes = {r.name: run_cost(r.config, GraphSize.of(r.config.dataset)).minutes for r in runs}
    for run in runs:
        teacher = run.config.teacher_config()
        total = minutes[run.name] + (minutes[teacher.run_name()] if teacher is not None else 0)
        assert total <= HOLD_MINUTES * 0.85, f"{run.name}: {total:.1f} estimated minutes leave no margin in a hold"


def test_the_header_states_the_estimates(gpu, runs):
    text = open(gpu["_path"]).read()
    pattern = re.compile(r"^#\s+(?:FB15k-237|WN18RR)?\s+(RP r200|RP|KD|DML|MetaSD)\s+(\d+)\s+(\d+)\s+[\d.]+\s+[\d.]+"
                         r"\s+([\d.]+)", re.M)
    stated = pattern.findall(text)
    assert len(stated) == len(runs)
    by_row = {}
    for run in sorted(runs, key=lambda r: r.paper_dataset):  # the header lists FB15k-237 first
        by_row.setdefault(run.paper_dataset, []).append(run)
    expected = []
    for dataset in ("FB15k-237", "WN18RR"):
        for row in ("RP", "RP r200", "KD", "DML", "MetaSD"):
            config = next(r.config for r in by_row[dataset] if r.rows == (row,))
            estimate = run_cost(config, GraphSize.of(config.dataset))
            expected.append((row, str(config.max_epochs), str(estimate.steps_per_epoch), f"{estimate.minutes:.1f}"))
    assert stated == expected
