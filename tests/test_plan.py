"""kgdistill.study.plan: a profile's runs, teachers first, as scripts/train_runs.py built them before the
plan moved into the library.

``tests/data/plan_<profile>.tsv`` holds that script's plan (commit aefcd95), one run a line: run
name, paper dataset, recipe or group, the rows using it joined by `` | ``. The run names carry the
config hashes, so these files also pin every planned run's hash. One intended change since: the
cpu profile's 60 WN18RR DistilE runs (notebook 06) moved to the paper's settings with the
convergence rule (issue 12), which gave them new names; then notebook 06's ``tie_seeds`` added
the seed-1/2 runs of its tie pairs (cpu: 16 runs, rows ``... (Table 3 seed 1)``; smoke: 4) and its
plain students at student dims are labelled ``no-DS`` instead of ``teacher`` (names unchanged);
every other line is the script's.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from kgdistill.study.plan import (
    DISTILE_IN_TABLE1,
    DISTILE_NOTEBOOK,
    EQUAL_SIZE,
    OFFICIAL_ROW,
    PlannedRun,
    matching,
    planned_runs,
)
from kgdistill.study.profile import load_profile

DATA = Path(__file__).parent / "data"


def expected(profile: str) -> list[tuple[str, str, str, tuple[str, ...]]]:
    lines = (DATA / f"plan_{profile}.tsv").read_text().splitlines()
    return [(name, ds, group, tuple(rows.split(" | ")))
            for name, ds, group, rows in (line.split("\t") for line in lines)]


@pytest.fixture(scope="module")
def plans() -> dict[str, list[PlannedRun]]:
    return {name: planned_runs(load_profile(name)) for name in ("smoke", "cpu")}


@pytest.mark.parametrize("profile", ["smoke", "cpu"])
def test_plan_is_the_scripts_plan(plans, profile):
    plan = plans[profile]
    # sections added after the pin are pinned by their own tests (notebook 07: test_official_notebook.py,
    # notebook 08: test_equal_size.py)
    pinned = [r for r in plan if not r.matches([OFFICIAL_ROW]) and r.group != EQUAL_SIZE]
    assert [(r.name, r.paper_dataset, r.group, r.rows) for r in pinned] == expected(profile)
    assert len({r.name for r in plan}) == len(plan)


@pytest.mark.parametrize("profile", ["smoke", "cpu"])
def test_teachers_come_first(plans, profile):
    plan = plans[profile]
    standalone = [r.standalone for r in plan]
    assert standalone == sorted(standalone, reverse=True) and any(standalone) and not all(standalone)
    position = {r.name: i for i, r in enumerate(plan)}
    for i, run in enumerate(plan):
        if run.config.teacher:  # KD and DistilE students: the teacher is planned, before them
            teacher = type(run.config).from_dict(run.config.teacher).run_name()
            assert position[teacher] < i


def test_groups_and_matching(plans):
    plan = plans["smoke"]
    groups = {r.group for r in plan}
    assert {DISTILE_IN_TABLE1, DISTILE_NOTEBOOK, "MetaSD", "KD"} <= groups
    table1 = matching(plan, [DISTILE_IN_TABLE1])
    assert table1 and {r.group for r in table1} == {DISTILE_IN_TABLE1}
    assert matching(plan, None) == plan and matching(plan, ["no-such-run"]) == []
    one = plan[5]
    assert matching(plan, [one.name]) == [one]
    # a pattern may be part of a row, the group, the paper dataset or the name
    assert all(r.matches(["WN18RR"]) for r in matching(plan, ["WN18RR"]))
    assert set(matching(plan, ["WN18RR", DISTILE_NOTEBOOK])) >= set(matching(plan, [DISTILE_NOTEBOOK]))


def test_a_gridded_distile_section_is_left_to_the_notebooks():
    profile = load_profile("paper")
    plan = planned_runs(profile)
    assert plan and not any(r.group in (DISTILE_IN_TABLE1, DISTILE_NOTEBOOK) for r in plan)
