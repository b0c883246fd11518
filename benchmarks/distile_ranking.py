"""Ranking speed of a DistilE backbone: every entity scored for a batch of queries (``score_tails``).

RotatE scores all entities through explicit (queries, entities, dim) distance blocks
(:func:`kgdistill.distile.kge.RotatE._distance_to_all`); this times the library's block sizes
against one 64 Mi-element block per query batch (the layout before them) on the same random
queries, checks that both give identical scores, and ends with the line
``blocked_over_one_block_speedup <ratio>``. Validation, test ranking and Table 5 all go through it.

    python benchmarks/distile_ranking.py                              # RotatE d64 on WN18RR, 2048 queries
    python benchmarks/distile_ranking.py --dims 8 32 --queries 4096 --threads 1
"""
from __future__ import annotations

import argparse
from unittest import mock

import torch

from _options import DATA_DIR_HELP, add_common, add_dataset, load_data, setup
from kgdistill.core.records import device_description
from kgdistill.core.timer import Stopwatch
from kgdistill.distile import kge


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_dataset(parser, "WN18RR", help="benchmark name (its entity count sizes the model)")
    parser.add_argument("--model", default="RotatE", choices=sorted(kge.LOSS_KINDS), help="DistilE backbone")
    parser.add_argument("--dims", type=int, nargs="+", default=[64], help="embedding dimensions to time")
    parser.add_argument("--queries", type=int, default=2048, help="random tail and head queries ranked")
    parser.add_argument("--batch-size", type=int, default=1024, help="queries per score_tails call (Table 5's)")
    add_common(parser, data_dir_help=DATA_DIR_HELP)
    return parser


def _rank_all(model, queries: torch.Tensor, batch_size: int) -> tuple[float, torch.Tensor]:
    with Stopwatch(model.device) as watch:
        out = [model.score_tails(queries[s : s + batch_size]) for s in range(0, len(queries), batch_size)]
    return watch.seconds, torch.cat(out)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    device = setup(args)
    data = load_data(args)
    print(f"{args.model} on {data.name} ({data.n_entities:,} entities), {args.queries} queries, "
          f"batch {args.batch_size}, {device_description(device)}, {torch.get_num_threads()} threads")
    generator = torch.Generator().manual_seed(0)
    n = args.queries
    queries = torch.stack([torch.randint(data.n_entities, (n,), generator=generator),
                           torch.randint(2 * data.n_relations, (n,), generator=generator),
                           torch.randint(data.n_entities, (n,), generator=generator)], 1).to(device)
    worst = float("inf")
    with torch.no_grad():
        for dim in args.dims:
            torch.manual_seed(0)
            model = kge.build_kge(args.model, data.n_entities, data.n_relations, dim).to(device).eval()
            blocked, scores = _rank_all(model, queries, args.batch_size)
            with mock.patch.object(kge, "_CHUNK_ELEMENTS", {"cpu": 1 << 24, "cuda": 1 << 24}), \
                    mock.patch.object(kge, "_QUERY_BLOCK", {}):
                one_block, reference = _rank_all(model, queries, args.batch_size)
            same = torch.equal(scores, reference)
            speedup = one_block / blocked
            worst = min(worst, speedup)
            print(f"dim {dim:4d}: library blocks {blocked:8.3f} s, one block per batch {one_block:8.3f} s, "
                  f"speed-up {speedup:5.2f}x, identical scores: {same}")
    print(f"blocked_over_one_block_speedup {worst:.2f}")


if __name__ == "__main__":
    main()
