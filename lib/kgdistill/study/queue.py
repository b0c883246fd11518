"""The run queue of ``scripts/train_runs.py``: a profile's plan (:mod:`kgdistill.study.plan`) trained
in order, or listed with each run's state.

Several processes may work on one runs folder at once (e.g. one per core, each with one torch
thread): a process marks the run it trains with ``train.lock`` (its host and pid) and the others
skip it; a student waits while its frozen teacher is being trained elsewhere. A lock left by a
killed process is taken over, and a killed run resumes from its last epoch checkpoint. With a
deadline, a run trains whole validation intervals and stops at its last checkpoint before the
deadline at its own pace (one interval more would pass it), then the process stops. A run that
diverges (non-finite loss) is reported and left as it is; the queue goes on with the others and
then raises :class:`RunsDiverged` naming it, so one bad run does not idle a core for the night.

A run's state (:func:`state`): ``done`` (finished record), ``training`` (a live process holds its
lock), ``partial`` (a checkpoint or an unfinished record) or ``missing``.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Iterable, Sequence

from ..core.environment import repo_path
from ..core.records import CHECKPOINT, RECORD, existing_record, read_json
from ..metasd.config import RunConfig
from ..protocol.runner import run as run_config
from ..protocol.runner import run_dir_for
from .plan import Config, PlannedRun, matching, planned_runs
from .profile import RunSpec, load_profile

LOCK = "train.lock"
STATES = ("done", "training", "partial", "missing")
#: seconds between two looks at a queue whose every run is being trained elsewhere
POLL_SECONDS = 30


class NoMatchingRun(LookupError):
    """``--match`` left no run of the profile."""


class RunsDiverged(FloatingPointError):
    """Runs of the queue that diverged; the others were trained."""


# --- locks and states -------------------------------------------------------------------------------
def lock_owner_alive(lock: Path) -> bool:
    """Whether the process named in ``lock`` still runs (locks of other hosts count as alive)."""
    try:
        owner = json.loads(lock.read_text())
    except (OSError, ValueError):
        return False
    if owner.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def try_lock(run_dir: Path) -> bool:
    """Create ``run_dir/train.lock`` for this process; False when a live process holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = run_dir / LOCK
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if lock_owner_alive(lock):
                return False
            lock.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as handle:
            json.dump({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}, handle)
        return True
    return False


def release(run_dir: Path) -> None:
    (run_dir / LOCK).unlink(missing_ok=True)


def state(run_dir: Path) -> str:
    """One of :data:`STATES`."""
    if existing_record(run_dir) is not None:
        return "done"
    if (run_dir / LOCK).exists() and lock_owner_alive(run_dir / LOCK):
        return "training"
    if (run_dir / CHECKPOINT).exists() or (run_dir / RECORD).exists():
        return "partial"
    return "missing"


# --- the --list report ------------------------------------------------------------------------------
def report_lines(runs: Sequence[PlannedRun], runs_dir: Path, unused: bool = True) -> list[str]:
    """One line per run (state, paper dataset, rows, name; test MRR and minutes when done), a
    count per state and, with ``unused``, the folders of ``runs_dir`` that no run of ``runs``
    uses (records of older profile versions, teachers of other seeds)."""
    lines, counts = [], dict.fromkeys(STATES, 0)
    for run in runs:
        run_dir = run_dir_for(run.config, runs_dir)
        st = state(run_dir)
        counts[st] += 1
        extra = ""
        if st == "done":
            record = read_json(run_dir / RECORD)
            mrr = record["test"][record["selected_model"]]["all"]["MRR"]
            # training + validation (records before valid_seconds existed: training only)
            minutes = sum(h.get("seconds", 0) + h.get("valid_seconds", 0) for h in record["history"]) / 60
            extra = f"test MRR {mrr:.4f}, {minutes:.0f} min"
        lines.append(f"{st:9s} {run.paper_dataset:10s} {', '.join(run.rows):28s} {run.name}  {extra}")
    lines.append(f"{len(runs)} runs: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    if unused and runs_dir.is_dir():
        names = {run.name for run in runs}
        others = sorted(p.name for p in runs_dir.iterdir() if p.is_dir() and p.name not in names)
        if others:
            lines.append(f"in {runs_dir} but not a run of this profile's tables (DistilE runs, teachers, old configs): "
                         + ", ".join(others))
    return lines


# --- training ---------------------------------------------------------------------------------------
def train(runs: Sequence[PlannedRun], runs_dir: Path, device: str = "auto", show_progress: bool = False,
          stop_after_minutes: float | None = None) -> bool:
    """Train every run of ``runs`` not done yet, in order, sharing ``runs_dir`` with other
    processes through locks; True when all are done, False when the deadline
    (``stop_after_minutes`` from now) came first. Prints what it does. Raises
    :class:`RunsDiverged` at the end when runs diverged (each is skipped when it happens)."""
    deadline = None if stop_after_minutes is None else time.time() + 60 * stop_after_minutes
    pending = {run.name: run.config for run in runs}  # in order
    diverged: dict[str, str] = {}
    stopped = False  # by the deadline
    while pending and not stopped:
        if deadline is not None and time.time() > deadline:
            stopped = True
            break
        progressed = False
        for name, config in list(pending.items()):
            run_dir = run_dir_for(config, runs_dir)
            if state(run_dir) == "done":
                del pending[name]
                continue
            teacher = config.teacher_config()
            if teacher is not None and state(run_dir_for(teacher, runs_dir)) == "training":
                continue  # its frozen teacher is being trained by another process
            if not try_lock(run_dir):
                continue
            try:
                # False: stopped at its last checkpoint before the deadline
                stopped = not train_one(config, run_dir, runs_dir, device, show_progress, deadline)
            except FloatingPointError as err:  # this run's own: skipped (its checkpoint stays), the others go on
                print(f"  diverged, skipped: {err}", flush=True)
                diverged[name] = str(err)
            finally:
                release(run_dir)
            if not stopped:
                del pending[name]
            progressed = True
            break
        if not progressed and pending:
            time.sleep(POLL_SECONDS)  # everything left is being trained (or waits for a teacher) elsewhere
    if stopped:  # runs finished elsewhere meanwhile are not counted
        left = sum(state(run_dir_for(config, runs_dir)) != "done" for config in pending.values())
        print(f"time is up; {left} runs left (run the same command again to go on)")
    if diverged:
        raise RunsDiverged(
            f"{len(diverged)} run(s) diverged (the others were trained): " + "; ".join(diverged.values())
        )
    if not stopped:
        print("all runs done")
    return not stopped


def train_one(config: Config, run_dir: Path, runs_dir: Path, device: str, show_progress: bool,
              deadline: float | None) -> bool:
    """Train (or resume) one locked run, up to the deadline; True when it finished."""
    start = time.time()
    print(f"training {config.run_name()} ...", flush=True)
    # whole validation intervals only: the run stops at its last checkpoint before the deadline
    record = run_config(config, runs_dir, device=device, show_progress=show_progress, stop_at_time=deadline)
    if record.get("status") == "complete":
        mrr = record["test"][record["selected_model"]]["all"]["MRR"]
        print(f"  done in {(time.time() - start) / 60:.1f} min: test MRR {mrr:.4f}", flush=True)
        return True
    print(f"  stopped after epoch {record['epoch']} ({(time.time() - start) / 60:.1f} min); it resumes next time")
    return False


# --- the whole command ------------------------------------------------------------------------------
def run_queue(profile: str | dict, *, list_only: bool = False, match: Iterable[str] | None = None,
              runs_dir: str | os.PathLike | None = None, device: str | None = None, threads: int | None = None,
              stop_after_minutes: float | None = None, show_progress: bool = False) -> int:
    """``scripts/train_runs.py``: the plan of ``profile`` (a name, a path or a loaded profile),
    narrowed to the runs that ``match``; print each run's state (``list_only``) or train them.
    ``runs_dir``, ``device`` and ``threads`` default to the profile's. Raises
    :class:`NoMatchingRun` when ``match`` leaves nothing. Returns the exit status."""
    if not isinstance(profile, dict):
        profile = load_profile(profile)
    runs_dir = repo_path(runs_dir) or Path(profile["runs_dir"])  # relative: to the repository root
    if threads or profile.get("threads"):
        import torch

        torch.set_num_threads(int(threads or profile["threads"]))
    match = list(match or [])
    runs = matching(planned_runs(profile), match)
    if not runs:
        raise NoMatchingRun(f"no run of profile {profile['name']} matches {match}; see --list")
    if list_only:
        for line in report_lines(runs, runs_dir, unused=not match):
            print(line)
        return 0
    train(runs, runs_dir, device=device or profile.get("device", "auto"), show_progress=show_progress,
          stop_after_minutes=stop_after_minutes)
    return 0


# --- the notebooks' runs (kgdistill.study.facade re-exports these) ---------------------------------
def setup(profile: dict) -> None:
    """Apply the profile's process settings (torch threads) in this process."""
    import torch

    threads = profile.get("threads")
    if threads:
        torch.set_num_threads(int(threads))


def run_all(
    specs: Iterable[RunSpec | RunConfig],
    runs_dir: str | os.PathLike,
    show_progress: bool = False,
    data_dir: str | os.PathLike | None = None,
    device: str | None = "auto",
    retrain_since: float | None = None,
    required_env: dict[str, str] | None = None,
) -> dict[str, dict]:
    """Train whatever is missing and return ``{run name: record}`` for all given runs.

    Baselines run before distillation runs (KD teachers exist before their students), each
    distinct config once. ``retrain_since`` (a POSIX time) retrains every run whose record is
    older than it — the runner's ``--retrain``: runs shared by several notebooks train once.
    ``required_env`` (a profile's ``env``; :attr:`Study.required_env` passes it): a run that must
    train refuses to unless it is in force (:func:`kgdistill.protocol.runner.run`).
    """
    from ..core.datasets import load_dataset
    from ..protocol.runner import RECORD, run, run_dir_for

    configs: dict[str, RunConfig] = {}
    for item in specs:
        config = item.config if isinstance(item, RunSpec) else item
        configs.setdefault(config.run_name(), config)
    ordered = sorted(configs.values(), key=lambda c: c.method != "baseline")
    datasets: dict = {}
    records: dict[str, dict] = {}
    for config in ordered:
        path = run_dir_for(config, runs_dir) / RECORD
        force = retrain_since is not None and path.exists() and path.stat().st_mtime < retrain_since
        needs_data = force or not path.exists()
        dataset = None
        if needs_data:
            if config.dataset not in datasets:
                datasets[config.dataset] = load_dataset(config.dataset, data_dir)
            dataset = datasets[config.dataset]
        records[config.run_name()] = run(
            config, runs_dir, data_dir=data_dir, device=device, show_progress=show_progress, force=force,
            dataset=dataset, required_env=required_env,
        )
    return records
