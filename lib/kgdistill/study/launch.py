"""A profile's runs as jobs of submitit: Slurm on a cluster, local processes here.

``scripts/train_runs.py --launcher submitit`` calls :func:`submit_queue`: one job per planned
run that is not done (nor being trained by a live process), each asking for what the profile's
``slurm`` section says (partition, GPUs, CPUs, memory, time). A KD student's job depends on its
teacher's job (``afterok``) when both are submitted together. A job trains its run with the local
queue's semantics (:mod:`kgdistill.study.queue`): it skips a finished run, takes the run's
``train.lock``, waits while the teacher is trained by another process, and resumes from the
run's last epoch checkpoint. At the time limit (or on preemption) submitit requeues the job,
which resumes the same way; the lock is released first.

Clusters: ``slurm``, ``local`` (subprocesses of this machine) and ``debug`` (in this process);
``None`` picks Slurm when ``srun`` is found, else local.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterable

import submitit

from ..core.environment import repo_path
from ..core.records import RECORD, read_json
from ..protocol.registry import family_named
from ..protocol.runner import run_dir_for
from .plan import Config, PlannedRun, matching, planned_runs
from .profile import load_profile
from .queue import POLL_SECONDS, NoMatchingRun, release, state, train_one, try_lock

CLUSTERS = ("slurm", "local", "debug")
#: the profile's ``slurm`` keys and the executor parameter each sets (applies to every cluster
#: unless prefixed ``slurm_``)
SLURM_KEYS = {"partition": "slurm_partition", "gpus_per_node": "gpus_per_node", "cpus_per_task": "cpus_per_task",
              "mem_gb": "mem_gb", "timeout_min": "timeout_min", "account": "slurm_account",
              "constraint": "slurm_constraint", "additional": "slurm_additional_parameters"}
#: requeues after a time limit or preemption before submitit gives up on a job
MAX_REQUEUES = 20
#: minutes a job asks for when the profile has no ``slurm.timeout_min``
DEFAULT_TIMEOUT_MIN = 240
#: seconds a student's job waits for its teacher's job (submitted with it) to start training
TEACHER_GRACE_SECONDS = 600


class TrainRun(submitit.helpers.Checkpointable):
    """The job of one run: trains (or resumes, or finds finished) ``config`` into ``runs_dir``
    and returns a summary ``{run, status, test_mrr}``."""

    def __init__(self, config: Config, runs_dir: str, device: str = "auto", threads: int | None = None,
                 poll_seconds: float = POLL_SECONDS, teacher_submitted: bool = False,
                 teacher_grace_seconds: float = TEACHER_GRACE_SECONDS):
        """``teacher_submitted``: the teacher's job was submitted with this one; without a
        scheduler's dependency (local, debug) the job waits up to ``teacher_grace_seconds`` for
        that job to take the teacher's lock, then as long as it trains it (a teacher still
        missing after that is trained by this job, as the runner does)."""
        self.family, self.config_dict = config.PAPER, config.to_dict()
        self.runs_dir, self.device, self.threads, self.poll_seconds = str(runs_dir), device, threads, poll_seconds
        self.teacher_submitted, self.teacher_grace_seconds = teacher_submitted, teacher_grace_seconds

    @property
    def config(self) -> Config:
        return family_named(self.family).config_class.from_dict(self.config_dict)

    @property
    def run_dir(self) -> Path:
        return run_dir_for(self.config, self.runs_dir)

    def __call__(self) -> dict:
        if self.threads:
            import torch

            torch.set_num_threads(int(self.threads))
        config, run_dir, runs_dir = self.config, self.run_dir, Path(self.runs_dir)
        teacher = config.teacher_config()
        waited = 0.0
        while state(run_dir) != "done":
            if teacher is not None and self._wait_for(state(run_dir_for(teacher, runs_dir)), waited):
                time.sleep(self.poll_seconds)  # its frozen teacher is (about to be) trained by another job
                waited += self.poll_seconds
                continue
            if not try_lock(run_dir):
                time.sleep(self.poll_seconds)  # another process trains this run
                continue
            try:
                train_one(config, run_dir, runs_dir, self.device, False, None)
            finally:
                release(run_dir)
        return summary(run_dir)

    def _wait_for(self, teacher_state: str, waited: float) -> bool:
        """Whether to wait for the teacher: while another process trains it, and while its job,
        submitted with this one, may not have started yet (``teacher_grace_seconds``)."""
        if teacher_state == "training":
            return True
        return self.teacher_submitted and teacher_state != "done" and waited < self.teacher_grace_seconds

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        """Time limit or preemption: free the run's lock; the requeued job resumes the run from
        its last epoch checkpoint."""
        release(self.run_dir)
        return super().checkpoint(*args, **kwargs)


def summary(run_dir: Path) -> dict:
    """``{run, status, test_mrr}`` of a finished run's record."""
    record = read_json(run_dir / RECORD)
    mrr = record["test"][record["selected_model"]]["all"]["MRR"]
    return {"run": run_dir.name, "status": record["status"], "test_mrr": mrr}


def executor_parameters(profile: dict, cluster: str, name: str, dependency: str | None = None) -> dict:
    """The AutoExecutor parameters of one run's job: the profile's ``slurm`` section (Slurm-only
    keys left out on other clusters; no GPU asked of a local machine that has none), the job
    name, the requeue limit and, on Slurm, ``afterok`` on the ``dependency`` job id."""
    section = profile.get("slurm") or {}
    unknown = set(section) - set(SLURM_KEYS)
    if unknown:
        raise ValueError(
            f"profile {profile.get('name')}: unknown slurm key(s) {sorted(unknown)}; valid: {sorted(SLURM_KEYS)}"
        )
    params = {"name": name, "timeout_min": DEFAULT_TIMEOUT_MIN}
    for key, value in section.items():
        target = SLURM_KEYS[key]
        if cluster == "slurm" or not target.startswith("slurm_"):
            params[target] = value
    if cluster != "slurm":
        params.pop("mem_gb", None)
        params.pop("cpus_per_task", None)
        if cluster == "local" and not _local_gpus():
            params["gpus_per_node"] = 0
    if cluster == "slurm":
        params["slurm_max_num_timeout"] = MAX_REQUEUES
        if dependency is not None:
            params["slurm_dependency"] = f"afterok:{dependency}"
    elif cluster == "debug":
        params = {"name": name}  # the debug executor takes no resources
    return params


def _local_gpus() -> int:
    import torch

    return torch.cuda.device_count()


def make_executor(folder: Path, cluster: str, params: dict) -> submitit.AutoExecutor:
    """An AutoExecutor for ``cluster`` writing its logs under ``folder``."""
    kwargs = {"slurm_max_num_timeout": params.pop("slurm_max_num_timeout")} if "slurm_max_num_timeout" in params else {}
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster, **kwargs)
    executor.update_parameters(**params)
    return executor


def _library_on_pythonpath() -> None:
    """Jobs start new Pythons (on other nodes too): make ``lib/`` importable in them."""
    lib = str(Path(__file__).resolve().parent.parent)
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if lib not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([lib, *filter(None, paths)])


def submit_runs(runs: Iterable[PlannedRun], runs_dir: Path, profile: dict, cluster: str | None = None,
                folder: Path | None = None, device: str = "auto", threads: int | None = None,
                poll_seconds: float = POLL_SECONDS) -> dict[str, submitit.Job]:
    """Submit one job per run of ``runs`` that is neither done nor being trained elsewhere, in
    plan order (teachers first); a student's job depends on its teacher's job (Slurm). Returns
    ``{run name: job}``; prints one line per run."""
    cluster = cluster or submitit.AutoExecutor.which()
    if cluster not in CLUSTERS:
        raise ValueError(f"unknown cluster {cluster!r}; choose one of {CLUSTERS}")
    folder = Path(folder or Path(runs_dir).parent / "submitit")
    _library_on_pythonpath()
    jobs: dict[str, submitit.Job] = {}
    for run in runs:
        run_dir = run_dir_for(run.config, runs_dir)
        current = state(run_dir)
        if current in ("done", "training"):
            print(f"{current:9s} {run.name}: not submitted")
            continue
        teacher = run.config.teacher_config()
        teacher_job = jobs.get(teacher.run_name()) if teacher is not None else None
        params = executor_parameters(profile, cluster, run.name, teacher_job.job_id if teacher_job else None)
        executor = make_executor(folder, cluster, params)
        job = TrainRun(run.config, str(runs_dir), device, threads, poll_seconds,
                       teacher_submitted=teacher_job is not None)
        jobs[run.name] = executor.submit(job)
        after = f" after job {teacher_job.job_id}" if teacher_job else ""
        print(f"submitted {run.name}: job {jobs[run.name].job_id} ({cluster}{after})", flush=True)
    return jobs


def submit_queue(profile: str | dict, *, match: Iterable[str] | None = None, runs_dir: str | os.PathLike | None = None,
                 device: str | None = None, threads: int | None = None, cluster: str | None = None,
                 wait: bool | None = None, folder: str | os.PathLike | None = None) -> int:
    """``scripts/train_runs.py --launcher submitit``: the plan of ``profile`` narrowed to
    ``match`` (as :func:`kgdistill.study.queue.run_queue`), one job per run. ``wait`` (default: on
    local and debug clusters) waits for the jobs and prints each result. Returns the exit status
    (1 when a job failed)."""
    if not isinstance(profile, dict):
        profile = load_profile(profile)
    runs_dir = repo_path(runs_dir) or Path(profile["runs_dir"])  # relative: to the repository root
    match = list(match or [])
    runs = matching(planned_runs(profile), match)
    if not runs:
        raise NoMatchingRun(f"no run of profile {profile['name']} matches {match}; see --list")
    cluster = cluster or submitit.AutoExecutor.which()
    jobs = submit_runs(runs, runs_dir, profile, cluster, Path(folder) if folder else None,
                       device or profile.get("device", "auto"), threads or profile.get("threads"))
    if not (cluster != "slurm" if wait is None else wait):
        print(f"{len(jobs)} jobs submitted; `--list` shows the runs' states")
        return 0
    failed = 0
    for name, job in jobs.items():
        try:
            result = job.result()
            print(f"done      {name}: test MRR {result['test_mrr']:.4f} (job {job.job_id})")
        except Exception as err:  # noqa: BLE001 - report every job, then fail
            failed += 1
            print(f"failed    {name} (job {job.job_id}): {err}")
    return 1 if failed else 0
