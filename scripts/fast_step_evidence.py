#!/usr/bin/env python
"""Train the fast-path twins of a profile's reference runs and print the paired comparison.

The reference runs (default: notebook 08's baselines and MetaSD runs on Kinship and UMLS, source
ranks 100 and 1000, seeds 0-4; committed fp32 records of the cpu profile) are compared with the
same configs on the chunked bf16 step (``one_vs_all: chunked``, ``precision: bf16``;
:mod:`kgdistill.study.fast_step`), paired by seed. Twins are trained in ``--runs-dir`` (default
``results/<profile>/fast_step/runs``), resumably; the table goes to stdout and, with --save, to
``results/<profile>/tables/fast_step_evidence.{csv,md}``.

    python scripts/fast_step_evidence.py --profile cpu --list            # which twins exist
    OMP_NUM_THREADS=1 python scripts/fast_step_evidence.py --profile cpu --train --threads 1
    python scripts/fast_step_evidence.py --profile cpu --save            # the table from the records
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu", help="a name of params/ or a path to a profile file")
    parser.add_argument("--datasets", nargs="+", default=["Kinship", "UMLS"])
    parser.add_argument("--methods", nargs="+", default=["baseline", "metasd"])
    parser.add_argument("--ranks", type=int, nargs="+", default=[100, 1000], help="source ranks")
    parser.add_argument("--runs-dir", default=None, help="where the twins' records go (relative: to the repo root)")
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16",
                        help="the twins' precision (fp32: chunking alone, to tell its effect from bf16's)")
    parser.add_argument("--list", action="store_true", help="list the pairs and their state, train nothing")
    parser.add_argument("--train", action="store_true", help="train the missing twins (resumable)")
    parser.add_argument("--stop-after-minutes", type=float, default=None, help="start no new twin after this")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--save", action="store_true", help="save the table under results/<profile>/tables")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT / "lib"))
    import torch

    from kgdistill.core.environment import repo_path
    from kgdistill.core.records import existing_record
    from kgdistill.protocol.runner import run, run_dir_for
    from kgdistill.study.fast_step import evidence_runs, fast_twin, paired_table
    from kgdistill.study.plan import planned_runs
    from kgdistill.study.profile import load_profile, results_dir
    from kgdistill.study.tables import format_table

    if args.threads:
        torch.set_num_threads(args.threads)
    profile = load_profile(args.profile)
    runs_dir = repo_path(args.runs_dir) or results_dir(profile) / "fast_step" / "runs"
    references = evidence_runs(planned_runs(profile), args.datasets, args.methods, args.ranks)
    start = time.time()
    pairs = []
    for config in references:
        reference = existing_record(run_dir_for(config, profile["runs_dir"]))
        twin = fast_twin(config, args.precision)
        record = existing_record(run_dir_for(twin, runs_dir))
        if args.list:
            print(f"{'done' if record else 'missing':8s} {twin.run_name()}  (reference "
                  f"{'done' if reference else 'missing'}: {config.run_name()})")
        elif args.train and record is None and reference is not None:
            if args.stop_after_minutes is not None and time.time() - start > 60 * args.stop_after_minutes:
                print("stopping: --stop-after-minutes reached")
                break
            print(f"training {twin.run_name()} ...", flush=True)
            record = run(twin, runs_dir, device="cpu")
        pairs.append((config, reference, record))
    if args.list:
        return 0
    table = paired_table(pairs)
    if table.empty:
        print("no pair has both records yet")
        return 0
    print(format_table(table.set_index(["dataset", "rank", "method", "model"])))
    if args.save:
        from kgdistill.study.outputs import save_table, stamp

        records = [r for _, ref, twin in pairs for r in (ref, twin) if r is not None]
        save_table(table.set_index(["dataset", "rank", "method", "model"]), f"fast_step_evidence_{args.precision}",
                   profile, caption=f"Test MRR, chunked {args.precision} step vs autograd fp32 step, paired by "
                                    f"seed; {stamp(records, profile)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
