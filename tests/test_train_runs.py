"""scripts/train_runs.py and kgdistill.study.queue: trains a profile's missing runs, lists their state,
shares a runs folder between processes through lock files, and stops at a deadline leaving a
resumable run."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kgdistill import queue
from kgdistill.study.plan import PlannedRun, planned_runs
from kgdistill.study.profile import load_profile

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("train_runs", ROOT / "scripts" / "train_runs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def smoke_plan() -> list[PlannedRun]:
    return planned_runs(load_profile("smoke"))


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def lock_as(run_dir: Path, pid: int) -> None:
    """Make ``pid`` (on this host) the holder of ``run_dir``'s lock."""
    assert queue.try_lock(run_dir)
    lock = run_dir / queue.LOCK
    lock.write_text(json.dumps({**json.loads(lock.read_text()), "pid": pid}))


def test_lock_is_exclusive_and_a_dead_owner_is_taken_over(tmp_path):
    run_dir = tmp_path / "run"
    assert queue.try_lock(run_dir)
    assert not queue.try_lock(run_dir)  # held by this (live) process
    assert queue.state(run_dir) == "training"
    lock = run_dir / queue.LOCK
    owner = json.loads(lock.read_text())
    lock.write_text(json.dumps({**owner, "pid": dead_pid()}))
    assert queue.state(run_dir) == "missing"  # nobody trains it any more
    assert queue.try_lock(run_dir)
    assert json.loads(lock.read_text())["pid"] == os.getpid()


def test_the_queue_skips_a_run_locked_by_a_live_process_and_its_students(smoke_plan, tmp_path, monkeypatch, capsys):
    kd = next(r for r in smoke_plan if r.config.method == "kd")
    teacher = next(r for r in smoke_plan if r.name == kd.config.teacher_config().run_name())
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock_as(tmp_path / teacher.name, other.pid)
        monkeypatch.setattr(queue, "POLL_SECONDS", 0.05)
        assert not queue.train([teacher, kd], tmp_path, device="cpu", stop_after_minutes=0.02)
        out = capsys.readouterr().out
        assert "training" not in out and "time is up; 2 runs left" in out  # neither the teacher nor its student
        assert queue.state(tmp_path / teacher.name) == "training" and not (tmp_path / kd.name).exists()
    finally:
        other.kill()
        other.wait()
    assert queue.state(tmp_path / teacher.name) == "missing"  # its owner is gone


def smoke_run(plan: list[PlannedRun], row: str, seed: int) -> PlannedRun:
    return next(r for r in plan if row in r.rows and r.config.seed == seed)


def test_trains_the_matched_run_then_lists_it_done(script, smoke_plan, tmp_path, capsys):
    name = smoke_run(smoke_plan, "DML", 0).name
    assert script.main(["--profile", "smoke", "--runs-dir", str(tmp_path), "--match", name], enforce_env=False) == 0
    out = capsys.readouterr().out
    assert f"training {name}" in out and "test MRR" in out and "all runs done" in out
    record = json.loads((tmp_path / name / "record.json").read_text())
    assert record["status"] == "complete"
    assert not (tmp_path / name / queue.LOCK).exists()  # released

    (tmp_path / "baseline-old-config").mkdir()  # e.g. the record of an earlier profile version
    assert script.main(["--profile", "smoke", "--runs-dir", str(tmp_path), "--list"]) == 0
    listing = capsys.readouterr().out.splitlines()
    line = next(line for line in listing if name in line)
    assert line.startswith("done") and f"{record['test'][record['selected_model']]['all']['MRR']:.4f}" in line
    assert "not a run of this profile" in listing[-1] and listing[-1].endswith("baseline-old-config")
    assert sum(line.startswith("missing") for line in listing) == len(listing) - 3  # all others, + 2 summary lines


def test_deadline_leaves_a_partial_run_that_resumes(script, smoke_plan, tmp_path, capsys):
    run = smoke_run(smoke_plan, "ComplEx", 1)
    name = run.name
    args = ["--profile", "smoke", "--runs-dir", str(tmp_path), "--match", name]
    assert script.main(args + ["--stop-after-minutes", "0"], enforce_env=False) == 0
    assert "time is up" in capsys.readouterr().out and not (tmp_path / name).exists()

    assert script.main(args + ["--stop-after-minutes", "0.001"], enforce_env=False) == 0  # one chunk, then time is up
    stopped = re.search(r"stopped after epoch (\d+) ", capsys.readouterr().out)
    assert queue.state(tmp_path / name) == "partial"
    # the epoch named is the checkpoint's: the first validation epoch at or after the one asked for
    checkpoint = torch.load(tmp_path / name / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert stopped and int(stopped.group(1)) == checkpoint["epoch"] == run.config.eval_every

    assert script.main(args, enforce_env=False) == 0  # resumes from the checkpoint and finishes
    assert queue.state(tmp_path / name) == "done"
    assert f"resuming from epoch {checkpoint['epoch'] + 1}" in capsys.readouterr().out  # the user is told
    assert script.main(args + ["--stop-after-minutes", "0"], enforce_env=False) == 0
    assert "time is up; 0 runs left" in capsys.readouterr().out  # a finished run is not counted as left


def test_a_fresh_run_with_time_to_spare_trains_in_one_go(script, smoke_plan, tmp_path, capsys):
    name = smoke_run(smoke_plan, "ComplEx", 1).name
    args = ["--profile", "smoke", "--runs-dir", str(tmp_path), "--match", name, "--stop-after-minutes", "30"]
    assert script.main(args, enforce_env=False) == 0
    out = capsys.readouterr().out
    # no stop at the first checkpoint for want of a known pace, and no reload from it
    assert out.count("training ") == 1 and "stopped after" not in out and "resuming" not in out
    assert "all runs done" in out and queue.state(tmp_path / name) == "done"


def test_unknown_match_is_named(script, tmp_path):
    with pytest.raises(SystemExit, match="no run of profile smoke matches"):
        script.main(["--profile", "smoke", "--runs-dir", str(tmp_path), "--match", "no-such-run"], enforce_env=False)


def test_trains_the_distile_row_of_table1_teacher_first(script, tmp_path, capsys):
    # the smoke profile's Table-1 DistilE row has no grid, so its runs are known before training
    args = ["--profile", "smoke", "--runs-dir", str(tmp_path), "--match", "DistilE in Table 1"]
    assert script.main(args + ["--list"]) == 0
    listing = [line for line in capsys.readouterr().out.splitlines() if "distile-" in line]
    assert [line.split()[0] for line in listing] == ["missing"] * len(listing) and listing
    names = [line.split()[-1] for line in listing]
    assert names[0].startswith("distile-plain-") and names[-1].startswith("distile-ds-")

    assert script.main(args, enforce_env=False) == 0
    out = capsys.readouterr().out
    assert out.index(f"training {names[0]}") < out.index(f"training {names[-1]}")
    for name in names:
        record = json.loads((tmp_path / name / "record.json").read_text())
        assert record["status"] == "complete" and record["method"] == name.split("-")[1]
    assert len(names) == 4  # per seed a teacher and a student (UMLS stands in for both datasets)


def test_lists_notebook_06_runs_teachers_first(script, tmp_path, capsys):
    from kgdistill.study.distile.planning import distile_planned_runs as notebook_runs

    assert script.main(["--profile", "smoke", "--runs-dir", str(tmp_path), "--list", "--match",
                        "DistilE notebook 06"]) == 0
    names = [line.split()[-1] for line in capsys.readouterr().out.splitlines() if "distile-" in line]
    planned = [config.run_name() for config, _ in notebook_runs(load_profile("smoke")["distile"])]
    assert names == planned and len(names) == 94  # 90, and the 4 seed-1 runs of the smoke tie_seeds pairs
    kinds = [name.split("-")[1] for name in names]
    assert kinds == sorted(kinds, key=lambda kind: kind != "plain") and "ds" in kinds  # teachers first


def test_an_error_is_one_clear_line_and_debug_shows_the_traceback(script, tmp_path, capsys):
    assert script.main(["--profile", "no-such-profile", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "profile 'no-such-profile' not found" in err and "--debug" in err
    assert len(err.strip().splitlines()) == 2
    with pytest.raises(FileNotFoundError, match="no-such-profile"):
        script.main(["--profile", "no-such-profile", "--runs-dir", str(tmp_path), "--debug"])


def test_training_is_refused_when_the_profiles_env_is_not_in_force(script, smoke_plan, tmp_path, capsys, monkeypatch):
    """The script re-executes itself with the profile's env; a caller's different value stays and is named."""
    monkeypatch.setenv("MKL_CBWR", "AUTO")
    name = smoke_run(smoke_plan, "CP", 0).name
    assert script.main(["--profile", "smoke", "--runs-dir", str(tmp_path), "--match", name]) == 2
    err = capsys.readouterr().err
    assert "NumericEnvironmentError" in err and "MKL_CBWR='AUTO'" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())


def test_a_diverged_run_is_skipped_the_others_train_and_the_end_names_it(smoke_plan, tmp_path, monkeypatch, capsys):
    first, second = smoke_run(smoke_plan, "CP", 0), smoke_run(smoke_plan, "DML", 0)
    trained = []

    def fake_train_one(config, run_dir, *args):
        assert (run_dir / queue.LOCK).exists()
        trained.append(config.run_name())
        if config.run_name() == first.name:
            raise FloatingPointError(f"run {first.name} diverged in epoch 7")
        return True

    monkeypatch.setattr(queue, "train_one", fake_train_one)
    with pytest.raises(queue.RunsDiverged, match=f"1 run\\(s\\) diverged .*{first.name} diverged in epoch 7"):
        queue.train([first, second], tmp_path, device="cpu")
    assert trained == [first.name, second.name]  # the second trained after the first diverged
    out = capsys.readouterr().out
    assert "diverged, skipped" in out and "all runs done" not in out
    assert not (tmp_path / first.name / queue.LOCK).exists()  # released for the next attempt


def test_a_diverged_run_is_still_named_when_the_deadline_stops_the_next(smoke_plan, tmp_path, monkeypatch, capsys):
    first, second = smoke_run(smoke_plan, "CP", 0), smoke_run(smoke_plan, "DML", 0)

    def fake_train_one(config, run_dir, *args):
        if config.run_name() == first.name:
            raise FloatingPointError(f"run {first.name} diverged in epoch 7")
        return False  # the second stops at its last checkpoint before the deadline

    monkeypatch.setattr(queue, "train_one", fake_train_one)
    with pytest.raises(queue.RunsDiverged, match=f"1 run\\(s\\) diverged .*{first.name}"):
        queue.train([first, second], tmp_path, device="cpu", stop_after_minutes=60)
    out = capsys.readouterr().out
    assert "time is up; 1 runs left" in out and "all runs done" not in out  # the diverged one is named apart
