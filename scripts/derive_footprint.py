#!/usr/bin/env python
"""Make what notebook 05's footprint reads back: the MetaSD student's sparse export and its measurement.

    python scripts/derive_footprint.py --profile cpu     # then commit results/cpu/derived/<run>/
    python scripts/derive_footprint.py --profile cpu --no-train   # only when best.pt is there

Checkpoints are not committed, so on a clone the footprint run of a profile (its ``footprint``
section) has a record but no ``best.pt``. This trains its weights again in ``<runs>/.retrain``
(the committed record stays; resumable; the cpu profile's run takes 40-80 CPU-minutes), then
measures the footprint (:meth:`kgdistill.study.footprint.Footprint.measure`) and writes, under
``results/<profile>/derived/<run name>/``:

* ``footprint.json``: the measurement (sizes, test MRR, timings, the machine), which notebook 05
  reads back instead of measuring (``scripts/reproduce.py --retime`` measures it again);
* ``sparse/student.pt``: the student's sparse export (the kept weights only, ~1 MB for the cpu
  profile), from which notebook 05 re-checks the student's test MRR without any checkpoint.

Both are derived files meant to be committed with the records; ``scripts/reproduce.py --only 05``
then renders the footprint table from them. The profile's ``env`` is set before torch is imported
(the script re-executes itself with it). Errors are one line; ``--debug`` shows the traceback.
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
    parser.add_argument("--results-dir", help="the study's root (default: results/<profile>/)")
    parser.add_argument("--no-train", action="store_true", help="stop with a message instead of training the weights")
    parser.add_argument("--show-progress", action="store_true", help="a progress bar while training")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT / "lib"))
    from kgdistill.core.environment import ROOT_ENV, show_library_log

    os.environ.setdefault(ROOT_ENV, str(ROOT))
    show_library_log()  # one line per training epoch
    try:
        from kgdistill.study import Study

        study = Study(args.profile, results_dir=args.results_dir, show_progress=args.show_progress, retime=True)
        fp = study.footprint()
        print(fp.describe(), flush=True)
        frame = fp.measure(retime=True, train=not args.no_train)
        print(fp.origin)
        if frame is None:
            return 1
        print(fp.summary())
        print(f"next: commit {fp.export_dir.parent} and run scripts/reproduce.py --profile {study.name} --only 05")
        return 0
    except Exception as err:  # one clear line; --debug: the traceback
        if args.debug:
            raise
        print(f"error: {type(err).__name__}: {err}\n(run again with --debug for the full traceback)", file=sys.stderr)
        return 2


def exec_with_profile_env(argv: list[str]) -> None:
    """Re-execute with the profile's ``env`` when some of it is not set yet (before torch is imported)."""
    sys.path.insert(0, str(ROOT / "lib"))
    from kgdistill.core.environment import apply_profile_env

    if apply_profile_env(parse_args(argv).profile):
        os.execv(sys.executable, [sys.executable, str(Path(__file__).resolve()), *argv])


if __name__ == "__main__":
    exec_with_profile_env(sys.argv[1:])
    sys.exit(main())
