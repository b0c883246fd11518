#!/usr/bin/env python
"""How much of a ComplEx model survives one-shot 90% magnitude pruning, by rank and regularisation.

    python scripts/pruning_vs_rank.py     # UMLS, ranks 16..1024, N3 0.01 and 0.1 (~4 min, 1 CPU thread)
    python scripts/pruning_vs_rank.py --dataset Kinship --ranks 32 128 512 --reg-weights 0.01

Trains one ComplEx + N3 baseline per (rank, weight) with the library's runner (records reused),
then prints, per model: validation MRR dense and through a fresh global magnitude mask keeping
10% of the weights (no retraining; MetaSD's student at γ = 0.9 before any distillation), the
share retained, and the share of the entity table's mass held by its top 10% of coordinates.
The table is also written to ``results/analysis/tables/pruning_vs_rank_<dataset>.{csv,md,tex}``.

Why it matters here: the cpu profile trains rank 64 (the paper: 2000), and the pruned MetaSD
student can only be as good as a 90% mask of its source lets it be.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ANALYSIS = "analysis"  # outputs under results/analysis/ (not a profile)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="UMLS")
    parser.add_argument("--ranks", type=int, nargs="+", default=[16, 64, 256, 1024])
    parser.add_argument("--reg-weights", type=float, nargs="+", default=[0.01, 0.1])
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--learning-rate", type=float, default=0.5,
                        help="Adagrad (0.5 suits UMLS/Kinship; 0.1 the large KGs)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--gamma", type=float, default=0.9)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs-dir", default=str(ROOT / "results" / "analysis" / "runs"),
                        help="run records/checkpoints (not committed)")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT / "lib"))
    import pandas as pd
    import torch

    from kgdistill import RunConfig, load_dataset, run
    from kgdistill.core.environment import repo_path
    from kgdistill.study.analysis import load_baseline, one_shot_pruning
    from kgdistill.study.outputs import save_table, stamp
    from kgdistill.study.tables import format_table

    torch.set_num_threads(args.threads)
    args.runs_dir = repo_path(args.runs_dir)  # relative: to the repository root
    dataset = load_dataset(args.dataset)
    rows, records = [], []
    for weight in args.reg_weights:
        for rank in args.ranks:
            config = RunConfig(dataset=args.dataset, model="ComplEx", rank=rank, regularizer="N3", reg_weight=weight,
                               rp_weight=0.0, batch_size=args.batch_size, max_epochs=args.epochs,
                               eval_every=max(1, args.epochs // 5), learning_rate=args.learning_rate)
            records.append(run(config, args.runs_dir, device="cpu", dataset=dataset))
            result = one_shot_pruning(load_baseline(config, args.runs_dir, dataset), dataset, args.gamma)
            rows.append({"model": f"N3 {weight:g}, rank {rank}", **result})
            print(f"N3 {weight:g}, rank {rank}: dense {result['dense MRR']:.4f}, pruned {result['pruned MRR']:.4f} "
                  f"({result['retained']:.1%}), mass in top 10% coordinates {result['mass share']:.3f}", flush=True)
    frame = pd.DataFrame(rows).set_index("model").rename_axis(None)
    caption = (f"One-shot magnitude pruning (keep {1 - args.gamma:.0%}) of ComplEx + N3 on {args.dataset} "
               f"({args.epochs} epochs, Adagrad {args.learning_rate}, batch {args.batch_size}); valid MRR\n\n"
               f"{stamp(records, ANALYSIS)}")
    print(caption)
    print(format_table(frame))
    paths = save_table(frame, f"pruning_vs_rank_{args.dataset}", ANALYSIS, caption=caption)
    print(sorted(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
