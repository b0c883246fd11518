"""``scripts/train_runs.py --launcher submitit`` (kgdistill.study.launch): one submitit job per run, with the
local queue's skip-if-done, lock and teacher-first semantics; Slurm parameters from the profile."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml

submitit = pytest.importorskip("submitit")

from kgdistill.core.records import RECORD  # noqa: E402
from kgdistill.protocol.runner import run_dir_for  # noqa: E402
from kgdistill.study.launch import TrainRun, executor_parameters, make_executor, submit_queue, submit_runs  # noqa: E402
from kgdistill.study.plan import planned_runs  # noqa: E402
from kgdistill.study.profile import load_profile  # noqa: E402
from kgdistill.study.queue import LOCK, state  # noqa: E402

SLURM = {"partition": "gpu", "gpus_per_node": 1, "cpus_per_task": 8, "mem_gb": 64, "timeout_min": 60}


def tiny_profile(tmp_path: Path) -> Path:
    """A two-run profile on Nations: a baseline teacher and its KD student, seconds each."""
    profile = {
        "runs_dir": str(tmp_path / "runs"), "device": "cpu", "threads": 1, "seeds": [0], "slurm": SLURM,
        "common": {"rank": 8, "max_epochs": 2, "eval_every": 1, "init_scale": 0.1, "batch_size": 500},
        "datasets": {"FB15k-237": {"data": "Nations"}},
        "recipes": {"RP": {"rp_weight": 1.0}, "KD": {"method": "kd", "teacher": "RP", "student_rank": 4}},
        "tables": {"table1": {"datasets": ["FB15k-237"], "rows": {"RP": "RP", "KD": "KD"}}},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


def test_local_jobs_train_teacher_first_and_skip_finished_runs(tmp_path, capsys):
    profile = load_profile(tiny_profile(tmp_path))
    runs = planned_runs(profile)
    runs_dir = Path(profile["runs_dir"])
    teacher, student = (run_dir_for(r.config, runs_dir) for r in runs)
    jobs = submit_runs(runs, runs_dir, profile, cluster="local", folder=tmp_path / "jobs", device="cpu",
                       threads=1, poll_seconds=0.5)
    assert list(jobs) == [r.name for r in runs] and "after job" in capsys.readouterr().out  # KD after RP
    results = [job.result() for job in jobs.values()]
    assert [r["status"] for r in results] == ["complete", "complete"]
    assert state(teacher) == state(student) == "done"
    assert not (teacher / LOCK).exists() and not (student / LOCK).exists()
    # the student's job waited for its teacher's job rather than training the teacher itself
    teacher_job, student_job = jobs.values()
    assert f"training {teacher.name}" in teacher_job.stdout()
    assert f"training {teacher.name}" not in student_job.stdout() and f"training {student.name}" in student_job.stdout()
    assert (teacher / RECORD).stat().st_mtime <= (student / RECORD).stat().st_mtime
    assert submit_queue(profile, runs_dir=runs_dir, cluster="local", folder=tmp_path / "jobs") == 0
    out = capsys.readouterr().out
    assert out.count("not submitted") == 2 and "submitted kd" not in out


def test_a_job_resumes_and_releases_its_lock(tmp_path, nations):
    profile = load_profile(tiny_profile(tmp_path))
    teacher_run = planned_runs(profile)[0]
    run_dir = run_dir_for(teacher_run.config, profile["runs_dir"])
    from kgdistill.protocol.runner import run

    assert run(teacher_run.config, profile["runs_dir"], device="cpu", dataset=nations,
               stop_after_epoch=1)["status"] == "interrupted"
    assert state(run_dir) == "partial"
    job = TrainRun(teacher_run.config, profile["runs_dir"], "cpu", 1, poll_seconds=0.1)
    assert job()["status"] == "complete" and not (run_dir / LOCK).exists()
    assert job.checkpoint().function is job  # requeue: the same run, resumed from its checkpoint


def test_slurm_jobs_ask_for_the_profiles_resources_and_wait_for_their_teacher(tmp_path, monkeypatch):
    profile = load_profile(tiny_profile(tmp_path))
    params = executor_parameters(profile, "slurm", "kd-run", dependency="4242")
    assert params["slurm_partition"] == "gpu" and params["gpus_per_node"] == 1 and params["timeout_min"] == 60
    assert params["mem_gb"] == 64 and params["slurm_dependency"] == "afterok:4242"
    local = executor_parameters(profile, "local", "kd-run", dependency="4242")
    assert not any(k.startswith("slurm_") for k in local) and "mem_gb" not in local
    # the sbatch file submitit would write (a stand-in srun makes the Slurm executor constructible)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    srun = bin_dir / "srun"
    srun.write_text("#!/bin/sh\nexit 0\n")
    srun.chmod(srun.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    executor = make_executor(tmp_path / "jobs", "slurm", params)
    sbatch = executor._executor._make_submission_file_text("python -m job", "uid")
    for line in ("--partition=gpu", "--gpus-per-node=1", "--time=60", "--mem=64GB", "--dependency=afterok:4242",
                 "--cpus-per-task=8", "--job-name=kd-run"):
        assert line in sbatch, sbatch


def test_unknown_slurm_keys_fail_at_profile_load(tmp_path):
    path = tiny_profile(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["slurm"]["partitoin"] = "gpu"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match="partitoin.*partition"):
        load_profile(path)
