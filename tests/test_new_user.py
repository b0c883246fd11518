"""The project as a new user meets it: a clean clone, the README, no make.

A module fixture copies the repository's files (what a clone of the working tree holds) into a
scratch folder with the benchmark archives in ``../shared/data`` beside it and this test run's
virtual environment as its ``.venv`` (standing in for the README's ``python3 -m venv .venv &&
.venv/bin/pip install -e .[dev]``), then runs commands there in a plain environment: no
``KGC_DATA_DIR``, no CPU-kernel pins, no ``KGDISTILL_ROOT``. Kernels start in a few seconds each;
the README's notebook takes about a minute.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from kgdistill.core.environment import NUMERIC_ENV

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def readme_block(heading: str) -> list[str]:
    """The commands of the first ``bash`` block under ``heading``, one per line (continuations joined)."""
    text = README.read_text()
    section = text[text.index(heading):]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    data = Path(os.environ["KGC_DATA_DIR"])  # tests/conftest.py: the shared archives
    if not any(data.glob("*.tar.gz")):
        pytest.skip(f"no benchmark archives in {data}")
    base = tmp_path_factory.mktemp("new_user")
    repo = base / "kgdistill"
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    git = ["git", "-c", "user.name=new user", "-c", "user.email=user@example.org"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "clone"]):
        subprocess.run(git + command, cwd=repo, check=True, capture_output=True)
    (base / "shared").mkdir()
    (base / "shared" / "data").symlink_to(data)
    (repo / ".venv").symlink_to(Path(sys.prefix))  # this test run's virtual environment
    return repo


def plain_env(repo: Path) -> dict[str, str]:
    """The user's environment: nothing this project's tooling would have set."""
    drop = {*NUMERIC_ENV, "KGC_DATA_DIR", "KGDISTILL_ROOT", "PYTHONPATH", "MPLBACKEND"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONPATH"] = str(repo / "lib")  # the clone's library (the venv's editable install is the checkout's)
    return env


def shell(repo: Path, script: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", "umask 022\n" + script], cwd=repo, env=plain_env(repo),
                          capture_output=True, text=True, timeout=timeout)


def untracked(repo: Path) -> list[str]:
    """What a run left in the clone that git would show (outputs under results/ are ignored or absent)."""
    status = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True).stdout
    return [line for line in status.splitlines() if line != "?? .venv"]  # the stand-in venv is a symlink


def listing(folder: Path) -> set[str]:
    """Every path under ``folder`` (the clone's ``results/``: compared before and after a run)."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def modes(folder: Path) -> set[int]:
    return {p.stat().st_mode & 0o777 for p in folder.rglob("*") if p.is_file()}


def test_the_readme_runs_a_notebook_by_hand_as_written(clone):
    cd, venv, *commands = readme_block("## Run a notebook by hand")
    assert cd == "cd kgdistill"  # the folder of the copy (no public URL to clone from); the fixture starts there
    assert venv == "python3 -m venv .venv && .venv/bin/pip install -e .[dev]"  # the Makefile's recipe
    assert "$(VENV)/bin/pip install -e .[dev]" in (ROOT / "Makefile").read_text()
    done = shell(clone, "\n".join(commands))
    assert done.returncode == 0, done.stderr[-3000:]
    executed = nbformat.read(clone / "results" / "smoke" / "notebooks" / "00_datasets.ipynb", as_version=4)
    assert not [o for c in executed.cells for o in c.get("outputs", []) if o.output_type == "error"]
    tables = clone / "results" / "smoke" / "tables"
    assert (tables / "dataset_stats.tex").is_file() and (clone / "results" / "smoke" / "figures").is_dir()
    assert modes(clone / "results" / "smoke") == {0o644}  # the user's umask, records and tables alike
    assert untracked(clone) == []


def test_the_readmes_commands_need_no_activated_environment():
    """Every command of the README's ``bash`` blocks names ``.venv/bin/...`` (or make, git, env, ...):
    a bare ``python``/``papermill``/``jupyter`` would be another program without ``source .venv/bin/activate``;
    the one exception is the cluster's own Python (its line says so)."""
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = line.split("#")[0].split()
            bare = [w for w in words if w in ("python", "papermill", "jupyter", "pytest", "ruff", "pip")]
            assert not bare or "cluster's Python" in line or "--launcher submitit" in line, line
    assert "<this repository's URL>" not in README.read_text()
    assert "KGDISTILL_ROOT" in README.read_text()


def test_plain_papermill_without_the_pins_refuses_to_train(clone, tmp_path):
    """A notebook run without the smoke profile's env gets no record with other numbers."""
    done = shell(clone, f".venv/bin/papermill notebooks/01_main_results.ipynb {tmp_path}/01.ipynb "
                        f"-p profile smoke -p results_dir {tmp_path}/root", timeout=600)
    assert done.returncode != 0
    executed = nbformat.read(tmp_path / "01.ipynb", as_version=4)
    errors = [o for c in executed.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert errors and errors[0].ename == "NumericEnvironmentError" and "ATEN_CPU_CAPABILITY" in errors[0].evalue
    assert not list((tmp_path / "root").rglob("record.json"))
    assert untracked(clone) == []


def test_reproduce_with_a_profile_file_writes_only_under_the_chosen_root(clone, tmp_path):
    profile = yaml.safe_load((clone / "params" / "smoke.yaml").read_text())
    profile["dataset_stats"].update(datasets=["FB15k-237", "UMLS"], frequency_plots=["FB15k-237"])  # fewer archives
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump(profile, sort_keys=False))
    out = tmp_path / "out"
    before = listing(clone / "results")
    done = shell(clone, f".venv/bin/python scripts/reproduce.py --profile {mine} --only 00 --results-dir {out}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "notebooks" / "00_datasets.ipynb").is_file() and (out / "tables" / "dataset_stats.csv").is_file()
    assert (out / "figures" / "relation_frequency.png").is_file()
    executed = nbformat.read(out / "notebooks" / "00_datasets.ipynb", as_version=4)
    assert "profile: mine (mine.yaml)" in "".join(o.get("text", "") for c in executed.cells
                                                  for o in c.get("outputs", []))
    assert modes(out) == {0o644}
    assert listing(clone / "results") == before and untracked(clone) == []  # nothing of the run under results/
    for noise in ("Kernel is running over TCP", "KeyboardInterrupt", "Traceback"):
        assert noise not in done.stdout + done.stderr


@pytest.mark.parametrize("args, message", [
    ("--profile smoke --runs-dir {tmp}/runs", "--runs-dir {tmp}/runs moves only the run records"),
    ("--profile {tmp}/missing.yaml", "profile '{tmp}/missing.yaml' not found"),
])
def test_a_bad_command_is_refused_in_one_line_before_anything_is_written(clone, tmp_path, args, message):
    before = listing(clone / "results")
    done = shell(clone, f".venv/bin/python scripts/reproduce.py {args.format(tmp=tmp_path)}", timeout=300)
    assert done.returncode == 2 and message.format(tmp=tmp_path) in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 2
    assert listing(clone / "results") == before and untracked(clone) == []
    assert list(tmp_path.iterdir()) == []


def test_runs_dir_needs_a_root_in_the_notebooks_too():
    from kgdistill.study import Study

    with pytest.raises(ValueError, match="runs_dir='x' moves only the run records.*results_dir"):
        Study("smoke", runs_dir="x")


@pytest.fixture
def runner(tmp_path, monkeypatch):
    """scripts/reproduce.py with its notebooks folder in ``tmp_path/notebooks``."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("reproduce_new_user", ROOT / "scripts" / "reproduce.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (tmp_path / "notebooks").mkdir()
    monkeypatch.setenv("KGDISTILL_ROOT", str(ROOT))
    monkeypatch.setattr(module, "ROOT", tmp_path)
    monkeypatch.setattr(module, "NOTEBOOKS", tmp_path / "notebooks")
    return module


def write_notebook(path: Path, *cells: str) -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "smoke"\nshow_progress = False\nresults_dir = None')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, *(nbformat.v4.new_code_cell(c) for c in cells)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_a_failed_notebook_keeps_the_last_good_copy(runner, tmp_path, capfd):
    source = tmp_path / "notebooks" / "98_flaky.ipynb"
    executed = tmp_path / "results" / "smoke" / "notebooks"
    write_notebook(source, "print('good')")
    assert runner.main(["--profile", "smoke"]) == 0
    good = (executed / "98_flaky.ipynb").read_bytes()
    write_notebook(source, "raise ValueError('broken on purpose')")
    assert runner.main(["--profile", "smoke"]) == 1
    out = capfd.readouterr()
    assert (executed / "98_flaky.ipynb").read_bytes() == good
    failed = executed / "98_flaky.failed.ipynb"
    assert "broken on purpose" in failed.read_text() and "results/smoke/notebooks/98_flaky.failed.ipynb" in out.err
    assert "last good copy stays at results/smoke/notebooks/98_flaky.ipynb" in out.err
    for noise in ("Kernel is running over TCP", "KeyboardInterrupt"):  # the kernel's own log is not the user's concern
        assert noise not in out.out + out.err
    write_notebook(source, "print('fixed')")
    assert runner.main(["--profile", "smoke"]) == 0
    assert not failed.exists() and sorted(p.name for p in executed.iterdir()) == ["98_flaky.ipynb"]


def test_a_progress_bar_in_an_executed_notebook_ends_at_100_percent(runner, tmp_path):
    write_notebook(tmp_path / "notebooks" / "97_bar.ipynb", (
        "from kgdistill import RunConfig, run\n"
        "config = RunConfig(dataset='Nations', rank=4, batch_size=512, max_epochs=2, eval_every=1)\n"
        f"_ = run(config, {str(tmp_path / 'runs')!r}, device='cpu', show_progress=True)"))
    assert runner.main(["--profile", "smoke"]) == 0
    executed = nbformat.read(tmp_path / "results" / "smoke" / "notebooks" / "97_bar.ipynb", as_version=4)
    shown = [o.get("text") or o.get("data", {}).get("text/plain", "") for o in executed.cells[-1].outputs]
    assert "100%" in "".join(shown)


def test_the_data_default_skips_a_shared_folder_without_archives(tmp_path, monkeypatch):
    """../shared/data next to the repository is the default only when it holds the archives."""
    from kgdistill import environment

    repo = tmp_path / "kgdistill"
    (repo / "params").mkdir(parents=True)
    (repo / "pyproject.toml").write_text("")
    shared = tmp_path / "shared" / "data"
    shared.mkdir(parents=True)
    monkeypatch.setenv("KGDISTILL_ROOT", str(repo))
    monkeypatch.delenv("KGC_DATA_DIR", raising=False)
    assert environment.default_data_dir() is None  # empty: download
    (shared / "umls.tar.gz").write_bytes(b"")
    assert environment.default_data_dir() == shared.resolve()
    monkeypatch.setenv("KGC_DATA_DIR", "")
    assert environment.default_data_dir() is None  # set but empty: download, as the README says
    readme = " ".join(README.read_text().split())
    assert ("read from `KGC_DATA_DIR` when it is set (set but empty: downloaded); otherwise from `../shared/data` "
            "next to the repository when that folder holds the archives; otherwise they are downloaded") in readme


def test_a_notebook_with_progress_bars_shows_the_librarys_messages(capsys):
    """E.g. "resuming from epoch 5" (kgdistill.protocol.loop logs it) in the cell's output."""
    import logging

    from kgdistill.study import Study

    Study("smoke", show_progress=True)
    logging.getLogger("kgdistill").info("run-x: resuming from epoch 5 (checkpoint of epoch 4)")
    assert "resuming from epoch 5" in capsys.readouterr().out
