"""kgdistill.study.fast_step: the fast twin changes only the step, the pairing and its verdict."""
from __future__ import annotations

import math

import pytest

from kgdistill import RunConfig
from kgdistill.study.fast_step import TOLERANCE, evidence_runs, fast_twin, paired_table
from kgdistill.study.plan import EQUAL_SIZE, PlannedRun, planned_runs
from kgdistill.study.profile import load_profile


def test_the_twin_differs_only_by_the_step():
    config = RunConfig(dataset="Kinship", method="metasd", rank=100, seed=3)
    twin = fast_twin(config)
    assert twin.one_vs_all == "chunked" and twin.precision == "bf16"
    assert {k: v for k, v in twin.to_dict().items() if k not in ("one_vs_all", "precision")} == \
        {k: v for k, v in config.to_dict().items() if k not in ("one_vs_all", "precision")}
    assert twin.run_name() != config.run_name()
    chunked_only = fast_twin(config, "fp32")
    assert chunked_only.precision == "fp32" and chunked_only.run_name() not in (twin.run_name(), config.run_name())


def _record(mrr: dict[str, float], converged: bool = True) -> dict:
    return {"converged": converged, "test": {m: {"all": {"MRR": v}} for m, v in mrr.items()}}


def test_pairs_by_seed_and_judges_the_mean_difference():
    configs = [RunConfig(dataset="UMLS", rank=100, seed=s) for s in range(3)]
    near = [(c, _record({"model": 0.90 + 0.01 * i}), _record({"model": 0.90 + 0.01 * i + 0.001}))
            for i, c in enumerate(configs)]
    table = paired_table(near + [(configs[0].replace(rank=1000), _record({"model": 0.9}), None)])
    assert len(table) == 1  # the unpaired run is left out
    row = table.iloc[0]
    assert row["n"] == 3 and row["Δ mean"] == pytest.approx(0.001) and row["verdict"] == "within ±0.005"
    assert row["fp32"] == pytest.approx(0.91) and row["converged"] == "3/3"
    far = [(c, _record({"student": 0.5, "teacher": 0.8}), _record({"student": 0.5 + 2 * TOLERANCE + 0.001 * i,
                                                                    "teacher": 0.8}, converged=i > 0))
           for i, c in enumerate(c.replace(method="metasd") for c in configs)]
    table = paired_table(far).set_index("model")
    assert table.loc["student", "verdict"] == "beyond ±0.005: defect" and table.loc["student", "95% low"] > 0
    assert table.loc["teacher", "verdict"] == "within ±0.005" and table.loc["student", "converged"] == "2/3"
    noisy = [(c, _record({"model": 0.5}), _record({"model": 0.5 + d})) for c, d in zip(configs, (0.03, -0.01, 0.01))]
    assert paired_table(noisy).iloc[0]["verdict"] == "beyond ±0.005, CI ∋ 0"
    single = paired_table(near[:1]).iloc[0]
    assert single["verdict"] == "n < 2" and math.isnan(single["95% low"])


def test_the_cpu_profiles_reference_runs_are_notebook_08s_sources():
    plan = planned_runs(load_profile("cpu"))
    runs = evidence_runs(plan)
    assert len(runs) == 40  # 2 datasets x 2 ranks x 2 methods x 5 seeds
    assert {(c.dataset, c.rank, c.method) for c in runs} == {
        (d, r, m) for d in ("Kinship", "UMLS") for r in (100, 1000) for m in ("baseline", "metasd")}
    names = {r.name for r in plan if r.group == EQUAL_SIZE}
    assert all(c.run_name() in names for c in runs)
    assert [c.rank for c in runs] == sorted(c.rank for c in runs)  # cheapest first
    other = PlannedRun(RunConfig(dataset="Kinship", rank=100), "Kinship", "Table 1", ("x",))
    assert evidence_runs([other]) == []
