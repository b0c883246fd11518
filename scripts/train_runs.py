#!/usr/bin/env python
"""Train the MetaSD study's runs of a profile without executing the notebooks; list their state.

    python scripts/train_runs.py --profile cpu --list          # every run: done / partial / missing
    python scripts/train_runs.py --profile cpu                 # train what is missing, baselines first
    python scripts/train_runs.py --profile cpu --match WN18RR  # only runs whose row/recipe/name contains it
    python scripts/train_runs.py --profile cpu --match "DistilE notebook 06"   # or "DistilE in Table 1"
    python scripts/train_runs.py --profile paper --stop-after-minutes 8   # GPU chunks: resume next call

The runs are those of Tables 1-4, Figure 1 and the footprint (``kgdistill.study.all_specs``) and
the DistilE runs: the teacher and student of Table 1's added row
(``kgdistill.distile.experiments.table1_planned_runs``) and notebook 06's
(``kgdistill.distile.experiments.planned_runs``). The notebooks then rebuild every table from the
records in minutes (``scripts/reproduce.py``). DistilE runs picked by a grid search (a section
with a ``grid``, e.g. the paper profile's) depend on the previous runs' results: they are not
listed here and train inside the notebooks.

Several processes may work on one runs folder at once (e.g. one per core, each with one torch
thread): a process marks the run it trains with ``train.lock`` (its host and pid) and the others
skip it; a KD run waits until its teacher is no longer being trained elsewhere. A lock left by a
killed process is taken over. A killed run resumes from its last epoch checkpoint.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = "train.lock"


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


def state(run_dir: Path) -> str:
    from kgdistill.training import RECORD, existing_record

    if existing_record(run_dir) is not None:
        return "done"
    if (run_dir / LOCK).exists() and lock_owner_alive(run_dir / LOCK):
        return "training"
    if (run_dir / "checkpoint.pt").exists() or (run_dir / RECORD).exists():
        return "partial"
    return "missing"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu", help="params/<profile>.yaml (default: cpu)")
    parser.add_argument("--list", action="store_true", help="print every run's state and stop")
    parser.add_argument("--match", nargs="+", help="only runs whose row, recipe, dataset or run name contains one of these")
    parser.add_argument("--runs-dir", help="records folder (default: the profile's runs_dir)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: the profile's device)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the profile's, else torch's)")
    parser.add_argument("--stop-after-minutes", type=float, default=None,
                        help="start no new epoch-chunked run after this; the run in progress stops at its next checkpoint")
    parser.add_argument("--show-progress", action="store_true")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT / "lib"))
    import torch
    from kgdistill.datasets import load_dataset
    from kgdistill.distile.experiments import planned_runs, table1_planned_runs
    from kgdistill.distile.trainer import run_distile
    from kgdistill.study import all_specs, load_profile, use_shared_data
    from kgdistill.training import run, run_dir_for

    profile = load_profile(args.profile)
    runs_dir = Path(args.runs_dir).resolve() if args.runs_dir else Path(profile["runs_dir"])
    if args.threads or profile.get("threads"):
        torch.set_num_threads(int(args.threads or profile["threads"]))
    use_shared_data(ROOT)

    rows: dict[str, dict] = {}
    for spec in all_specs(profile):
        config = spec.config
        entry = rows.setdefault(config.run_name(), {"config": config, "rows": set(), "dataset": spec.paper_dataset})
        entry["rows"].add(spec.row)
        entry["recipe"] = spec.recipe
    distile_row = (profile.get("distile_in_table1") or {}).get("row", "DistilE")
    for paper_dataset, role, config in table1_planned_runs(profile, load_dataset):
        rows[config.run_name()] = {"config": config, "dataset": paper_dataset, "recipe": "DistilE in Table 1",
                                   "rows": {distile_row if role == "student" else f"DistilE {role}"}}
    if profile.get("distile"):
        paper_name = {used.lower(): paper for paper, used in profile["distile"]["datasets"].items()}
        for config, used in planned_runs(profile["distile"]):
            role = "teacher" if config.method == "plain" else f"student of d{config.teacher['dim']}"
            if config.method == "ds" and config.stage1_epochs in (0, config.max_epochs):  # Table 6 ablations
                role += " -S1" if config.stage1_epochs == 0 else " -S2"
            rows[config.run_name()] = {"config": config, "dataset": paper_name[config.dataset.lower()],
                                       "recipe": "DistilE notebook 06",
                                       "rows": {f"{config.model} d{config.dim} {role} ({', '.join(used)})"}}
    if args.match:
        rows = {name: e for name, e in rows.items()
                if any(m in text for m in args.match for text in (name, e["recipe"], e["dataset"], *e["rows"]))}
        if not rows:
            sys.exit(f"no run of profile {profile['name']} matches {args.match}; see --list")
    # teachers first: a KD or DistilE student then finds its teacher trained (or in training)
    ordered = sorted(rows.items(), key=lambda item: item[1]["config"].method not in ("baseline", "plain"))

    if args.list:
        from kgdistill.training import RECORD

        counts = {s: 0 for s in ("done", "training", "partial", "missing")}
        for name, e in ordered:
            run_dir = run_dir_for(e["config"], runs_dir)
            st = state(run_dir)
            counts[st] += 1
            extra = ""
            if st == "done":
                record = json.loads((run_dir / RECORD).read_text())
                mrr = record["test"][record["selected_model"]]["all"]["MRR"]
                # training + validation (records before valid_seconds existed: training only)
                minutes = sum(h.get("seconds", 0) + h.get("valid_seconds", 0) for h in record["history"]) / 60
                extra = f"test MRR {mrr:.4f}, {minutes:.0f} min"
            print(f"{st:9s} {e['dataset']:10s} {', '.join(sorted(e['rows'])):28s} {name}  {extra}")
        print(f"{len(rows)} runs: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
        if not args.match and runs_dir.is_dir():
            # e.g. records of an earlier version of the profile, or KD teachers of other seeds
            unused = sorted(p.name for p in runs_dir.iterdir() if p.is_dir() and p.name not in rows)
            if unused:
                print(f"in {runs_dir} but not a run of this profile's tables (DistilE runs, teachers, old configs): "
                      + ", ".join(unused))
        return 0

    deadline = None if args.stop_after_minutes is None else time.time() + 60 * args.stop_after_minutes
    device = args.device or profile.get("device", "auto")
    pending = [(name, e["config"]) for name, e in ordered]
    while pending:
        if deadline is not None and time.time() > deadline:
            print(f"time is up; {len(pending)} runs left (run the same command again to go on)")
            return 0
        progressed = False
        for name, config in list(pending):
            run_dir = run_dir_for(config, runs_dir)
            if state(run_dir) == "done":
                pending.remove((name, config))
                continue
            if config.teacher and state(run_dir_for(type(config).from_dict(config.teacher), runs_dir)) == "training":
                continue  # its frozen teacher is being trained by another process
            if not try_lock(run_dir):
                continue
            try:
                start = time.time()
                print(f"training {name} ...", flush=True)
                stop = None
                if deadline is not None:
                    # whole epochs only: stop at the first checkpoint past the deadline
                    stop = _epochs_within(run_dir, config, deadline)
                train = run_distile if config.method in ("plain", "ds") else run
                record = train(config, runs_dir, device=device, show_progress=args.show_progress, stop_after_epoch=stop)
                if record.get("status") == "complete":
                    mrr = record["test"][record["selected_model"]]["all"]["MRR"]
                    print(f"  done in {(time.time() - start) / 60:.1f} min: test MRR {mrr:.4f}", flush=True)
                    pending.remove((name, config))
                else:
                    # runs stop at their first checkpoint (validation epoch) at or after ``stop``
                    print(f"  stopped after epoch {record['epoch']} ({(time.time() - start) / 60:.1f} min); "
                          "it resumes next time")
            finally:
                (run_dir / LOCK).unlink(missing_ok=True)
            progressed = True
            break
        if not progressed and pending:
            time.sleep(30)  # everything left is being trained (or waits for a teacher) elsewhere
    print("all runs done")
    return 0


def _epochs_within(run_dir: Path, config, deadline: float) -> int:
    """The last epoch to train before ``deadline`` at the run's own pace (its slowest epoch so far,
    validation included); one more epoch when there is no checkpoint or no timing yet."""
    import torch

    checkpoint = run_dir / "checkpoint.pt"
    if not checkpoint.exists():
        return 1
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    history = state.get("history", [])
    done = len(history)
    per_epoch = max((h.get("seconds", 0) + h.get("valid_seconds", 0) for h in history), default=0) or None
    if per_epoch is None:
        return done + 1
    more = int((deadline - time.time()) // per_epoch)
    return min(config.max_epochs, done + max(1, more))


def exec_with_profile_env(argv: list[str]) -> None:
    """Re-execute this script with the profile's ``env`` (e.g. the smoke profile's CPU-kernel pins)
    when it is not set yet: those variables must be in place before torch is imported."""
    import yaml

    name = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--profile"), "cpu")
    path = Path(name) if name.endswith((".yaml", ".yml")) else ROOT / "params" / f"{name}.yaml"
    if not path.is_file():
        return  # load_profile will name the problem
    env = (yaml.safe_load(path.read_text()) or {}).get("env") or {}
    missing = {str(k): str(v) for k, v in env.items() if str(k) not in os.environ}
    if missing:
        os.environ.update(missing)
        os.execv(sys.executable, [sys.executable, str(Path(__file__).resolve()), *argv])


if __name__ == "__main__":
    exec_with_profile_env(sys.argv[1:])
    sys.exit(main())
