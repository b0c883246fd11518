"""The study layer: notebook conventions, profiles, published numbers, tables, nbval sanitizers.

The notebooks themselves are re-executed by ``pytest --nbval notebooks/``; these tests check
what nbval cannot: that every notebook follows the conventions (tagged parameters cell, no paper
number typed in code), that the profiles build valid configs, and that the sanitizers hide
timings/dates/paths but never a trained number - so that a changed metric fails nbval.
"""
from __future__ import annotations

import configparser
import importlib.util
import io
import json
import math
import re
import tokenize
from pathlib import Path

import nbformat
import pytest

from kgdistill import study
from kgdistill.config import RunConfig

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PROFILES = sorted((ROOT / "params").glob("*.yaml"))
SANITIZE = ROOT / "tests" / "nbval_sanitize.cfg"
MY_NOTEBOOKS = [p for p in NOTEBOOKS if p.name[:2] in {"00", "01", "02", "03", "04", "05"}]


def code_cells(path: Path) -> list:
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def published_numbers() -> tuple[set[float], set[int]]:
    """The published *results*: (floats, integers >= 100) of the MetaSD tables and long-tail
    counts and of the DistilE tables. Settings (rank, gamma, thresholds) are left out - typing
    those is a profile's business - and so are one-decimal values like 0.5 or 1.0, which are
    everyday constants (a published 0.500 would go unnoticed)."""
    floats: set[float] = set()
    ints: set[int] = set()

    def walk(node, key=""):
        if isinstance(node, dict):
            for k, value in node.items():
                if k not in ("dim", "threshold", "caption", "citation"):
                    walk(value, k)
        elif isinstance(node, bool):
            return
        elif isinstance(node, float):
            if round(node, 1) != node:  # 0.5, 1.0 ... are everyday constants, 0.391 is not
                floats.add(node)
        elif isinstance(node, int) and node >= 100:
            ints.add(node)

    for table in ("table1", "table2", "table3", "table4", "long_tail"):
        walk(study.published("metasd", table))
    for table in ("table3", "table4", "table5", "table6"):
        walk(study.published("distile", table))
    return floats, ints


def numeric_literals(source: str) -> list[tuple[str, float]]:
    lines = [l for l in source.splitlines() if not l.lstrip().startswith(("%", "!"))]
    out = []
    for tok in tokenize.generate_tokens(io.StringIO("\n".join(lines) + "\n").readline):
        if tok.type == tokenize.NUMBER:
            try:
                out.append((tok.string, float(tok.string.replace("_", ""))))
            except ValueError:
                pass
    return out


def sanitizers() -> list[tuple[re.Pattern, str]]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(SANITIZE)
    return [(re.compile(parser[s]["regex"]), parser[s]["replace"]) for s in parser.sections()]


def sanitize(text: str) -> str:
    for pattern, replace in sanitizers():
        text = pattern.sub(replace, text)
    return text


# --- notebook conventions ---------------------------------------------------------------------------
def test_the_series_is_there():
    assert [p.name for p in MY_NOTEBOOKS] == [
        "00_datasets.ipynb", "01_main_results.ipynb", "02_long_tail.ipynb", "03_ablation.ipynb",
        "04_backbones.ipynb", "05_size_accuracy.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_code_cell_is_tagged_parameters_with_smoke_defaults(path):
    first = code_cells(path)[0]
    assert "parameters" in first.metadata.get("tags", []), f"{path.name}: first code cell must be tagged 'parameters'"
    namespace: dict = {}
    exec(first.source, namespace)  # noqa: S102 - the notebook's own parameter defaults
    assert namespace.get("profile") == "smoke", f"{path.name}: committed notebooks default to profile='smoke'"
    assert namespace.get("show_progress") is False, f"{path.name}: show_progress must default to False"
    for name in ("runs_dir", "data_dir"):
        assert name in namespace and namespace[name] is None, f"{path.name}: parameter {name} must default to None"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_committed_executed_without_errors(path):
    for cell in code_cells(path):
        assert cell.execution_count is not None, f"{path.name}: cell {cell.get('id')} was not executed (run `make notebooks`)"
        for output in cell.outputs:
            assert output.output_type != "error", f"{path.name}: cell {cell.get('id')} holds an error output"
    tags = [t for c in code_cells(path) for t in c.metadata.get("tags", [])]
    assert "injected-parameters" not in tags, f"{path.name}: papermill's injected cell must not be committed"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_published_number_is_typed_in_a_notebook(path):
    floats, ints = published_numbers()
    for cell in code_cells(path):
        for text, value in numeric_literals(cell.source):
            is_float = "." in text or "e" in text.lower()
            if (is_float and value in floats) or (not is_float and value in ints):
                raise AssertionError(
                    f"{path.name}: literal {text} in cell {cell.get('id')} equals a published number; "
                    "read it from kgdistill.study.published(...) instead"
                )


@pytest.mark.parametrize("path", MY_NOTEBOOKS, ids=lambda p: p.name)
def test_outputs_that_vary_are_marked_and_figures_are_in_ignored_cells(path):
    for cell in code_cells(path):
        ignored = cell.source.lstrip().startswith("# NBVAL_IGNORE_OUTPUT")
        has_image = any("image/png" in o.get("data", {}) for o in cell.outputs)
        prints_stamp = "stamp(" in cell.source
        if has_image or prints_stamp or "save_" in cell.source:
            assert ignored, f"{path.name}: cell {cell.get('id')} shows figures/provenance/paths; mark it # NBVAL_IGNORE_OUTPUT"
        if not ignored:
            text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
            assert "Warning" not in text, f"{path.name}: cell {cell.get('id')} prints a warning nbval would compare"


# --- published numbers --------------------------------------------------------------------------------
def test_published_numbers_are_numbers():
    """YAML 1.1 reads 6.0e6 as a string: every value must parse as a number."""

    def walk(node, where):
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        elif isinstance(node, str):
            assert not re.fullmatch(r"[-+]?[0-9.]+(e[-+]?[0-9]+)?", node), f"{where} is the string {node!r}"

    walk(study.published(), "published.yaml")
    for table in ("table1", "table2", "table3", "table4"):
        for ds, rows in study.published("metasd", table).items():
            if not isinstance(rows, dict) or ds in ("quoted",):
                continue
            for row, values in rows.items():
                for metric in study.METRICS:
                    assert 0 < values[metric] < 1, f"metasd/{table}/{ds}/{row}/{metric}"


def test_published_headline_numbers():
    """Spot checks against ../shared/README.md's summary of the MetaSD paper."""
    fb = study.published("metasd", "table1", "FB15k-237", "MetaSD")
    assert (fb["MRR"], fb["H@1"], fb["H@3"], fb["H@10"], fb["size"]) == (0.391, 0.300, 0.428, 0.571, 6_000_000)
    wn = study.published("metasd", "table1", "WN18RR", "MetaSD")
    assert (wn["MRR"], wn["H@1"], wn["H@3"], wn["H@10"], wn["size"]) == (0.491, 0.447, 0.504, 0.570, 15_000_000)
    assert study.published("metasd", "long_tail")["relations"] == 187


# --- profiles ------------------------------------------------------------------------------------------
def test_the_three_profiles_exist():
    assert {p.stem for p in PROFILES} >= {"smoke", "cpu", "paper"}


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.stem)
def test_profile_builds_valid_configs_for_every_table(path):
    profile = study.load_profile(path.stem)
    specs = study.all_specs(profile)
    assert specs
    for table in ("table1", "table2", "table3", "table4"):
        assert study.table_specs(profile, table), f"{path.stem}: tables.{table} is empty"
    for section in ("figure1", "footprint", "dataset_stats"):
        assert profile.get(section), f"{path.stem}: section {section} missing"
    kd = [s.config for s in specs if s.config.method == "kd"]
    assert kd and all(c.teacher and c.teacher["method"] == "baseline" for c in kd)
    # KD's teacher is the RP row's run of the same dataset and seed
    for spec in (s for s in specs if s.config.method == "kd"):
        rp = study.config_for(profile, spec.paper_dataset, profile["recipes"]["KD"]["teacher"], spec.seed)
        assert spec.config.teacher == rp.to_dict()
    for config in (s.config for s in specs):
        assert config.gamma == pytest.approx(0.9), f"{path.stem}: same pruning rate as the paper"


def test_smoke_profile_is_tiny_cpu_and_deterministic():
    profile = study.load_profile("smoke")
    assert Path(profile["runs_dir"]) == ROOT / "results" / "smoke" / "runs"
    assert profile["device"] == "cpu" and int(profile["threads"]) == 1
    configs = {s.run_name: s.config for s in study.all_specs(profile)}
    assert {c.dataset for c in configs.values()} == {"UMLS"}
    assert all(c.max_epochs <= 20 for c in configs.values())
    assert len(configs) <= 60, "every run costs CI time"


def test_paper_profile_follows_the_paper():
    profile = study.load_profile("paper")
    settings = study.published("metasd", "settings")
    metasd = study.config_for(profile, "FB15k-237", "MetaSD")
    assert metasd.rank == settings["rank"] and metasd.gamma == settings["gamma"]
    assert (metasd.alpha, metasd.beta, metasd.meta_lr, metasd.virtual_lr) == (
        settings["alpha"], settings["beta"], settings["meta_lr"], settings["virtual_lr"],
    )
    assert metasd.batch_size == 5000 and metasd.rp_weight == 4 and metasd.max_epochs == 300
    wn = study.config_for(profile, "WN18RR", "MetaSD")
    assert wn.batch_size == 1000 and wn.entity_weights and wn.rp_weight == 0


def test_cpu_profile_students_are_a_tenth_of_the_source():
    from kgdistill.datasets import canonical_name
    from kgdistill.models import build_model, rank_for_budget
    from kgdistill.pruning import kept_count

    profile = study.load_profile("cpu")
    stats = study.published("datasets", "stats")
    for ds in ("FB15k-237", "WN18RR"):
        assert study.trained_on(profile, ds) == canonical_name(ds)
        source = study.config_for(profile, ds, "MetaSD")
        kd = study.config_for(profile, ds, "KD")
        dml = study.config_for(profile, ds, "DML")
        assert kd.student_rank == dml.student_rank == 0  # equal, size-matched students
        assert kd.rank == dml.rank == source.rank
        n, r = stats[ds]["entities"], stats[ds]["relations"]
        dense = build_model(source.model, n, r, source.rank).parameter_counts()["dense"]
        budget = kept_count(dense, source.gamma)
        student = build_model(source.model, n, r, rank_for_budget(source.model, n, r, budget)).parameter_counts()["dense"]
        assert 0.08 * dense <= student <= budget <= 0.1 * dense + 1


def test_unknown_recipe_field_is_named():
    profile = study.load_profile("smoke")
    profile = json.loads(json.dumps(profile))
    profile["recipes"]["CP"]["rnak"] = 3
    with pytest.raises(ValueError, match="rnak"):
        study.config_for(profile, "FB15k-237", "CP")


# --- tables ---------------------------------------------------------------------------------------------
def fake_record(mrr: float, model: str = "model", nonzero: int = 100, rank: int = 8) -> dict:
    metrics = {"MRR": mrr, "MR": 1 / mrr, "H@1": mrr / 2, "H@3": mrr, "H@10": min(1.0, mrr * 1.5)}
    return {
        "selected_model": model,
        "config": RunConfig(rank=rank).to_dict(),
        "test": {model: {"all": metrics, "long_tail": metrics | {"triples": 3}}},
        "parameter_counts": {model: {"dense": nonzero, "nonzero": nonzero}},
        "provenance": {"device": "cpu (x, 1 threads)", "torch": "2", "git_commit": "abc", "date": "2026-01-01 00:00 UTC"},
    }


def test_results_table_mean_std_paper_and_difference():
    profile = study.load_profile("smoke")
    specs = [study.RunSpec("CP", "FB15k-237", "CP", seed, profile=profile) for seed in (0, 1)]
    records = {specs[0].run_name: fake_record(0.3), specs[1].run_name: fake_record(0.5)}
    paper = {"CP": {"MRR": 0.333, "H@1": 0.2, "H@3": 0.3, "H@10": 0.5, "size": 1000, "dim": 8}}
    frame = study.results_table(specs, records, paper, quoted={"TransE": "LibKGE"})
    assert list(frame.index) == ["TransE", "CP"]
    assert frame.loc["CP", "MRR"] == pytest.approx(0.4)
    assert frame.loc["CP", "MRR ±"] == pytest.approx(math.sqrt(0.02))
    assert frame.loc["CP", "MRR paper"] == 0.333 and frame.loc["CP", "MRR Δ"] == pytest.approx(0.4 - 0.333)
    assert frame.loc["CP", "size"] == 100 and frame.loc["CP", "seeds"] == 2
    assert math.isnan(frame.loc["TransE", "MRR"]) and frame.loc["TransE", "source"].startswith("quoted")
    text = study.format_table(frame)
    assert "0.4000" in text and "+0.0670" in text and "0.1414" in text


def test_format_table_is_fixed_precision():
    import pandas as pd

    frame = pd.DataFrame({"MRR": [0.123456789], "MRR Δ": [-0.01], "size": [1234567.0]}, index=["x"])
    assert study.format_table(frame).splitlines()[1].split() == ["x", "0.1235", "-0.0100", "1,234,567"]


def test_stamp_names_profile_device_torch_commit_and_date():
    text = study.stamp([fake_record(0.3)], "smoke")
    for part in ("profile smoke", "device cpu", "torch 2", "commit abc", "2026-01-01 00:00 UTC"):
        assert part in text


def test_save_table_and_figure_write_every_format(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    (tmp_path / "params").mkdir()
    (tmp_path / "pyproject.toml").write_text("")
    monkeypatch.setenv("KGDISTILL_ROOT", str(tmp_path))
    frame = pd.DataFrame({"MRR": [0.5]}, index=["CP"])
    paths = study.save_table(frame, "t", "demo", caption="caption | stamp")
    assert {p.name for p in paths.values()} == {"t.csv", "t.md", "t.tex"}
    assert paths["md"].read_text().startswith("caption | stamp")
    fig, ax = plt.subplots()
    _ = ax.plot([1, 2], [3, 4])
    paths = study.save_figure(fig, "f", "demo", footer="stamp")
    assert all(p.stat().st_size > 0 for p in paths.values()) and paths["pdf"].parent == tmp_path / "results" / "demo" / "figures"
    plt.close(fig)


# --- nbval: a changed trained number fails, timing noise does not --------------------------------------
def test_sanitizers_hide_run_specific_text_but_keep_metrics():
    varying = (
        "profile smoke | device cpu (x86_64, 1 threads) | torch 2.13.0+cpu | commit abdd90c3fdcc-dirty | "
        "2026-11-21 05:40 UTC .. 2026-11-21 05:41 UTC | 16 run record(s)\n"
        "done in 12.5 s; <Figure at 0x7f3a2b1c9d10> ['/work/main/results/smoke/tables/table1.csv']"
    )
    other = varying.replace("x86_64, 1", "aarch64, 2").replace("2.13.0+cpu", "2.13.1").replace("abdd90c3fdcc-dirty", "0123456789ab")
    other = other.replace("05:4", "17:2").replace("12.5 s", "3 s").replace("0x7f3a2b1c9d10", "0x55aa00ff1234").replace("/work/main", "/ci/build")
    assert sanitize(varying) == sanitize(other)
    metrics = "CP  measured 0.8725    0.3330 +0.5395 11,584  50,000,000  32     2,000     1\nMetaSD-CP: 0.1001 of CP's"
    assert sanitize(metrics) == metrics
    assert sanitize(metrics.replace("0.8725", "0.8726")) != sanitize(metrics)


def test_a_changed_learning_rate_changes_the_printed_metrics(tmp_path):
    """Two tiny smoke runs that differ only in the learning rate print different tables, also
    after sanitizing - i.e. nbval would flag a change in any trained number."""
    profile = study.load_profile("smoke")
    tiny = (("max_epochs", 2), ("eval_every", 1), ("rank", 4))
    specs = [
        study.RunSpec(f"lr {lr}", "FB15k-237", "CP", 0, overrides=tiny + (("learning_rate", lr),), profile=profile)
        for lr in (0.1, 0.05)
    ]
    study.setup(profile)
    records = study.run_all(specs, tmp_path, device="cpu")
    lines = study.format_table(study.results_table(specs, records)).splitlines()
    first, second = (line.split()[2:] for line in lines[1:3])  # the metric columns
    assert first != second
    assert sanitize(lines[1].replace("lr 0.1", "")) != sanitize(lines[2].replace("lr 0.05", ""))
    again = study.run_all(specs[:1], tmp_path / "again", device="cpu")  # same seed, fresh: same numbers
    assert again[specs[0].run_name]["test"]["model"]["all"] == records[specs[0].run_name]["test"]["model"]["all"]


# --- the runner ---------------------------------------------------------------------------------------------
def load_runner():
    spec = importlib.util.spec_from_file_location("reproduce", ROOT / "scripts" / "reproduce.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_runner_selects_notebooks_in_order_and_rejects_unknown_names():
    runner = load_runner()
    assert [p.name for p in runner.notebooks(None)][:6] == [p.name for p in MY_NOTEBOOKS]
    assert [p.name for p in runner.notebooks(["03", "01_main_results"])] == ["01_main_results.ipynb", "03_ablation.ipynb"]
    with pytest.raises(SystemExit, match="no notebook"):
        runner.notebooks(["99"])


def test_runner_stops_and_names_notebook_cell_and_error(tmp_path, monkeypatch, capsys):
    runner = load_runner()
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "smoke"\nshow_progress = False')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("raise ValueError('broken on purpose')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    (tmp_path / "notebooks").mkdir()
    nbformat.write(nb, tmp_path / "notebooks" / "98_broken.ipynb")
    nbformat.write(nb, tmp_path / "notebooks" / "99_never.ipynb")
    monkeypatch.setenv("KGDISTILL_ROOT", str(ROOT))
    monkeypatch.setattr(runner, "ROOT", tmp_path)
    monkeypatch.setattr(runner, "NOTEBOOKS", tmp_path / "notebooks")
    monkeypatch.chdir(tmp_path)
    assert runner.main(["--profile", "smoke"]) == 1
    err = capsys.readouterr().err
    assert "98_broken.ipynb" in err and "ValueError: broken on purpose" in err and "cell" in err
    assert (tmp_path / "results" / "smoke" / "notebooks" / "98_broken.ipynb").exists()
    assert not (tmp_path / "results" / "smoke" / "notebooks" / "99_never.ipynb").exists()


def test_retrain_since_retrains_older_records_once(tmp_path):
    """The runner's --retrain: records older than the start time train again, newer ones (made
    by an earlier notebook of the same --retrain series) are reused."""
    import time

    profile = study.load_profile("smoke")
    spec = study.RunSpec("CP", "FB15k-237", "CP", 0, overrides=(("max_epochs", 1), ("rank", 4)), profile=profile)
    first = study.run_all([spec], tmp_path, device="cpu")[spec.run_name]
    record = tmp_path / spec.run_name / "record.json"
    stamp = record.stat().st_mtime
    time.sleep(0.05)
    since = time.time()
    time.sleep(0.05)
    again = study.run_all([spec], tmp_path, device="cpu", retrain_since=since)[spec.run_name]
    retrained = record.stat().st_mtime
    assert retrained > stamp and again["test"] == first["test"]  # retrained, same numbers on CPU
    study.run_all([spec], tmp_path, device="cpu", retrain_since=since)
    assert record.stat().st_mtime == retrained  # already newer than the series start: reused
