"""MetaSD student (γ = 0.9) against a plain ComplEx of the same non-zero size on Kinship, 3 seeds.

    python scripts/kinship_student_check.py RUNS_DIR

Trains (or reuses from RUNS_DIR) one MetaSD run (source rank 100) and one baseline at the rank whose dense size
equals the student's kept weights, for seeds 0-2, with the same optimiser, regulariser and epochs, and prints the
test MRR of each and mean ± std. The Kinship archive comes from the library's data folder (KGC_DATA_DIR, else
../shared/data next to the repository), else it is downloaded.
"""
from __future__ import annotations

import statistics
import sys

import torch

from kgdistill import RunConfig, load_dataset, run
from kgdistill.core.models import build_model, rank_for_budget
from kgdistill.core.pruning import kept_count

COMMON = dict(dataset="Kinship", batch_size=256, max_epochs=40, eval_every=5, regularizer="N3", reg_weight=5e-3,
              learning_rate=0.1, init_scale=1e-3)
SOURCE_RANK = 100


def main(runs_dir: str) -> None:
    torch.set_num_threads(1)
    dataset = load_dataset("Kinship")
    dense = build_model("ComplEx", dataset.n_entities, dataset.n_relations, SOURCE_RANK).parameter_counts()["dense"]
    plain_rank = rank_for_budget("ComplEx", dataset.n_entities, dataset.n_relations, kept_count(dense, 0.9))
    mrr: dict[str, list[float]] = {"MetaSD student": [], f"plain ComplEx rank {plain_rank}": []}
    for seed in (0, 1, 2):
        meta = run(RunConfig(method="metasd", rank=SOURCE_RANK, seed=seed, **COMMON), runs_dir=runs_dir,
                   dataset=dataset)
        plain = run(RunConfig(method="baseline", rank=plain_rank, seed=seed, **COMMON), runs_dir=runs_dir,
                    dataset=dataset)
        mrr["MetaSD student"].append(meta["test"]["student"]["all"]["MRR"])
        mrr[f"plain ComplEx rank {plain_rank}"].append(plain["test"]["model"]["all"]["MRR"])
        print(f"seed {seed}: MetaSD student {mrr['MetaSD student'][-1]:.4f} "
              f"(source {meta['test']['teacher']['all']['MRR']:.4f}, {meta['parameter_counts']['student']['nonzero']} "
              f"non-zero) | plain rank {plain_rank} {plain['test']['model']['all']['MRR']:.4f} "
              f"({plain['parameter_counts']['model']['dense']} params)", flush=True)
    for name, values in mrr.items():
        print(f"{name}: test MRR {statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
