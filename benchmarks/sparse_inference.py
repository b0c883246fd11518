"""Ranking speed and memory of the exported sparse student against dense models.

Compares, on the same queries and batches: the dense source (teacher) at ``--rank``; the pruned
student exported with :func:`kgdistill.compression.sparse.export_sparse` and scored by
:class:`kgdistill.compression.sparse.SparseScorer` (kept weights only); the same student loaded back dense
(:func:`kgdistill.compression.sparse.load_sparse`); and a dense model whose size equals the student's
non-zero count. Weights are random (speed and size do not depend on training).

    python benchmarks/sparse_inference.py --dataset FB15k-237 --rank 500 --gamma 0.9
"""
from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path

import torch

from _options import add_common, add_dataset, load_data
from kgdistill.compression.sparse import SparseScorer, export_sparse, load_sparse
from kgdistill.core.models import BACKBONES, build_model, rank_for_budget
from kgdistill.core.pruning import magnitude_mask
from kgdistill.core.timer import timed
from kgdistill.metasd.config import RunConfig

#: the library's defaults (kgdistill.metasd.config.RunConfig): dataset, backbone, pruning rate γ, eval batch
DEFAULTS = RunConfig()


def queries_per_second(scorer, queries: torch.Tensor, batch_size: int, repeats: int) -> float:
    def rank_all() -> None:
        for i in range(0, len(queries), batch_size):
            scorer(queries[i : i + batch_size])

    with torch.no_grad():
        best = min(timed(rank_all, "cpu", repeats=repeats), default=float("inf"))
    return len(queries) / best


def state_bytes(model: torch.nn.Module) -> int:
    buffer = io.BytesIO()
    torch.save({"entity": model.entity.detach(), "relation": model.relation.detach()}, buffer)
    return buffer.getbuffer().nbytes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataset(parser, DEFAULTS.dataset)
    parser.add_argument("--model", default=DEFAULTS.model, choices=sorted(BACKBONES))
    parser.add_argument("--rank", type=int, default=500)
    parser.add_argument("--gamma", type=float, default=DEFAULTS.gamma,
                        help="pruning rate: the student keeps 1 - gamma of the weights")
    parser.add_argument("--queries", type=int, default=2000, help="test queries ranked per repeat")
    parser.add_argument("--batch-size", type=int, default=DEFAULTS.eval_batch_size,
                        help="queries per score matrix (the eval default)")
    parser.add_argument("--repeats", type=int, default=3)
    add_common(parser, device=False, threads=False)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)

    dataset = load_data(args)
    torch.manual_seed(0)
    teacher = build_model(args.model, dataset.n_entities, dataset.n_relations, args.rank, init_scale=0.1)
    teacher.set_masks(magnitude_mask(teacher.prunable(), args.gamma))
    kept = teacher.parameter_counts()["nonzero"]
    small_rank = rank_for_budget(args.model, dataset.n_entities, dataset.n_relations, kept)
    small = build_model(args.model, dataset.n_entities, dataset.n_relations, small_rank, init_scale=0.1)
    queries = dataset.queries("test")[: args.queries]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "student.sparse"
        info = export_sparse(teacher, path)
        sparse_scorer = SparseScorer(path)
        loaded = load_sparse(path)
        rows = [
            ("dense source (teacher)", args.rank, teacher.parameter_counts()["dense"], state_bytes(teacher),
             4 * teacher.parameter_counts()["dense"], teacher.score_tails),
            ("sparse student, CSR kernel", args.rank, kept, info["bytes"], sparse_scorer.storage_bytes(),
             sparse_scorer),
            ("sparse student, loaded dense", args.rank, kept, info["bytes"], 4 * teacher.parameter_counts()["dense"],
             lambda q: loaded.score_tails(q, masked=True)),
            ("dense model of equal size", small_rank, small.parameter_counts()["dense"], state_bytes(small),
             4 * small.parameter_counts()["dense"], small.score_tails),
        ]
        print(f"{args.dataset} {args.model} rank {args.rank} gamma {args.gamma}: {len(queries)} queries, "
              f"batch {args.batch_size}, {torch.get_num_threads()} threads")
        print(f"{'model':32s} {'rank':>5s} {'params':>11s} {'file MiB':>9s} {'tables MiB':>11s} {'queries/s':>10s}")
        for name, rank, params, file_bytes, table_bytes, scorer in rows:
            qps = queries_per_second(scorer, queries, args.batch_size, args.repeats)
            print(f"{name:32s} {rank:5d} {params:11,d} {file_bytes / 2**20:9.2f} {table_bytes / 2**20:11.2f} "
                  f"{qps:10.0f}")


if __name__ == "__main__":
    main()
