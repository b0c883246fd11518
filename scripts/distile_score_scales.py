#!/usr/bin/env python
"""Score scales of DistilE's WN18RR teachers and students: why the margin soft loss can hurt.

    python scripts/distile_score_scales.py                      # TransE and TransH, cpu profile (~1 min)
    python scripts/distile_score_scales.py --models TransE ComplEx RotatE

For each backbone, the Table 3 teacher and the no-DS and DS students of every student dim whose
trained weights are on this machine (``best.pt``: checkpoints are not committed, so a clone has
none until ``scripts/train_runs.py`` trains them): the mean score of a fixed sample of training
positives and of their corrupted negatives, and the mean ``|s_teacher − s_model|`` over the
same triples (``gap to teacher``; the teacher before any co-training), i.e. the soft loss (Eq. 4, margin backbones)
that a model with these scores pays against its teacher.

Why it matters: TransE and TransH score by a raw L1 distance summed over the dimensions, so a
64-dim teacher's distances are several times a small student's; Eq. 4 asks the student to match
them, against its hard loss. Logistic backbones (ComplEx, RotatE) compare σ(score) instead
(Eq. 8), where the last column is still the raw-score gap, not their soft loss.
The table is also written to ``results/analysis/tables/distile_score_scales_<dataset>.{csv,md,tex}``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ANALYSIS = "analysis"  # outputs under results/analysis/ (not a profile)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--dataset", default="WN18RR", help="the paper dataset of Table 3 (WN18RR) or 4 (FB15k-237)")
    parser.add_argument("--models", nargs="+", default=["TransE", "TransH"])
    parser.add_argument("--triples", type=int, default=2048, help="training positives sampled (seed 0)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs-dir", help="records folder (default: the profile's runs_dir)")
    parser.add_argument("--output-root", help="where tables/ goes (default: results/analysis)")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT / "lib"))
    import pandas as pd
    import torch

    from kgdistill.core.datasets import load_dataset
    from kgdistill.core.environment import repo_path
    from kgdistill.core.records import BEST, RECORD
    from kgdistill.distile.config import DistilEConfig
    from kgdistill.distile.sampling import corrupt
    from kgdistill.protocol.runner import load_best, run_dir_for
    from kgdistill.study.outputs import save_table, stamp
    from kgdistill.study.plan import planned_runs
    from kgdistill.study.profile import load_profile
    from kgdistill.study.tables import format_table

    torch.set_num_threads(args.threads)
    profile = load_profile(args.profile)
    runs_dir = repo_path(args.runs_dir) or Path(profile["runs_dir"])  # relative: to the repository root
    configs = [run.config for run in planned_runs(profile) if isinstance(run.config, DistilEConfig)
               and run.paper_dataset == args.dataset and any("Table 3" in row or "Table 4" in row for row in run.rows)]
    if not configs:
        sys.exit(f"profile {args.profile} plans no Table 3/4 DistilE run on {args.dataset}; see train_runs.py --list")
    dataset = load_dataset(configs[0].dataset)
    generator = torch.Generator().manual_seed(0)
    positives = dataset.train[torch.randperm(len(dataset.train), generator=generator)[: args.triples]]
    negatives = corrupt(positives, configs[0].negatives, dataset.n_entities, generator)

    def trained_here(config) -> bool:  # load_best would train a run without a record: never here
        folder = run_dir_for(config, runs_dir)
        return (folder / RECORD).exists() and (folder / BEST).exists()

    def scores(model):
        with torch.no_grad():
            return (model.score(positives[:, 0], positives[:, 1], positives[:, 2]),
                    model.score(negatives[..., 0], negatives[..., 1], negatives[..., 2]))

    rows, records = [], []

    def trained_model(config, label: str):
        """The run's selected model, or None (said) when this machine has no weights of it."""
        if not trained_here(config):
            print(f"{config.model} {config.dim} {label}: not trained here ({config.run_name()})")
            return None
        model, record = load_best(config, runs_dir, dataset, retrain_missing=False)
        records.append(record)
        return model

    for name in args.models:
        mine = [c for c in configs if c.model == name]
        teacher = next((c for c in mine if c.method == "plain" and c.dim == profile["distile"]["teacher_dim"]), None)
        teacher_model = trained_model(teacher, "teacher") if teacher is not None else None
        if teacher_model is None:
            continue
        t_pos, t_neg = scores(teacher_model)
        for config in sorted(mine, key=lambda c: (-c.dim, c.method != "plain")):
            label = "teacher" if config is teacher else ("no-DS" if config.method == "plain" else "DS")
            model = teacher_model if config is teacher else trained_model(config, label)
            if model is None:
                continue
            pos, neg = scores(model)
            gap = torch.cat([(t_pos - pos).abs().unsqueeze(1), (t_neg - neg).abs()], 1).mean()
            rows.append({"model": name, "dim": config.dim, "run": label, "positives": float(pos.mean()),
                         "negatives": float(neg.mean()), "gap to teacher": float(gap)})
    if not rows:
        sys.exit("no trained weights found on this machine; train the runs first (scripts/train_runs.py)")
    frame = pd.DataFrame(rows).set_index(["model", "dim", "run"])
    caption = (f"DistilE on {args.dataset}, profile {args.profile}: mean score of {len(positives)} training positives "
               f"and their {negatives.shape[1]} negatives each, and the mean |teacher − model| score gap\n\n"
               f"{stamp(records, ANALYSIS)}")
    print(caption)
    print(format_table(frame, precision=3))
    paths = save_table(frame, f"distile_score_scales_{args.dataset}", ANALYSIS, caption=caption, root=args.output_root)
    print(sorted(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
