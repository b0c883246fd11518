"""A second run of the study changes nothing, timings change only with --retime, Ctrl-C is clean.

``scripts/reproduce.py`` on a clone rebuilds from the committed records: it trains nothing and
writes no checkpoint when the records exist, reads saved timings back (``derived/``) unless
``--retime``, leaves the committed files as they were when their content did not change, and on
Ctrl-C stops in one line, keeping the last good executed copy.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from kgdistill.core.environment import NUMERIC_ENV
from kgdistill.study.measured import read_measurement, save_measurement

ROOT = Path(__file__).resolve().parent.parent
GIT = ["git", "-c", "user.name=new user", "-c", "user.email=user@example.org"]


# --- the saved measurements ----------------------------------------------------------------------------
def test_a_measurement_reads_back_exactly_and_only_for_what_it_was_measured_for(tmp_path):
    frame = pd.DataFrame({"model": ["TransE", "TransE"], "dim": [8, 4], "params": [123456789, 61728394],
                          "seconds": [0.1 + 0.2, 1 / 3], "note": ["a", "b"]}).set_index(["model", "dim"])
    path = save_measurement(tmp_path / "m.json", frame, {"spec": {"repeats": 3, "dims": (8, 4)}}, machine="m1")
    found = read_measurement(path, {"spec": {"repeats": 3, "dims": [8, 4]}})
    pd.testing.assert_frame_equal(found.frame, frame)  # exact floats, ints and index
    assert found.machine == "m1"
    assert read_measurement(path, {"spec": {"repeats": 2, "dims": [8, 4]}}) is None  # measured for another spec
    assert read_measurement(tmp_path / "missing.json") is None


def test_table5_is_timed_once_then_read_back_unless_retime(nations, tmp_path, monkeypatch):
    from kgdistill.study.distile.grid import DistilEStudy

    section = {"datasets": {"WN18RR": "Nations"}, "models": ["TransE"], "teacher_dim": 8, "student_dims": [4],
               "timing": {"dataset": "WN18RR", "repeats": 1, "triples": 20}}
    D = DistilEStudy(section, tmp_path / "runs", device="cpu")
    D._datasets["Nations"] = nations
    saved = tmp_path / "derived" / "distile_table5.json"
    first = D.timing_table(saved, retime=False)  # nothing saved yet: timed, and saved
    caption = D.timing_caption()
    assert saved.is_file() and "derived/distile_table5.json" in D.timing_origin

    timed = []
    real = DistilEStudy.timing
    monkeypatch.setattr(DistilEStudy, "timing", lambda self: timed.append(1) or real(self))
    again = DistilEStudy(section, tmp_path / "runs", device="cpu")
    again._datasets["Nations"] = nations
    pd.testing.assert_frame_equal(again.timing_table(saved, retime=False), first)  # read back, not timed
    assert timed == [] and again.timing_caption() == caption and again.timing_origin == D.timing_origin
    assert list(again.timing_table(saved, retime=False)["params"]) == list(first["params"])  # counted afresh

    again.timing_table(saved, retime=True)  # --retime: timed again and saved
    assert timed == [1]
    again.section = {**section, "timing": {**section["timing"], "repeats": 2}}  # another spec: timed again
    assert (again.timing_table(saved, retime=False)["repeats"] == 2).all() and timed == [1, 1]


def test_the_footprint_is_read_back_without_weights_and_skipped_in_one_line_without_anything(
        umls, tmp_path):
    import yaml

    from kgdistill import study

    raw = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())
    raw.update(runs_dir=str(tmp_path / "runs"), seeds=[0])
    raw["common"].update(rank=8, max_epochs=1, eval_every=1)
    raw["footprint"].update(queries=50, repeats=1)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    S = study.Study(path, results_dir=tmp_path, enforce_env=False)
    fp = S.footprint()
    measured = fp.measure(retime=False)  # nothing saved: measured from best.pt, saved
    assert fp.measurement_file.is_file() and (fp.export_dir / "student.pt").is_file()
    for weights in S.runs_dir.rglob("*.pt"):  # a clone: records without checkpoints
        weights.unlink()

    back = S.footprint()
    pd.testing.assert_frame_equal(back.measure(retime=False), measured)
    assert back.origin == fp.origin and "sparse export scores test MRR" in back.origin  # re-checked from the export
    assert back.summary() == fp.summary()
    assert not list(S.runs_dir.rglob("*.pt"))  # nothing trained

    retimed = S.footprint()
    assert retimed.measure(retime=True) is None  # asked to measure, but no weights and no --retrain
    assert retimed.origin.startswith("footprint skipped: run ") and "best.pt" in retimed.origin
    assert retimed.summary() == retimed.origin and "\n" not in retimed.origin
    assert not list(S.runs_dir.rglob("*.pt"))


# --- the runner on a clone -----------------------------------------------------------------------------
def plain_env(repo: Path) -> dict[str, str]:
    drop = {*NUMERIC_ENV, "KGC_DATA_DIR", "KGDISTILL_ROOT", "PYTHONPATH", "MPLBACKEND", "KGDISTILL_GIT_COMMIT",
            "KGDISTILL_PROGRESS_FILE"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONPATH"] = str(repo / "lib")
    return env


def reproduce(repo: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    done = subprocess.run([str(repo / ".venv" / "bin" / "python"), "scripts/reproduce.py", "--profile", "smoke",
                           *args], cwd=repo, env=plain_env(repo), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stdout + done.stderr
    return done


def status(repo: Path) -> list[str]:
    """Every change git sees under results/, ignored files included (a new best.pt would show)."""
    out = subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all", "results"],
                         cwd=repo, capture_output=True, text=True, check=True).stdout
    return out.splitlines()


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A clone of the working tree (as tests/test_new_user.py makes it) with ../shared/data."""
    data = Path(os.environ["KGC_DATA_DIR"])
    if not any(data.glob("*.tar.gz")):
        pytest.skip(f"no benchmark archives in {data}")
    base = tmp_path_factory.mktemp("rerun")
    repo = base / "kgdistill"
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file() and not name.startswith("results/smoke/"):
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "clone"]):
        subprocess.run(GIT + command, cwd=repo, check=True, capture_output=True)
    (base / "shared").mkdir()
    (base / "shared" / "data").symlink_to(data)
    (repo / ".venv").symlink_to(Path(sys.prefix))
    return repo


def test_a_second_run_changes_nothing_writes_no_checkpoint_and_only_retime_retimes(clone, tmp_path):
    first = reproduce(clone, "--only", "00", "05")  # trains the smoke runs of notebook 05, times the footprint
    assert "    cell 4/" in first.stdout and "to train" in first.stdout  # cells and training reach the console
    results = clone / "results" / "smoke"
    weights = sorted(results.glob("runs/**/*.pt"))
    assert weights
    aside = tmp_path / "weights"
    for path in weights:  # the records are committed, their checkpoints are not
        (aside / path.relative_to(results)).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(path), aside / path.relative_to(results))
    subprocess.run(GIT + ["add", "-f", "results/smoke"], cwd=clone, check=True)
    subprocess.run(GIT + ["commit", "-q", "-m", "smoke records and outputs"], cwd=clone, check=True)
    committed = sorted(p.relative_to(results) for p in results.rglob("*.pt"))  # the derived sparse export only
    assert [p.parts[0] for p in committed] == ["derived"]

    second = reproduce(clone, "--only", "00", "05")
    assert status(clone) == []  # no content change, no new file (no checkpoint, no failed copy)
    assert "to train" not in second.stdout and "read back" in second.stdout
    assert "executed copy unchanged" in second.stdout

    for path in aside.rglob("*.pt"):  # with the weights there, timings are still read back
        shutil.copy2(path, results / path.relative_to(aside))
    reproduce(clone, "--only", "05")
    assert [line for line in status(clone) if not line.endswith(".pt")] == []

    reproduce(clone, "--only", "05", "--retime")  # measured again: the timings change, and only now
    changed = {line[3:] for line in status(clone) if line.startswith(" M")}
    run_name = next(p.parts[1] for p in committed)
    assert f"results/smoke/derived/{run_name}/footprint.json" in changed
    assert "results/smoke/tables/footprint.csv" in changed


# --- Ctrl-C ----------------------------------------------------------------------------------------------
@pytest.fixture
def sleeper(tmp_path) -> Path:
    """A repository holding scripts/reproduce.py, the library and params/ (links), and one
    notebook whose second cell sleeps ``$NAP`` seconds."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    (repo / "notebooks").mkdir()
    shutil.copy2(ROOT / "scripts" / "reproduce.py", repo / "scripts")
    shutil.copy2(ROOT / "pyproject.toml", repo)
    for name in ("lib", "params"):
        (repo / name).symlink_to(ROOT / name)
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "smoke"\nshow_progress = False')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("print('started', flush=True)"),
                nbformat.v4.new_code_cell("import os, time\ntime.sleep(float(os.environ['NAP']))")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, repo / "notebooks" / "97_sleep.ipynb")
    return repo


def test_ctrl_c_stops_in_one_line_and_keeps_the_last_good_copy(sleeper):
    command = [sys.executable, "scripts/reproduce.py", "--profile", "smoke", "--only", "97"]
    env = {**plain_env(sleeper), "NAP": "0"}
    done = subprocess.run(command, cwd=sleeper, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    good = sleeper / "results" / "smoke" / "notebooks" / "97_sleep.ipynb"
    kept = good.read_bytes()

    proc = subprocess.Popen(command, cwd=sleeper, env={**env, "NAP": "300"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        for line in proc.stdout:  # wait until the sleeping cell runs
            if line.startswith("    cell 4/4") or time.time() > deadline:
                break
        time.sleep(1)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("interrupted in notebooks/97_sleep.ipynb, cell 4/4: kernel stopped;")
    assert "the last good results/smoke/notebooks/97_sleep.ipynb stays" in lines[0]
    assert good.read_bytes() == kept  # the partial copy did not replace it
    assert not list(good.parent.glob(".*.running.ipynb"))
