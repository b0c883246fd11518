"""Notebook 08's section (kgdistill.study.equal_size, kgdistill.study.equal_size_study): the paired
comparison's statistics, the sizing of every row at the pruned student's non-zero count, the
stored bytes, the profile section's checks and its place in the run plan."""
from __future__ import annotations

import copy
import json
import math

import pandas as pd
import pytest
import torch
import yaml

from kgdistill import study
from kgdistill.core.models import backbone, build_model
from kgdistill.core.pruning import kept_count, magnitude_mask
from kgdistill.study.equal_size import (
    ALTERNATIVES,
    METASD,
    ROWS,
    TRAINED_ROWS,
    best_alternative,
    check_equal_size_section,
    paired_comparison,
    run_configs,
    section_runs,
    sizes_from_stats,
    small_rank,
    t_interval,
)
from kgdistill.study.equal_size_study import sparse_bytes, summary_table
from kgdistill.study.plan import EQUAL_SIZE, matching, planned_runs
from kgdistill.study.profile import load_profile, published
from kgdistill.study.tables import DAGGER
from test_notebooks_meta import ROOT, notebook_code

SIZES = sizes_from_stats(published("datasets", "stats"))


# --- statistics ---------------------------------------------------------------------------------------
def test_t_interval_by_hand():
    mean, low, high = t_interval([0.1, 0.2, 0.3])  # sd 0.1, n 3: t(2) = 4.303
    half = 4.303 * 0.1 / math.sqrt(3)
    assert mean == pytest.approx(0.2) and (low, high) == pytest.approx((0.2 - half, 0.2 + half))
    mean, low, high = t_interval([0.5])
    assert mean == 0.5 and math.isnan(low) and math.isnan(high)
    assert t_interval([1.0] * 41)[1:] == (1.0, 1.0)  # no spread, beyond the table's 30 dof
    n = 35  # 34 dof: the 30-dof value (conservative)
    values = [float(i % 2) for i in range(n)]
    mean, low, _ = t_interval(values)
    sd = pd.Series(values).std(ddof=1)
    assert mean - low == pytest.approx(2.042 * sd / math.sqrt(n))


def measurements(rows: dict[str, tuple[list[float], list[float]]]) -> pd.DataFrame:
    """A measurements frame: ``{row: ([test MRR per seed], [valid MRR per seed])}``."""
    lines = []
    for row, (test, valid) in rows.items():
        for seed, (t, v) in enumerate(zip(test, valid)):
            lines.append({"row": row, "seed": seed, "MRR": t, "valid MRR": v, "converged": seed != 1,
                          "size": 10, "bytes": 40, "H@1": t, "H@10": t, "MRR official-dense": math.nan,
                          "parameters read (official-dense)": math.nan})
    return pd.DataFrame(lines)


def test_the_alternative_is_chosen_on_validation_and_compared_seed_by_seed():
    frame = measurements({
        METASD: ([0.50, 0.52, 0.55], [0.50, 0.50, 0.50]),
        "KD": ([0.60, 0.61, 0.62], [0.40, 0.40, 0.40]),   # best on test, worse on validation
        "DML": ([0.40, 0.45, 0.47], [0.45, 0.46, 0.47]),  # best on validation: the one compared
    })
    assert best_alternative(frame) == "DML"
    result = paired_comparison(frame)
    assert result["alternative"] == "DML" and result["seeds"] == 3
    assert list(result["differences"].values()) == pytest.approx([0.10, 0.07, 0.08])
    mean, low, high = t_interval([0.10, 0.07, 0.08])
    assert (result["mean"], result["low"], result["high"]) == pytest.approx((mean, low, high))
    assert low > 0 and result["verdict"] == "MetaSD better than DML"
    assert result["valid MRR"] == pytest.approx({METASD: 0.5, "DML": 0.46})
    against_kd = paired_comparison(frame, "KD")
    assert against_kd["mean"] == pytest.approx(-0.0867, abs=1e-4) and against_kd["verdict"] == "KD better than MetaSD"
    noisy = measurements({METASD: ([0.5, 0.6], [0.5, 0.5]), "KD": ([0.55, 0.55], [0.6, 0.6])})
    assert paired_comparison(noisy)["verdict"].startswith("not resolved")
    table = summary_table(frame)
    assert list(table.index) == [METASD, "KD", "DML"]  # the order of ROWS
    assert table.loc["DML", "converged"] == f"2/3 {DAGGER}" and table.loc["DML", "MRR"] == pytest.approx(0.44)


# --- sizes and bytes ----------------------------------------------------------------------------------
@pytest.mark.parametrize("profile", ["smoke", "cpu"])
def test_every_equal_size_row_is_sized_by_the_pruned_student(profile):
    section = load_profile(profile)["equal_size"]
    assert set(TRAINED_ROWS) == {r.label for r in ROWS if r.method}
    for dataset in section["datasets"]:
        n_e, n_r = SIZES[dataset]
        for rank in section["source_ranks"]:
            configs = run_configs(section, dataset, rank, section["seeds"][0], SIZES)
            cls = backbone(configs["source"].model)
            kept = kept_count(cls.dense_size(n_e, n_r, rank), section["gamma"])
            small = small_rank(configs["source"].model, n_e, n_r, rank, section["gamma"])
            # within the rounding of rank_for_budget: the next rank would exceed the student's count
            assert cls.dense_size(n_e, n_r, small) <= kept < cls.dense_size(n_e, n_r, small + 1)
            assert configs["dense alone"].rank == small and configs["dense alone"].method == "baseline"
            for label in ("MetaSD", "MetaSD w/o M", "MetaSD w/o P", "KD", "DML", "prune + fine-tune"):
                assert configs[label].rank == rank and configs[label].gamma == section["gamma"]
                assert configs[label].student_rank == 0  # separate students sized by the runtime budget
            assert configs["KD"].teacher == configs["prune + fine-tune"].teacher == configs["source"].to_dict()


def test_sparse_bytes_are_the_csr_export(nations):
    from kgdistill.compression.sparse import _csr_parts

    torch.manual_seed(0)
    model = build_model("ComplEx", nations.n_entities, nations.n_relations, 12, init_scale=0.5)
    model.set_masks(magnitude_mask(model.prunable(), 0.9))
    entity, relation = model.tables(masked=True)
    stored = sum(t.numel() * t.element_size() for table in (entity, relation)
                 for key, t in _csr_parts(table).items() if key != "shape")
    tables = [tuple(model.entity.shape), tuple(model.relation.shape)]
    assert sparse_bytes(model.parameter_counts()["nonzero"], tables) == stored


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The smoke profile with a seconds-long equal_size section on Nations: source rank 12
    (2,976 parameters, students of 298, dense-alone rank 1), two seeds, two epochs."""
    folder = tmp_path_factory.mktemp("equal")
    raw = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())
    raw["equal_size"] = {
        "datasets": ["Nations"], "source_ranks": [12], "gamma": 0.9, "seeds": [0, 1], "quantize": ["int8"],
        "config": {"learning_rate": 0.1, "batch_size": 500, "max_epochs": 2, "eval_every": 1, "reg_weight": 0.01,
                   "patience": 1, "min_delta": 0.5},
        "per_row": {"MetaSD": {"mask_schedule": "step"}},
    }
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    S = study.Study(path, results_dir=folder, enforce_env=False)
    return S.equal_size()


def test_the_section_end_to_end_keeps_every_row_at_the_students_size(tiny):
    E = tiny
    frame = E.measurements()
    n_e, n_r = SIZES["Nations"]
    dense = backbone("ComplEx").dense_size(n_e, n_r, 12)
    kept = kept_count(dense, 0.9)
    step = backbone("ComplEx").dense_size(n_e, n_r, 1)  # one rank of the dense-alone model
    assert set(frame["row"]) == {r.label for r in ROWS if r.transform != "fp16"}  # quantize: [int8]
    for row in ROWS:
        part = frame[frame["row"] == row.label]
        if part.empty:
            continue
        assert len(part) == 2  # two seeds
        if row.basis == "equal size":
            assert (part["size"] <= kept).all() and (part["size"] > kept - step).all(), row.label
        if row.label in ("MetaSD", "MetaSD w/o M", "one-shot prune", "prune + fine-tune"):
            assert (part["size"] == kept).all() and part["MRR official-dense"].notna().all()
    assert (frame[frame["row"] == "source"]["size"] == dense).all()
    assert (frame[frame["row"] == "source int8"]["bytes"] == dense + 4 * (n_e + 2 * n_r)).all()
    # a budget-hit run is marked: two epochs at a min_delta of 0.5 stop by the rule only when
    # the first validation is not beaten by 0.5; the tables mark whichever hit the budget
    tables = E.tables()
    table = tables[("Nations", 12)]
    for label in table.index:
        hit = ~frame[frame["row"] == label]["converged"]
        assert table.loc[label, "converged"].endswith(DAGGER) == bool(hit.any())
    comparison = E.comparisons()
    line = comparison.loc[("Nations", 12)]
    assert line["best alternative (valid)"] in ALTERNATIVES and line["seeds"] == 2
    assert "DATE" not in E.describe() and "298" in E.describe()
    assert len(E.runs_frame()) == len({r.config.run_name() for r in E.runs})


def test_the_figure_has_one_panel_per_benchmark(tiny):
    import matplotlib

    matplotlib.use("Agg")
    fig = tiny.figure()
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in axes] == ["Nations"] and axes[0].get_xscale() == "log"
    assert len(axes[0].get_legend().get_texts()) >= 8
    # the sources are hollow and on top (a rank-100 source sits at the rank-1000 rows' size)
    hollow = [line for line in axes[0].get_lines() if line.get_markerfacecolor() == "none" and line.get_xdata().size]
    assert hollow and all(line.get_zorder() > 2 for line in hollow)


# --- the profile section and the plan -----------------------------------------------------------------
def test_section_errors_name_the_key():
    section = copy.deepcopy(load_profile("smoke")["equal_size"])
    with pytest.raises(ValueError, match="per_row.*not trained rows"):
        check_equal_size_section({**section, "per_row": {"one-shot prune": {"rank": 3}}}, SIZES)
    with pytest.raises(ValueError, match="quantize"):
        check_equal_size_section({**section, "quantize": ["int4"]}, SIZES)
    with pytest.raises(ValueError, match="row 'source'.*learning_rate"):
        check_equal_size_section({**section, "config": {**section["config"], "learning_rate": -1}}, SIZES)
    with pytest.raises(ValueError, match="seeds"):
        check_equal_size_section({**section, "seeds": []}, SIZES)


def test_the_plan_trains_the_section(tmp_path):
    profile = load_profile("cpu")
    section = profile["equal_size"]
    plan = planned_runs(profile)
    runs = [r for r in plan if r.group == EQUAL_SIZE]
    names = {r.config.run_name() for r in section_runs(section, SIZES)}
    assert {r.name for r in runs} == names - {r.name for r in plan if r.group != EQUAL_SIZE}
    assert len(names) < len(section_runs(section, SIZES))  # the rank-1000 dense-alone model is the rank-100 source
    first = matching(plan, ["[r100]"])
    assert first and all(any("[r100]" in row for row in r.rows) for r in first)
    assert {r.name for r in matching(plan, [EQUAL_SIZE])} == {r.name for r in runs}
    standalone = [r.standalone for r in plan]
    assert standalone == sorted(standalone, reverse=True)  # sources before their KD and prune + fine-tune runs


def test_notebook_08_opens_the_section_through_the_facade():
    code = notebook_code(ROOT / "notebooks" / "08_equal_size.ipynb")
    assert code.count("S.equal_size()") == 1 and "E.comparisons()" in code and "E.figure()" in code


def test_with_train_missing_false_the_section_reads_the_records_that_exist(tiny, tmp_path):
    import shutil

    E = tiny
    profile = copy.deepcopy(E.study.profile)
    profile["equal_size"]["train_missing"] = False
    kd = next(r for r in E.runs if r.row == "KD" and r.seed == 1)
    runs = tmp_path / "runs"
    shutil.copytree(E.study.runs_dir, runs,
                    ignore=lambda folder, names: [kd.config.run_name()] if kd.config.run_name() in names else [])
    path = tmp_path / "partial.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in profile.items() if not k.startswith("_")}, sort_keys=False))
    S = study.Study(path, results_dir=tmp_path, enforce_env=False)
    partial = S.equal_size()  # trains nothing: no env pins needed, and the KD seed-1 run stays missing
    assert partial.missing == 1 and "1 not trained yet" in partial.describe()
    frame = partial.measurements()
    assert len(frame[frame["row"] == "KD"]) == 1 and len(frame[frame["row"] == METASD]) == 2
    assert partial.tables()[("Nations", 12)].loc["KD", "seeds"] == 1
    line = partial.comparisons().loc[("Nations", 12)]
    assert line["seeds"] == 1  # only seed 0 has every equal-size row


def test_post_hoc_rows_are_read_back_without_weights(tiny, tmp_path):
    # a fresh clone has records and post_hoc.json but no *.pt: the notebook must not retrain the sources
    import shutil

    from kgdistill.study.equal_size_study import POST_HOC, POST_HOC_VERSION

    E = tiny
    frame = E.measurements()
    sources = {r.config.run_name() for r in E.runs if r.row in ("source", "dense alone")}
    for name in sources:
        saved = json.loads((E.study.runs_dir / name / POST_HOC).read_text())
        assert saved["version"] == POST_HOC_VERSION and saved["gamma"] == 0.9 and saved["lines"]
    runs = tmp_path / "runs"
    shutil.copytree(E.study.runs_dir, runs, ignore=shutil.ignore_patterns("*.pt", ".retrain"))
    profile = copy.deepcopy(E.study.profile)
    profile["equal_size"]["train_missing"] = False
    path = tmp_path / "clone.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in profile.items() if not k.startswith("_")}, sort_keys=False))
    clone = study.Study(path, results_dir=tmp_path, enforce_env=False).equal_size()
    pd.testing.assert_frame_equal(clone.measurements(), frame)
    assert not (runs / ".retrain").exists() and not list(runs.rglob("*.pt"))  # nothing retrained
    stale = runs / next(iter(sources)) / POST_HOC
    stale.write_text(json.dumps({**json.loads(stale.read_text()), "version": POST_HOC_VERSION - 1}))
    again = study.Study(path, results_dir=tmp_path, enforce_env=False).equal_size()
    pd.testing.assert_frame_equal(again.measurements(), frame)  # an old file is recomputed (from retrained weights)
    assert list(runs.rglob("*.pt"))
