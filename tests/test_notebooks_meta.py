"""The study layer: notebook conventions, profiles, published numbers, tables, outputs, nbval sanitizers.

The notebooks themselves are re-executed by ``pytest --nbval notebooks/``; these tests check
what nbval cannot: that every notebook follows the conventions (tagged parameters cell, no paper
number typed in code, thin cells calling the facade), that the profiles build valid configs,
that saved tables and figures hold what was computed, and that the sanitizers hide
timings/dates/paths but never a trained number - so that a changed metric fails nbval.
Profile key checks are in ``test_profile.py``.
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
import yaml

from kgdistill import study
from kgdistill.metasd.config import RunConfig
from kgdistill.study.outputs import save_figure, save_table, save_tables, stamp
from kgdistill.study.profile import (
    RunSpec,
    all_specs,
    config_for,
    load_profile,
    profile_path,
    published,
    table_specs,
    trained_on,
)
from kgdistill.study.tables import METRICS, format_table, results_table, threshold_search, thresholds_for_count

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
#: the study profiles (a ``subset_of`` profile, e.g. gpu, trains part of one; tests/test_gpu_profile.py)
PROFILES = sorted(p for p in (ROOT / "params").glob("*.yaml") if "subset_of" not in yaml.safe_load(p.read_text()))
SANITIZE = ROOT / "tests" / "nbval_sanitize.cfg"


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
        walk(published("metasd", table))
    for table in ("table3", "table4", "table5", "table6"):
        walk(published("distile", table))
    return floats, ints


def numeric_literals(source: str) -> list[tuple[str, float]]:
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
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
def notebook_code(path: Path) -> str:
    return "\n".join(c.source for c in code_cells(path))


def test_every_profile_section_is_read_by_a_notebook_through_the_facade():
    """Each table, figure and experiment of the profile is opened by one facade call in some
    notebook (``S.results("table1")``, ``S.footprint()``, ``S.distile()``, ...), and no notebook
    rebuilds a table from specs and records itself."""
    code = {p.name: notebook_code(p) for p in NOTEBOOKS}
    profile = load_profile("smoke")
    calls = [f'S.results("{t}")' for t in profile["tables"]] + [
        'S.results("figure1")', "S.footprint()", "S.dataset_stats()", "S.long_tail()", "S.distile()",
        "S.official_code()",
    ]
    for call in calls:
        users = [name for name, text in code.items() if call in text]
        assert len(users) == 1, f"{call} should open exactly one notebook's section; found in {users}"
    for name, text in code.items():
        for inline in ("S.run(", "study.runs_frame(", "S.table(", "table1_rows(", "study.footprint(", "compare("):
            assert inline not in text, f"{name}: {inline}...) belongs in the facade (kgdistill.study)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_thin_library_calls(path):
    """A notebook imports the facade (``from kgdistill import study``, and ``figures``), never a
    module of the library; it draws no figure with matplotlib itself (the figure functions do),
    and saves several tables with one ``S.save_tables(...)``, not a loop of ``S.save_table``."""
    import ast

    for cell in code_cells(path):
        lines = [line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!"))]
        tree = ast.parse("\n".join(lines))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("kgdistill"):
                assert node.module == "kgdistill", f"{path.name}: cell {cell.get('id')} imports from {node.module}"
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("kgdistill.") for a in node.names), f"{path.name}: {cell.get('id')}"
            if isinstance(node, (ast.For, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
                calls = {n.func.attr for n in ast.walk(node)
                         if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
                assert "save_table" not in calls, f"{path.name}: cell {cell.get('id')} loops over save_table"
        assert "plt." not in cell.source, f"{path.name}: cell {cell.get('id')} draws inline; add a figure function"


def test_the_readme_lists_every_notebook():
    readme = (ROOT / "README.md").read_text()
    listed = re.findall(r"`notebooks/(\d\d_\w+\.ipynb)`", readme)
    assert listed == [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_code_cell_is_tagged_parameters_with_smoke_defaults(path):
    first = code_cells(path)[0]
    assert "parameters" in first.metadata.get("tags", []), f"{path.name}: first code cell must be tagged 'parameters'"
    namespace: dict = {}
    exec(first.source, namespace)  # noqa: S102 - the notebook's own parameter defaults
    assert namespace.get("profile") == "smoke", f"{path.name}: committed notebooks default to profile='smoke'"
    assert namespace.get("show_progress") is False, f"{path.name}: show_progress must default to False"
    for name in ("results_dir", "runs_dir", "data_dir"):
        assert name in namespace and namespace[name] is None, f"{path.name}: parameter {name} must default to None"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_committed_executed_without_errors(path):
    for cell in code_cells(path):
        assert cell.execution_count is not None, (
            f"{path.name}: cell {cell.get('id')} was not executed (run `make notebooks`)"
        )
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
                    "read it from kgdistill.published(...) instead"
                )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_outputs_that_vary_are_marked_and_figures_are_in_ignored_cells(path):
    for cell in code_cells(path):
        ignored = cell.source.lstrip().startswith("# NBVAL_IGNORE_OUTPUT")
        has_image = any("image/png" in o.get("data", {}) for o in cell.outputs)
        prints_stamp = "stamp(" in cell.source
        if has_image or prints_stamp or "save_" in cell.source:
            assert ignored, (
                f"{path.name}: cell {cell.get('id')} shows figures/provenance/paths; mark it # NBVAL_IGNORE_OUTPUT"
            )
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

    walk(published(), "published.yaml")
    for table in ("table1", "table2", "table3", "table4"):
        for ds, rows in published("metasd", table).items():
            if not isinstance(rows, dict) or ds in ("quoted",):
                continue
            for row, values in rows.items():
                for metric in METRICS:
                    assert 0 < values[metric] < 1, f"metasd/{table}/{ds}/{row}/{metric}"


def test_published_headline_numbers():
    """Spot checks against ../shared/README.md's summary of the MetaSD paper."""
    fb = published("metasd", "table1", "FB15k-237", "MetaSD")
    assert (fb["MRR"], fb["H@1"], fb["H@3"], fb["H@10"], fb["size"]) == (0.391, 0.300, 0.428, 0.571, 6_000_000)
    wn = published("metasd", "table1", "WN18RR", "MetaSD")
    assert (wn["MRR"], wn["H@1"], wn["H@3"], wn["H@10"], wn["size"]) == (0.491, 0.447, 0.504, 0.570, 15_000_000)
    assert published("metasd", "long_tail")["relations"] == 187
    copy = published("metasd", "long_tail")
    copy["relations"] = 0  # a deep copy: callers cannot change the published numbers
    assert published("metasd", "long_tail")["relations"] == 187
    with pytest.raises(KeyError, match="missing 'table9'"):
        published("metasd", "table9")


# --- profiles ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["smoke", "cpu", "paper"])
def test_the_three_profiles_load_by_name_or_path(name):
    by_name = load_profile(name)
    assert by_name["name"] == name and Path(by_name["_path"]) == ROOT / "params" / f"{name}.yaml"
    assert load_profile(ROOT / "params" / f"{name}.yaml")["runs_dir"] == by_name["runs_dir"]
    assert Path(by_name["runs_dir"]).is_absolute()


def test_an_unknown_profile_lists_the_known_ones():
    with pytest.raises(FileNotFoundError, match=r"known profiles: .*'smoke'"):
        profile_path("smokey")


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.stem)
def test_profile_builds_valid_configs_for_every_table(path):
    profile = load_profile(path.stem)
    specs = all_specs(profile)
    assert specs
    for table in ("table1", "table2", "table3", "table4"):
        assert table_specs(profile, table), f"{path.stem}: tables.{table} is empty"
    for section in ("figure1", "footprint", "dataset_stats"):
        assert profile.get(section), f"{path.stem}: section {section} missing"
    kd = [s.config for s in specs if s.config.method == "kd"]
    assert kd and all(c.teacher and c.teacher["method"] == "baseline" for c in kd)
    # KD's teacher is the RP row's run of the same dataset and seed
    for spec in (s for s in specs if s.config.method == "kd"):
        rp = config_for(profile, spec.paper_dataset, profile["recipes"]["KD"]["teacher"], spec.seed)
        assert spec.config.teacher == rp.to_dict()
    for config in (s.config for s in specs):
        assert config.gamma == pytest.approx(0.9), f"{path.stem}: same pruning rate as the paper"


def test_smoke_profile_is_tiny_cpu_and_deterministic():
    profile = load_profile("smoke")
    assert Path(profile["runs_dir"]) == ROOT / "results" / "smoke" / "runs"
    assert profile["device"] == "cpu" and int(profile["threads"]) == 1
    configs = {s.run_name: s.config for s in all_specs(profile)}
    assert {c.dataset for c in configs.values()} == {"UMLS"}
    assert all(c.max_epochs <= 20 for c in configs.values())
    assert len(configs) <= 60, "every run costs CI time"


def test_paper_profile_follows_the_paper():
    profile = load_profile("paper")
    settings = published("metasd", "settings")
    metasd = config_for(profile, "FB15k-237", "MetaSD")
    assert metasd.rank == settings["rank"] and metasd.gamma == settings["gamma"]
    assert (metasd.alpha, metasd.beta, metasd.meta_lr, metasd.virtual_lr) == (
        settings["alpha"], settings["beta"], settings["meta_lr"], settings["virtual_lr"],
    )
    assert metasd.batch_size == 5000 and metasd.rp_weight == 4 and metasd.max_epochs == 300
    wn = config_for(profile, "WN18RR", "MetaSD")
    assert wn.batch_size == 1000 and wn.entity_weights and wn.rp_weight == 0


def test_cpu_profile_students_are_a_tenth_of_the_source():
    from kgdistill.core.datasets import canonical_name
    from kgdistill.core.models import build_model, rank_for_budget
    from kgdistill.core.pruning import kept_count

    profile = load_profile("cpu")
    stats = published("datasets", "stats")
    for ds in ("FB15k-237", "WN18RR"):
        assert trained_on(profile, ds) == canonical_name(ds)
        source = config_for(profile, ds, "MetaSD")
        kd = config_for(profile, ds, "KD")
        dml = config_for(profile, ds, "DML")
        assert kd.student_rank == dml.student_rank == 0  # equal, size-matched students
        assert kd.rank == dml.rank == source.rank
        n, r = stats[ds]["entities"], stats[ds]["relations"]
        dense = build_model(source.model, n, r, source.rank).parameter_counts()["dense"]
        budget = kept_count(dense, source.gamma)
        student = build_model(source.model, n, r,
                              rank_for_budget(source.model, n, r, budget)).parameter_counts()["dense"]
        assert 0.08 * dense <= student <= budget <= 0.1 * dense + 1


def test_unknown_recipe_field_is_named():
    profile = load_profile("smoke")
    profile = json.loads(json.dumps(profile))
    profile["recipes"]["CP"]["rnak"] = 3
    with pytest.raises(ValueError, match="rnak"):
        config_for(profile, "FB15k-237", "CP")


# --- tables ---------------------------------------------------------------------------------------------
def fake_record(mrr: float, model: str = "model", nonzero: int = 100, rank: int = 8) -> dict:
    metrics = {"MRR": mrr, "MR": 1 / mrr, "H@1": mrr / 2, "H@3": mrr, "H@10": min(1.0, mrr * 1.5)}
    return {
        "run_name": f"baseline-FB15k-237-ComplEx-r{rank}-s0-fake",
        "selected_model": model,
        "dims": {model: rank},
        "config": RunConfig(rank=rank).to_dict(),
        "test": {model: {"all": metrics, "long_tail": metrics | {"triples": 3}}},
        "parameter_counts": {model: {"dense": nonzero, "nonzero": nonzero}},
        "provenance": {"device": "cpu (x, 1 threads)", "torch": "2", "git_commit": "abc",
                       "date": "2026-01-01 00:00 UTC"},
    }


def test_results_table_mean_std_paper_and_difference():
    profile = load_profile("smoke")
    specs = [RunSpec("CP", "FB15k-237", "CP", seed, profile=profile) for seed in (0, 1)]
    records = {specs[0].run_name: fake_record(0.3), specs[1].run_name: fake_record(0.5)}
    paper = {"CP": {"MRR": 0.333, "H@1": 0.2, "H@3": 0.3, "H@10": 0.5, "size": 1000, "dim": 8}}
    frame = results_table(specs, records, paper, quoted={"TransE": "LibKGE"})
    assert list(frame.index) == ["TransE", "CP"]
    assert frame.loc["CP", "MRR"] == pytest.approx(0.4)
    assert frame.loc["CP", "MRR ±"] == pytest.approx(math.sqrt(0.02))
    assert frame.loc["CP", "MRR paper"] == 0.333 and frame.loc["CP", "MRR Δ"] == pytest.approx(0.4 - 0.333)
    assert frame.loc["CP", "size"] == 100 and frame.loc["CP", "seeds"] == 2
    assert math.isnan(frame.loc["TransE", "MRR"]) and frame.loc["TransE", "source"].startswith("quoted")
    text = format_table(frame)
    assert "0.4000" in text and "+0.0670" in text and "0.1414" in text


def test_format_table_is_fixed_precision():
    import pandas as pd

    frame = pd.DataFrame({"MRR": [0.123456789], "MRR Δ": [-0.01], "size": [1234567.0]}, index=["x"])
    assert format_table(frame).splitlines()[1].split() == ["x", "0.1235", "-0.0100", "1,234,567"]


def test_stamp_names_profile_device_torch_commit_and_date():
    text = stamp([fake_record(0.3)], "smoke")
    for part in ("profile smoke", "device cpu", "torch 2", "commit abc", "2026-01-01 00:00 UTC"):
        assert part in text


@pytest.fixture
def demo_root(tmp_path, monkeypatch) -> Path:
    """A scratch repository root: outputs of profile ``demo`` go to ``<tmp>/results/demo``."""
    import matplotlib

    matplotlib.use("Agg")
    (tmp_path / "params").mkdir()
    (tmp_path / "pyproject.toml").write_text("")
    monkeypatch.setenv("KGDISTILL_ROOT", str(tmp_path))
    return tmp_path


def test_a_saved_table_round_trips_and_states_its_caption(demo_root):
    import pandas as pd

    frame = pd.DataFrame(
        {"MRR": [0.123456789, 0.5], "MRR Δ": [-0.01, float("nan")], "size": [1_234_567, 42],
         "source": ["measured", "quoted"]},
        index=["CP", "TransE"],
    )
    paths = save_table(frame, "t", "demo", caption="caption | stamp", note="a note")
    assert paths["csv"].parent == demo_root / "results" / "demo" / "tables"
    back = pd.read_csv(paths["csv"], index_col=0)
    assert list(back.index) == ["CP", "TransE"] and list(back.columns) == list(frame.columns)
    assert back["MRR"].tolist() == [0.123456789, 0.5]  # %.10g (CSV_FLOAT): sizes and metrics as computed
    assert back["size"].tolist() == [1_234_567, 42] and math.isnan(back.loc["TransE", "MRR Δ"])
    md = paths["md"].read_text()
    assert md.startswith("caption | stamp\n\n") and md.rstrip().endswith("a note")
    assert "| 0.1235 |" in md and "| -0.0100 |" in md and "| 1,234,567 |" in md  # the formatted table
    assert "source" not in md and "| TransE * |" in md and "* TransE: quoted, not trained here." in md
    tex = paths["tex"].read_text()
    assert "\\caption{caption $|$ stamp}" in tex and "\\label{tab:t}" in tex and "0.1235" in tex
    first = {ext: path.read_bytes() for ext, path in paths.items()}
    save_table(frame, "t", "demo", caption="caption | stamp", note="a note")
    assert {ext: path.read_bytes() for ext, path in paths.items()} == first  # same table, same bytes


def test_a_saved_table_with_row_levels_prints_one_label_per_row(demo_root):
    import pandas as pd

    index = pd.MultiIndex.from_tuples([("TransE", 8, "DS"), ("TransE", 8, "no-DS")], names=["model", "dim", "method"])
    paths = save_table(pd.DataFrame({"MRR": [0.1, 0.2]}, index=index), "levels", "demo")
    md, tex = paths["md"].read_text(), paths["tex"].read_text()
    assert "('" not in md and "('" not in tex  # no Python tuples
    assert " TransE / 8 / DS | 0.1000 |" in md and "model / dim / method |" in md
    assert "TransE / 8 / no-DS & 0.2000" in tex
    back = pd.read_csv(paths["csv"], index_col=[0, 1, 2])  # the CSV keeps the levels as columns
    assert list(back.index.names) == ["model", "dim", "method"]


def test_save_tables_names_each_table_after_its_key_and_prints_its_files(demo_root, capsys):
    import pandas as pd

    frames = {("UMLS", 10): pd.DataFrame({"MRR": [0.1]}, index=["CP"]),
              ("Kinship", 20): pd.DataFrame({"MRR": [0.2]}, index=["CP"])}
    out = save_tables(frames, "t_{key[0]}_r{key[1]}", "demo", caption="rank {key[1]}, {title}",
                      titles=lambda key: key[0].lower(), footer="stamp", note="a note")
    folder = demo_root / "results" / "demo" / "tables"
    assert list(out) == list(frames)
    assert out[("UMLS", 10)] == {ext: folder / f"t_UMLS_r10.{ext}" for ext in ("csv", "md", "tex")}
    printed = capsys.readouterr().out
    # what the notebooks' loop printed: one sorted list of the table's files per line
    assert printed == "".join(f"{sorted(str(p) for p in paths.values())}\n" for paths in out.values())
    assert out[("Kinship", 20)]["md"].read_text().startswith("rank 20, kinship\n\nstamp\n\n")
    # the same files as save_table with the caption and footer joined (the LaTeX label is the name)
    single = save_table(frames[("UMLS", 10)], "single", "demo", caption="rank 10, umls\n\nstamp", note="a note")
    assert {ext: p.read_text().replace("tab:single", "tab:t_UMLS_r10") for ext, p in single.items()} == {
        ext: p.read_text() for ext, p in out[("UMLS", 10)].items()}
    titled = save_tables({"FB": frames[("UMLS", 10)]}, "x_{key}", "demo", caption="{title} {{not a field}}",
                         titles={"FB": "FB15k-237"}, show=False)
    assert titled["FB"]["md"].read_text().startswith("FB15k-237 {not a field}\n\n|") and capsys.readouterr().out == ""
    named = save_tables({"a": frames[("UMLS", 10)]}, lambda key: f"fn_{key}", "demo", caption=lambda key: f"cap {key}")
    assert named["a"]["csv"] == folder / "fn_a.csv" and named["a"]["md"].read_text().startswith("cap a\n\n|")


def test_save_tables_of_one_frame_takes_name_and_caption_as_they_are(demo_root, capsys):
    import pandas as pd

    out = save_tables(pd.DataFrame({"MRR": [0.1]}, index=["CP"]), "one_{key}", "demo", caption="Sec. {4.2}")
    assert list(out) == ["one_{key}"] and out["one_{key}"]["md"].read_text().startswith("Sec. {4.2}\n\n|")
    assert capsys.readouterr().out == f"{sorted(str(p) for p in out['one_{key}'].values())}\n"
    with pytest.raises(TypeError, match="one frame"):
        save_tables(pd.DataFrame({"MRR": [0.1]}), lambda key: "x", "demo")


def test_study_save_tables_writes_and_prints_what_the_notebooks_loop_did(tmp_path, capsys):
    """``S.save_tables(tables, "table1_{key}", records, caption="... {title}", titles=S.title)``
    against the loop the notebooks had: the same files and bytes, the same printed lines."""
    import pandas as pd

    tables = {ds: pd.DataFrame({"MRR": [mrr]}, index=["CP"]) for ds, mrr in (("FB15k-237", 0.1), ("WN18RR", 0.2))}
    records = [fake_record(0.3)]
    loop = study.Study("smoke", results_dir=tmp_path / "loop")
    for ds, frame in tables.items():
        paths = loop.save_table(frame, f"table1_{ds}", records, caption=f"Table 1, {loop.title(ds)}")
        print(sorted(str(p) for p in paths.values()))
    printed_by_loop = capsys.readouterr().out
    S = study.Study("smoke", results_dir=tmp_path / "call")
    out = S.save_tables(tables, "table1_{key}", records, caption="Table 1, {title}", titles=S.title)
    assert capsys.readouterr().out == printed_by_loop.replace(str(tmp_path / "loop"), str(tmp_path / "call"))
    for ds in tables:
        for ext, path in out[ds].items():
            assert path.read_bytes() == (tmp_path / "loop" / "tables" / f"table1_{ds}.{ext}").read_bytes()
    assert "(trained on UMLS as a stand-in)" in out["WN18RR"]["md"].read_text()  # the title, from S.title
    assert study.save_tables is save_tables


def test_a_saved_figure_is_a_valid_png_and_pdf_with_its_footer(demo_root):
    import matplotlib.image
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    _ = ax.plot([1, 2], [3, 4])
    paths = save_figure(fig, "f", "demo", footer="profile demo | stamp")
    plt.close(fig)
    assert paths["png"].parent == demo_root / "results" / "demo" / "figures"
    png = paths["png"].read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    pixels = matplotlib.image.imread(paths["png"])
    assert pixels.ndim == 3 and pixels.shape[0] >= 250 and pixels.shape[1] >= 400  # 3 x 2 in at 150 dpi
    assert pixels.std() > 0  # something is drawn
    pdf = paths["pdf"].read_bytes()
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    assert b"CreationDate" not in pdf  # no timestamp: the same figure gives the same file
    assert any(t.get_text() == "profile demo | stamp" for t in fig.texts)  # the provenance footer
    fig2, ax2 = plt.subplots(figsize=(3, 2))
    _ = ax2.plot([1, 2], [3, 4])
    again = save_figure(fig2, "g", "demo", footer="profile demo | stamp")
    plt.close(fig2)
    assert again["png"].read_bytes() == png and again["pdf"].read_bytes() == pdf


# --- nbval: a changed trained number fails, timing noise does not --------------------------------------
def test_sanitizers_hide_run_specific_text_but_keep_metrics():
    varying = (
        "profile smoke | device cpu (x86_64, 1 threads) | torch 2.13.0+cpu | commit abdd90c3fdcc-dirty | "
        "2026-11-21 05:40 UTC .. 2026-11-21 05:41 UTC | 16 run record(s)\n"
        "done in 12.5 s; <Figure at 0x7f3a2b1c9d10> ['/work/main/results/smoke/tables/table1.csv']"
    )
    other = (varying.replace("x86_64, 1", "aarch64, 2").replace("2.13.0+cpu", "2.13.1")
             .replace("abdd90c3fdcc-dirty", "0123456789ab"))
    other = (other.replace("05:4", "17:2").replace("12.5 s", "3 s").replace("0x7f3a2b1c9d10", "0x55aa00ff1234")
             .replace("/work/main", "/ci/build"))
    assert sanitize(varying) == sanitize(other)
    metrics = "CP  measured 0.8725    0.3330 +0.5395 11,584  50,000,000  32     2,000     1\nMetaSD-CP: 0.1001 of CP's"
    assert sanitize(metrics) == metrics
    assert sanitize(metrics.replace("0.8725", "0.8726")) != sanitize(metrics)


def test_a_changed_learning_rate_changes_the_printed_metrics(tmp_path):
    """Two tiny smoke runs that differ only in the learning rate print different tables, also
    after sanitizing - i.e. nbval would flag a change in any trained number."""
    profile = load_profile("smoke")
    tiny = (("max_epochs", 2), ("eval_every", 1), ("rank", 4))
    specs = [
        RunSpec(f"lr {lr}", "FB15k-237", "CP", 0, overrides=tiny + (("learning_rate", lr),), profile=profile)
        for lr in (0.1, 0.05)
    ]
    study.setup(profile)
    records = study.run_all(specs, tmp_path, device="cpu")
    lines = format_table(results_table(specs, records)).splitlines()
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
    assert [p.name for p in runner.notebooks(None)] == [p.name for p in NOTEBOOKS]
    assert ([p.name for p in runner.notebooks(["03", "01_main_results"])]
            == ["01_main_results.ipynb", "03_ablation.ipynb"])
    with pytest.raises(SystemExit, match="no notebook"):
        runner.notebooks(["99"])


def test_runner_stops_and_names_notebook_cell_and_error(tmp_path, monkeypatch, capsys):
    runner = load_runner()
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "smoke"\nshow_progress = False')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("x = 1"),
                nbformat.v4.new_code_cell("raise ValueError('broken on purpose')")]
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
    executed = tmp_path / "results" / "smoke" / "notebooks"
    assert "98_broken.failed.ipynb" in err and (executed / "98_broken.failed.ipynb").exists()
    assert not (executed / "98_broken.ipynb").exists() and not (executed / "99_never.ipynb").exists()


def test_retrain_since_retrains_older_records_once(tmp_path):
    """The runner's --retrain: records older than the start time train again, newer ones (made
    by an earlier notebook of the same --retrain series) are reused."""
    import time

    profile = load_profile("smoke")
    spec = RunSpec("CP", "FB15k-237", "CP", 0, overrides=(("max_epochs", 1), ("rank", 4)), profile=profile)
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


# --- the facade: one call per notebook section ------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """The smoke profile shrunk to seconds: rank 8, one epoch, one seed, Table 3 with two rows and
    the added DistilE row, a one-rank Figure 1, the footprint, UMLS's long tail."""
    import yaml

    folder = tmp_path_factory.mktemp("tiny")
    raw = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())
    raw.update(runs_dir=str(folder / "runs"), seeds=[0])
    raw["common"].update(rank=8, max_epochs=1, eval_every=1)
    raw["tables"] = {"table3": {"datasets": ["FB15k-237"], "rows": {"MetaSD": "MetaSD", "w/o P&M": "DML"}}}
    raw["figure1"] = {"dataset": "FB15k-237", "curves": ["DURA"], "ranks": [2], "students": ["MetaSD"]}
    raw["footprint"].update(queries=50, repeats=1)
    raw["dataset_stats"]["long_tail"] = {"dataset": "UMLS", "threshold": 150}
    raw["distile_in_table1"].update(table="table3", config={"max_epochs": 2, "stage1_epochs": 1, "eval_every": 1})
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    # in-process: torch was imported without the smoke profile's env, so its pins cannot be in force
    return study.Study(path, results_dir=folder, enforce_env=False)


def test_results_is_the_sections_specs_records_runs_and_tables(tiny_study):
    S = tiny_study
    R = S.results("table3")
    rows = [s.row for s in R.specs]
    assert rows == ["MetaSD", "w/o P&M", S.profile["distile_in_table1"]["row"]]  # the added row joins table3
    assert set(R.records) == {s.run_name for s in R.specs} | {R.added.records[n]["run_name"] for n in R.added.records}
    assert len(R.records) == 4  # MetaSD, DML, the DistilE student and its teacher
    assert list(R.runs.index) == rows and list(R.tables) == ["FB15k-237"]
    expected = S.table("table3", R.records, extra=R.added.specs)["FB15k-237"]
    assert R.tables["FB15k-237"].equals(expected) and list(expected.index) == rows
    assert R.describe().splitlines()[0] == "3 model(s) read from 4 run(s)"
    assert R.describe().splitlines()[1:] == format_table(R.runs.drop(columns=["run", "s/epoch"])).splitlines()
    assert all(name in R.timings() for name in R.runs["run"])
    again = S.results("table3")  # the records are reused: the same numbers
    assert again.tables["FB15k-237"].equals(R.tables["FB15k-237"])


def test_results_of_figure1_and_the_buckets(tiny_study):
    S = tiny_study
    R = S.results("figure1")
    points = R.tables["figure1"]
    assert list(points.index) == ["DURA r2", "MetaSD"] and points.loc["DURA r2", "dim"] == 2
    assert points.loc["MetaSD", "size"] == R.records[R.specs[-1].run_name]["parameter_counts"]["student"]["nonzero"]
    S.profile["tables"]["table3"]["buckets"] = [0, 150]
    buckets = S.buckets(S.results("table3"))["FB15k-237"]
    assert list(buckets.index) == ["[0, 150)", ">= 150"] and buckets["relations"].sum() > 0


def test_footprint_exports_the_student_with_the_recorded_mrr(tiny_study):
    fp = tiny_study.footprint()
    nonzero = fp.record["parameter_counts"]["student"]["nonzero"]
    assert fp.describe() == (f"MetaSD on FB15k-237 (trained on UMLS as a stand-in) - student non-zero parameters: "
                             f"{nonzero:,}")
    frame = fp.measure()
    assert list(frame["parameters"])[1:] == [nonzero, nonzero]
    lines = fp.summary().splitlines()
    assert lines[-2] == "exported student's test MRR minus the recorded student MRR: +0.0000"
    assert lines[-1] == f"student keeps {nonzero / frame['parameters'].iloc[0]:.4f} of the source's parameters"


def test_footprint_writes_nothing_into_a_read_only_runs_folder(tiny_study, tmp_path):
    """Notebook 05 on a shared, read-only runs folder: the sparse export (a derived file) goes to
    ``<results_dir>/derived/<run>/sparse``; the runs folder is only read. As root, chmod does not
    stop writes: the check by path below still does."""
    import os
    import stat

    tiny_study.footprint().measure()  # the run and its weights exist
    runs = tiny_study.runs_dir

    def snapshot():
        return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in runs.rglob("*")}

    before = snapshot()
    modes = {p: p.stat().st_mode for p in [runs, *runs.rglob("*")] if p.is_dir()}
    S = study.Study(tiny_study.profile["_path"], results_dir=tmp_path / "out", runs_dir=runs, enforce_env=False)
    try:
        for folder in modes:
            folder.chmod(stat.S_IMODE(modes[folder]) & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        if os.geteuid() != 0:
            with pytest.raises(PermissionError):
                (runs / "probe").write_text("x")
        fp = S.footprint()
        frame = fp.measure()
    finally:
        for folder, mode in modes.items():
            folder.chmod(mode)
    assert snapshot() == before  # nothing written, nothing touched, in the runs folder
    assert fp.export_dir == tmp_path / "out" / "derived" / fp.spec.run_name / "sparse"
    assert (fp.export_dir / "student.pt").stat().st_size == frame["disk bytes"].iloc[1]


def test_threshold_search_brackets_the_paper_count():
    counts = [5, 1, 9, 3, 3, 20]
    assert thresholds_for_count(counts, 3) == (4, 5)  # 1, 3, 3 have fewer than t for 4 <= t <= 5
    assert thresholds_for_count(counts, 6) == (21, float("inf"))
    assert threshold_search(counts, 3, 3).splitlines() == [
        "3 relations have fewer than t training triples for 4 <= t <= 5",
        "relations with < 3 triples: 1; with <= 3: 3",
    ]


def test_long_tail_and_dataset_stats(tiny_study):
    lt = tiny_study.long_tail()
    assert lt.heading() == f"UMLS, threshold 150 training triples (paper: {lt.paper['threshold']})"
    assert list(lt.frame.index) == ["measured", "paper", "Δ"]
    assert lt.frame.loc["measured", "relations"] == sum(c < 150 for c in lt.counts)
    with pytest.raises(ValueError, match="cannot select 187 of 46 relations"):  # UMLS is smaller than the paper's tail
        lt.threshold_search()
    stats, mismatches = tiny_study.dataset_stats()
    assert mismatches.empty and set(stats.index) == set(tiny_study.section("dataset_stats")["datasets"])
