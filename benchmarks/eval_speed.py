"""Cost of filtered evaluation over the bare score products it must compute.

For each rank, times (a) a full filtered evaluation — ``filtered_ranks`` over every query of a
split, pessimistic ties — and (b) only the score matrices it needs, ``model.score_tails`` over the
same batches under ``no_grad``. The two are interleaved ``--repeats`` times and the minimum of
each is kept. The last line is ``eval_over_matmul_ratio <worst ratio over ranks>``: how much
filtering and ranking add on top of the unavoidable matrix products (1.0 would be free).

    python benchmarks/eval_speed.py                            # FB15k-237 test, ranks 100 and 1000
    python benchmarks/eval_speed.py --dataset WN18RR --ranks 500 --repeats 5
"""
from __future__ import annotations

import argparse

import torch

from _options import add_common, add_dataset, load_data, setup
from kgdistill.core.datasets import SPLITS
from kgdistill.core.evaluation import TIE_POLICIES, filtered_ranks
from kgdistill.core.models import BACKBONES, build_model
from kgdistill.core.records import device_description
from kgdistill.core.timer import timed
from kgdistill.metasd.config import RunConfig

#: the library's defaults (kgdistill.metasd.config.RunConfig): dataset, backbone, eval batch, ties, seed
DEFAULTS = RunConfig()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_dataset(parser, DEFAULTS.dataset, help="benchmark name")
    parser.add_argument("--split", default="test", choices=[s for s in SPLITS if s != "train"])
    parser.add_argument("--ranks", type=int, nargs="+", default=[100, 1000], help="embedding ranks to time")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats; the minimum of each is kept")
    parser.add_argument("--batch-size", type=int, default=DEFAULTS.eval_batch_size,
                        help="queries per score matrix (the eval default)")
    parser.add_argument("--tie-policy", default=DEFAULTS.tie_policy, choices=TIE_POLICIES, help="rank of tied scores")
    parser.add_argument("--model", default=DEFAULTS.model, choices=sorted(BACKBONES))
    parser.add_argument("--init-scale", type=float, default=0.1,
                        help="spread of the random embeddings (wider than training's init, so scores do not all tie)")
    add_common(parser, seed=True)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = setup(args)
    dataset = load_data(args)
    queries = dataset.queries(args.split).to(device)
    filters = dataset.filters.to(device)
    print(
        f"eval_speed: {dataset.name} {args.split} ({len(queries)} queries x {dataset.n_entities} entities), "
        f"{args.model}, batch {args.batch_size}, {args.tie_policy} ties, min of {args.repeats} interleaved repeats; "
        f"device {device_description(device)}"
    )
    print(f"{'rank':>6} {'eval s':>9} {'matmul s':>9} {'ratio':>7}")
    worst = 0.0
    for rank in args.ranks:
        torch.manual_seed(args.seed)
        model = build_model(args.model, dataset.n_entities, dataset.n_relations, rank, args.init_scale).to(device)
        model.requires_grad_(False)

        def evaluation():
            filtered_ranks(model.score_tails, queries, filters, args.tie_policy, args.batch_size)

        @torch.no_grad()
        def products():
            for start in range(0, len(queries), args.batch_size):
                model.score_tails(queries[start : start + args.batch_size])

        # warm-up on a few batches (allocator, kernels), not timed
        filtered_ranks(model.score_tails, queries[: 2 * args.batch_size], filters, args.tie_policy, args.batch_size)
        eval_s, matmul_s = float("inf"), float("inf")
        for _ in range(args.repeats):
            eval_s = min(eval_s, timed(evaluation, device)[0])
            matmul_s = min(matmul_s, timed(products, device)[0])
        ratio = eval_s / matmul_s
        worst = max(worst, ratio)
        print(f"{rank:>6} {eval_s:>9.3f} {matmul_s:>9.3f} {ratio:>7.2f}", flush=True)
    print(f"eval_over_matmul_ratio {worst:.3f}")


if __name__ == "__main__":
    main()
