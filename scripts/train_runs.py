#!/usr/bin/env python
"""Train the MetaSD study's runs of a profile without executing the notebooks; list their state.

    python scripts/train_runs.py --profile cpu --list          # every run: done / training / partial / missing
    python scripts/train_runs.py --profile cpu                 # train what is missing, baselines first
    python scripts/train_runs.py --profile cpu --match WN18RR  # only runs whose row/recipe/name contains it
    python scripts/train_runs.py --profile cpu --match "DistilE notebook 06"   # or "DistilE in Table 1"
    python scripts/train_runs.py --profile paper --stop-after-minutes 8   # GPU chunks: resume next call
    python scripts/train_runs.py --profile gpu --launcher submitit   # one Slurm job per run (kgdistill.study.launch)

The runs are the profile's plan (``kgdistill.study.plan.planned_runs``): those of Tables 1-4, Figure 1
and the footprint, the teacher and student of Table 1's added DistilE row and notebook 06's
DistilE runs. The notebooks then rebuild every table from the records in minutes
(``scripts/reproduce.py``). DistilE runs picked by a grid search (a section with a ``grid``, e.g.
the paper profile's) depend on the previous runs' results: they are not listed here and train
inside the notebooks.

Several processes may work on one runs folder at once (e.g. one per core, each with one torch
thread): a process marks the run it trains with ``train.lock`` (its host and pid) and the others
skip it; a KD run waits until its teacher is no longer being trained elsewhere. A lock left by a
killed process is taken over. A killed run resumes from its last epoch checkpoint
(``kgdistill.study.queue``) and says so ("resuming from epoch 5").

The profile's ``env`` (e.g. the smoke profile's CPU-kernel pins) is set before torch is imported
(the script re-executes itself with it); a value the caller set that differs from the profile's
stops training with a message naming it. A relative ``--runs-dir`` is relative to the repository
root wherever the command is typed, as the profile's ``runs_dir`` and the notebooks' parameters
(:func:`kgdistill.core.environment.repo_path`). Errors are one clear line; ``--debug`` shows the
traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu", help="a name of params/ or a path to a profile file (default: cpu)")
    parser.add_argument("--list", action="store_true", help="print every run's state and stop")
    parser.add_argument("--match", nargs="+",
                        help="only runs whose row, recipe, dataset or run name contains one of these")
    parser.add_argument("--runs-dir", help="records folder (default: the profile's runs_dir); a relative one is "
                                           "relative to the repository root, wherever the command is typed")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: the profile's device)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: the profile's, else torch's)")
    parser.add_argument("--stop-after-minutes", type=float, default=None,
                        help="start no new run after this; the run in progress stops at its last validation "
                             "checkpoint before it, at its own pace (it resumes next call)")
    parser.add_argument("--show-progress", action="store_true")
    parser.add_argument("--launcher", choices=("queue", "submitit"), default="queue",
                        help="queue: train here, in order; submitit: one job per run (Slurm, with the profile's "
                             "slurm section; local processes without Slurm)")
    parser.add_argument("--cluster", choices=("slurm", "local", "debug"), default=None,
                        help="submitit's executor (default: slurm when srun is found, else local)")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, enforce_env: bool = True) -> int:
    """The command; ``enforce_env=False`` (in-process tests only, whose interpreter imported torch
    without the profile's ``env``) trains even when that env is not in force."""
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT / "lib"))
    from kgdistill.core.environment import show_library_log

    show_library_log()
    try:
        return _run(args, enforce_env)
    except Exception as err:  # one clear line; --debug: the traceback
        if args.debug:
            raise
        print(f"error: {type(err).__name__}: {err}\n(run again with --debug for the full traceback)", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, enforce_env: bool) -> int:
    from kgdistill.core.environment import check_numeric_env, profile_env
    from kgdistill.study.queue import NoMatchingRun, run_queue

    if enforce_env and not args.list and args.launcher == "queue":
        check_numeric_env(profile_env(args.profile), where=f"profile {args.profile}")
    try:
        if args.launcher == "submitit" and not args.list:
            from kgdistill.study.launch import submit_queue

            return submit_queue(args.profile, match=args.match, runs_dir=args.runs_dir, device=args.device,
                                threads=args.threads, cluster=args.cluster)
        return run_queue(args.profile, list_only=args.list, match=args.match, runs_dir=args.runs_dir,
                         device=args.device, threads=args.threads, stop_after_minutes=args.stop_after_minutes,
                         show_progress=args.show_progress)
    except NoMatchingRun as err:
        sys.exit(str(err))


def exec_with_profile_env(argv: list[str]) -> None:
    """Re-execute this script with the profile's ``env`` (e.g. the smoke profile's CPU-kernel pins)
    when some of it is not set yet: those variables must be in place before torch is imported
    (importing kgdistill imports torch, so the new process is what gets them)."""
    sys.path.insert(0, str(ROOT / "lib"))
    from kgdistill.core.environment import apply_profile_env

    if apply_profile_env(parse_args(argv).profile):  # an unknown profile adds nothing: main names it
        os.execv(sys.executable, [sys.executable, str(Path(__file__).resolve()), *argv])


if __name__ == "__main__":
    exec_with_profile_env(sys.argv[1:])
    sys.exit(main())
