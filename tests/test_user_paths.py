"""Folders and parameters a user names mean the same thing wherever they are given.

A relative ``runs_dir`` / ``results_dir`` / ``data_dir`` is relative to the repository root
(:func:`kgdistill.core.environment.repo_path`) whether it comes as a notebook parameter (the
facade, in a kernel whose working directory is ``notebooks/``), a script option or a profile;
a notebook parameter name that the notebook does not declare is refused, naming the closest one.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import nbformat
import pytest
import yaml

from kgdistill import study
from kgdistill.core.environment import ROOT_ENV, repo_path
from kgdistill.study import queue
from kgdistill.study.parameters import (
    UnknownParameterError,
    assigned_names,
    check_parameters,
    declared_parameters,
    injected_cells,
)
from kgdistill.study.profile import load_profile

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_PARAMETERS = ["profile", "show_progress", "results_dir", "runs_dir", "data_dir", "retrain_since", "retime"]


@pytest.fixture
def in_notebooks(monkeypatch):
    """The working directory of a Jupyter kernel (``notebooks/``), no ``KGDISTILL_ROOT``, and
    os.environ put back afterwards (the scripts export variables)."""
    saved = dict(os.environ)
    os.environ.pop(ROOT_ENV, None)
    monkeypatch.chdir(ROOT / "notebooks")
    yield ROOT / "notebooks"
    os.environ.clear()
    os.environ.update(saved)


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_under_test", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- relative folders: the repository root, from any working directory --------------------------------
def test_repo_path_is_relative_to_the_repository_root(in_notebooks, tmp_path):
    assert repo_path("results/cpu/runs") == ROOT / "results" / "cpu" / "runs"
    assert repo_path(Path("../shared/data")) == (ROOT.parent / "shared" / "data").resolve()  # a link resolved
    assert repo_path(tmp_path / "x") == tmp_path / "x"  # absolute: as it is
    assert repo_path(None) is None and repo_path("") is None


def test_a_relative_notebook_parameter_is_relative_to_the_root_not_to_notebooks(in_notebooks):
    S = study.Study("smoke", results_dir="scratch/try", runs_dir="results/cpu/runs", data_dir="data/archives")
    assert S.root == ROOT / "scratch" / "try"
    assert S.runs_dir == ROOT / "results" / "cpu" / "runs"
    assert S.data_dir == ROOT / "data" / "archives"
    assert not (in_notebooks / "results").exists() and not (in_notebooks / "scratch").exists()
    alone = study.Study("smoke", results_dir="scratch/try")
    assert alone.runs_dir == ROOT / "scratch" / "try" / "runs"


def test_a_relative_runs_dir_in_a_profile_is_relative_to_the_root(in_notebooks, tmp_path):
    raw = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())
    raw["runs_dir"] = "scratch/profile-runs"
    path = tmp_path / "elsewhere.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert load_profile(path)["runs_dir"] == str(ROOT / "scratch" / "profile-runs")
    assert study.Study(path).runs_dir == ROOT / "scratch" / "profile-runs"
    assert load_profile("smoke")["runs_dir"] == str(ROOT / "results" / "smoke" / "runs")


def test_train_runs_resolves_a_relative_runs_dir_against_the_root(in_notebooks, monkeypatch):
    seen = []
    monkeypatch.setattr(queue, "report_lines", lambda runs, runs_dir, unused=True: seen.append(runs_dir) or [])
    script = load_script("train_runs")
    assert script.main(["--profile", "smoke", "--list", "--runs-dir", "scratch/train-runs"]) == 0
    assert seen == [ROOT / "scratch" / "train-runs"]


def test_reproduce_resolves_relative_folders_against_the_root(in_notebooks, monkeypatch, capsys):
    runner = load_script("reproduce")
    calls = []
    monkeypatch.setattr(runner, "execute",
                        lambda nb, target, parameters, failed, **_: calls.append((target, parameters)))
    argv = ["--profile", "smoke", "--only", "00", "--results-dir", "scratch/repro", "--runs-dir", "results/cpu/runs",
            "-p", "data_dir", "data/archives"]
    assert runner.main(argv) == 0, capsys.readouterr().err
    [(target, parameters)] = calls
    assert target == ROOT / "scratch" / "repro" / "notebooks" / "00_datasets.ipynb"
    assert parameters["results_dir"] == str(ROOT / "scratch" / "repro")
    assert parameters["runs_dir"] == str(ROOT / "results" / "cpu" / "runs")
    assert parameters["data_dir"] == "data/archives"  # the kernel's Study makes it ROOT/data/archives


# --- notebook parameters: a name the notebook does not declare is refused -----------------------------
def test_every_notebook_declares_the_same_parameters_and_builds_the_study_right_after():
    """The kernel-side check lives in ``Study``: every notebook must build it in the cell after
    its parameters, passing every declared parameter."""
    for nb in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        assert declared_parameters(nb) == NOTEBOOK_PARAMETERS, nb.name
        cells = [c for c in nbformat.read(nb, as_version=4).cells if c.cell_type == "code"]
        index = next(i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", []))
        after = cells[index + 1].source
        assert "study.Study(profile" in after and all(f"{p}={p}" in after for p in NOTEBOOK_PARAMETERS[1:]), nb.name


def test_check_parameters_names_the_closest_declared_one():
    check_parameters(["results_dir", "PAPERMILL_INPUT_PATH"], NOTEBOOK_PARAMETERS, "nb")
    with pytest.raises(UnknownParameterError, match=r"'result_dir' -> 'results_dir'"):
        check_parameters(["profile", "result_dir"], NOTEBOOK_PARAMETERS, "nb")


def test_the_injected_cell_is_found_in_a_kernels_history():
    declared = "# Parameters (papermill injects new values below this cell)\nprofile = 'smoke'\nresults_dir = None\n"
    injected = '# Parameters\nresult_dir = "X"\n'
    history = ["", "import os", declared, injected, "S = study.Study(profile)"]
    assert injected_cells(history) == (declared, injected)
    assert assigned_names(declared) == ["profile", "results_dir"] and assigned_names(injected) == ["result_dir"]
    assert injected_cells(["", declared, "S = 1"]) is None  # not started by papermill with -p


def test_reproduce_refuses_an_undeclared_parameter_before_running_anything(in_notebooks, monkeypatch, capsys):
    runner = load_script("reproduce")
    calls = []
    monkeypatch.setattr(runner, "execute", lambda *args: calls.append(args))
    assert runner.main(["--profile", "smoke", "--results-dir", "scratch/typo", "-p", "dat_dir", "x"]) == 2
    err = capsys.readouterr().err
    assert "'dat_dir' -> 'data_dir'" in err and "00_datasets.ipynb" in err
    assert runner.main(["--profile", "smoke", "-p", "result_dir", "x"]) == 2
    assert "'result_dir' -> 'results_dir'" in capsys.readouterr().err
    assert runner.main(["--profile", "smoke", "-p", "results_dir", "x"]) == 2  # it has its own option
    assert "use --results-dir" in capsys.readouterr().err
    assert calls == [] and not (ROOT / "scratch" / "typo").exists()


def test_papermill_with_a_typo_stops_at_the_study_cell(tmp_path):
    """``papermill notebooks/00_datasets.ipynb out.ipynb -p result_dir X``: papermill itself only
    warns; the notebook's first cell after the parameters (``study.Study``) stops it."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    with pytest.raises(PapermillExecutionError) as caught:
        pm.execute_notebook(str(ROOT / "notebooks" / "00_datasets.ipynb"), str(tmp_path / "out.ipynb"),
                            parameters={"result_dir": str(tmp_path / "x")}, cwd=str(ROOT / "notebooks"),
                            kernel_name="python3", progress_bar=False)
    assert caught.value.ename == "UnknownParameterError"
    assert "'result_dir' -> 'results_dir'" in caught.value.evalue
    assert not (tmp_path / "x").exists()


def test_papermill_with_declared_names_passes_the_check(tmp_path):
    import papermill as pm

    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "smoke"\nresults_dir = None')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(
        "from kgdistill.study.parameters import check_injected_parameters\ncheck_injected_parameters()\nok = 1")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "in.ipynb")
    pm.execute_notebook(str(tmp_path / "in.ipynb"), str(tmp_path / "out.ipynb"), parameters={"results_dir": "r"},
                        kernel_name="python3", progress_bar=False, cwd=str(tmp_path))
