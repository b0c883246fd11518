"""scripts/train_runs.py: trains a profile's missing runs, lists their state, shares a runs folder
between processes through lock files, and stops at a deadline leaving a resumable run."""
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

from kgdistill import study

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("train_runs", ROOT / "scripts" / "train_runs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_lock_is_exclusive_and_a_dead_owner_is_taken_over(script, tmp_path):
    run_dir = tmp_path / "run"
    assert script.try_lock(run_dir)
    assert not script.try_lock(run_dir)  # held by this (live) process
    assert script.state(run_dir) == "training"
    lock = run_dir / script.LOCK
    owner = json.loads(lock.read_text())
    lock.write_text(json.dumps({**owner, "pid": dead_pid()}))
    assert script.state(run_dir) == "missing"  # nobody trains it any more
    assert script.try_lock(run_dir)
    assert json.loads(lock.read_text())["pid"] == os.getpid()


def smoke_run(row: str, seed: int) -> str:
    profile = study.load_profile("smoke")
    return next(s.run_name for s in study.all_specs(profile) if s.row == row and s.seed == seed)


def smoke_config(run_name: str):
    return next(s.config for s in study.all_specs(study.load_profile("smoke")) if s.run_name == run_name)


def test_trains_the_matched_run_then_lists_it_done(script, tmp_path, capsys):
    name = smoke_run("DML", 0)
    assert script.main(["--profile", "smoke", "--runs-dir", str(tmp_path), "--match", name]) == 0
    out = capsys.readouterr().out
    assert f"training {name}" in out and "test MRR" in out and "all runs done" in out
    record = json.loads((tmp_path / name / "record.json").read_text())
    assert record["status"] == "complete"
    assert not (tmp_path / name / script.LOCK).exists()  # released

    (tmp_path / "baseline-old-config").mkdir()  # e.g. the record of an earlier profile version
    assert script.main(["--profile", "smoke", "--runs-dir", str(tmp_path), "--list"]) == 0
    listing = capsys.readouterr().out.splitlines()
    line = next(line for line in listing if name in line)
    assert line.startswith("done") and f"{record['test'][record['selected_model']]['all']['MRR']:.4f}" in line
    assert "not a run of this profile" in listing[-1] and listing[-1].endswith("baseline-old-config")
    assert sum(line.startswith("missing") for line in listing) == len(listing) - 3  # all others, + 2 summary lines


def test_deadline_leaves_a_partial_run_that_resumes(script, tmp_path, capsys):
    name = smoke_run("ComplEx", 1)
    args = ["--profile", "smoke", "--runs-dir", str(tmp_path), "--match", name]
    assert script.main(args + ["--stop-after-minutes", "0"]) == 0
    assert "time is up" in capsys.readouterr().out and not (tmp_path / name).exists()

    assert script.main(args + ["--stop-after-minutes", "0.001"]) == 0  # one chunk, then time is up
    stopped = re.search(r"stopped after epoch (\d+) ", capsys.readouterr().out)
    assert script.state(tmp_path / name) == "partial"
    # the epoch named is the checkpoint's: the first validation epoch at or after the one asked for
    checkpoint = torch.load(tmp_path / name / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert stopped and int(stopped.group(1)) == checkpoint["epoch"] == smoke_config(name).eval_every

    assert script.main(args) == 0  # resumes from the checkpoint and finishes
    assert script.state(tmp_path / name) == "done"


def test_unknown_match_is_named(script, tmp_path):
    with pytest.raises(SystemExit, match="no run of profile smoke matches"):
        script.main(["--profile", "smoke", "--runs-dir", str(tmp_path), "--match", "no-such-run"])


def test_trains_the_distile_row_of_table1_teacher_first(script, tmp_path, capsys):
    # the smoke profile's Table-1 DistilE row has no grid, so its runs are known before training
    args = ["--profile", "smoke", "--runs-dir", str(tmp_path), "--match", "DistilE in Table 1"]
    assert script.main(args + ["--list"]) == 0
    listing = [line for line in capsys.readouterr().out.splitlines() if "distile-" in line]
    assert [line.split()[0] for line in listing] == ["missing"] * len(listing) and listing
    names = [line.split()[-1] for line in listing]
    assert names[0].startswith("distile-plain-") and names[-1].startswith("distile-ds-")

    assert script.main(args) == 0
    out = capsys.readouterr().out
    assert out.index(f"training {names[0]}") < out.index(f"training {names[-1]}")
    for name in names:
        record = json.loads((tmp_path / name / "record.json").read_text())
        assert record["status"] == "complete" and record["method"] == name.split("-")[1]
    assert len(names) == 4  # per seed a teacher and a student (UMLS stands in for both datasets)


def test_lists_notebook_06_runs_teachers_first(script, tmp_path, capsys):
    from kgdistill.distile.experiments import planned_runs

    assert script.main(["--profile", "smoke", "--runs-dir", str(tmp_path), "--list", "--match", "DistilE notebook 06"]) == 0
    names = [line.split()[-1] for line in capsys.readouterr().out.splitlines() if "distile-" in line]
    planned = [config.run_name() for config, _ in planned_runs(study.load_profile("smoke")["distile"])]
    assert names == planned and len(names) == 90
    kinds = [name.split("-")[1] for name in names]
    assert kinds == sorted(kinds, key=lambda kind: kind != "plain") and "ds" in kinds  # teachers first
