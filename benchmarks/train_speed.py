"""Training throughput of the baseline step (1-vs-all cross-entropy + regularizer, Adagrad).

Times ``PlainLearner.train_step`` — the step every method builds on — on batches of reciprocal
training triples, per rank, batch size and step path (``--paths``: the run's ``one_vs_all`` and
``precision``: ``autograd/fp32`` is every committed record's step, ``chunked/fp32`` and
``chunked/bf16`` the row-chunked step of :mod:`kgdistill.core.onevsall`), after warm-up batches
that are not timed, and prints ms/step, steps/s, triples/s, the kernels a step launches and the
step's ratio to the machine's floor: its three score products alone in the path's dtype
(:func:`kgdistill.study.costs.product_floor_seconds`). The last two lines compare, at the first
rank and batch size, the chunked bf16 step with the autograd fp32 step
(``fast_over_fp32_step_speedup``) and with its bf16 product floor (``fast_step_over_bf16_floor``).

    python benchmarks/train_speed.py --threads 1             # FB15k-237, ComplEx, ranks 64 and 200, batch 1000
    python benchmarks/train_speed.py --dataset WN18RR --threads 1
    python benchmarks/train_speed.py --ranks 8 --batch-sizes 100 --paths autograd/fp32
"""
from __future__ import annotations

import argparse

import torch

from _options import add_common, add_dataset, load_data, setup
from kgdistill.core.models import BACKBONES
from kgdistill.core.records import device_description
from kgdistill.core.regularizers import REGULARIZERS
from kgdistill.core.timer import timed
from kgdistill.metasd.config import RunConfig
from kgdistill.metasd.training import PlainLearner
from kgdistill.study.costs import QUERY_WIDTH, count_kernels, product_floor_seconds

#: the library's defaults (kgdistill.metasd.config.RunConfig): dataset, backbone, batch, regularizer, seed
DEFAULTS = RunConfig()
#: step path -> the RunConfig fields that select it
PATHS = {
    "autograd/fp32": {"one_vs_all": "autograd", "precision": "fp32"},
    "chunked/fp32": {"one_vs_all": "chunked", "precision": "fp32"},
    "chunked/bf16": {"one_vs_all": "chunked", "precision": "bf16"},
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_dataset(parser, DEFAULTS.dataset, help="benchmark name")
    parser.add_argument("--ranks", type=int, nargs="+", default=[64, 200], help="embedding ranks to time")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[DEFAULTS.batch_size],
                        help="triples per training step (the kbc/DURA recipes use 100)")
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=list(PATHS),
                        help="step paths: one_vs_all/precision")
    parser.add_argument("--batches", type=int, default=20, help="timed batches per repeat")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches before timing")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats; the best is reported")
    parser.add_argument("--model", default=DEFAULTS.model, choices=sorted(BACKBONES))
    parser.add_argument("--regularizer", default=DEFAULTS.regularizer, choices=sorted(REGULARIZERS))
    add_common(parser, seed=True)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def time_rank(args: argparse.Namespace, dataset, device: torch.device, rank: int, batch_size: int,
              path: str = "autograd/fp32") -> dict[str, float]:
    """Best and median seconds per step over ``repeats`` runs of ``batches`` steps, and the
    kernels one step launches, on step path ``path`` (:data:`PATHS`)."""
    torch.manual_seed(args.seed)
    config = RunConfig(
        dataset=dataset.name, model=args.model, rank=rank, batch_size=batch_size, regularizer=args.regularizer,
        **PATHS[path],
    )
    learner = PlainLearner(config, dataset, device)
    with learner.precision_context():
        return _time_learner(args, learner, dataset, device, batch_size)


def _time_learner(args: argparse.Namespace, learner, dataset, device: torch.device, batch_size: int) -> dict:
    train = dataset.reciprocal(dataset.train)
    generator = torch.Generator().manual_seed(args.seed)
    needed = (args.warmup + 1 + args.batches * args.repeats) * batch_size
    order = torch.cat([torch.randperm(len(train), generator=generator) for _ in range(needed // len(train) + 1)])
    batches = iter(train[order[i : i + batch_size]].to(device) for i in range(0, needed, batch_size))
    for _ in range(args.warmup):
        learner.train_step(next(batches))
    batch = next(batches)
    kernels = count_kernels(lambda: learner.train_step(batch))

    def timed_batches() -> None:
        for _ in range(args.batches):
            learner.train_step(next(batches))

    per_step = [seconds / args.batches for seconds in timed(timed_batches, device, repeats=args.repeats)]
    per_step.sort()
    return {"best": per_step[0], "median": per_step[len(per_step) // 2], "kernels": kernels}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = setup(args)
    dataset = load_data(args)
    print(
        f"train_speed: {dataset.name} ({dataset.n_entities} entities, {len(dataset.train)} train triples), "
        f"{args.model}, {args.batches} timed batches x {args.repeats} repeats after {args.warmup} warm-up; "
        f"{torch.get_num_threads()} thread(s); device {device_description(device)}"
    )
    print(f"{'rank':>6} {'batch':>6} {'path':>14} {'ms/step (best)':>15} {'ms/step (median)':>17} {'steps/s':>8} "
          f"{'triples/s (best)':>17} {'kernels':>8} {'floor ms':>9} {'over floor':>10}")
    first: dict[str, float] = {}
    for rank in args.ranks:
        for batch_size in args.batch_sizes:
            width = QUERY_WIDTH[args.model](rank)
            floors = {dtype: product_floor_seconds(dataset.n_entities, width, batch_size, device, dtype, args.repeats)
                      for dtype in (torch.float32, torch.bfloat16)}
            for path in args.paths:
                t = time_rank(args, dataset, device, rank, batch_size, path)
                floor = floors[torch.bfloat16 if path.endswith("bf16") else torch.float32]
                print(f"{rank:>6} {batch_size:>6} {path:>14} {1e3 * t['best']:>15.1f} {1e3 * t['median']:>17.1f} "
                      f"{1 / t['best']:>8.1f} {batch_size / t['best']:>17.0f} {t['kernels']:>8d} {1e3 * floor:>9.2f} "
                      f"{t['best'] / floor:>10.2f}")
                if not first.get(path):
                    first[path] = t["best"]
            first.setdefault("bf16 floor", floors[torch.bfloat16])
    if "autograd/fp32" in first and "chunked/bf16" in first:
        print(f"fast_over_fp32_step_speedup {first['autograd/fp32'] / first['chunked/bf16']:.2f}")
        print(f"fast_step_over_bf16_floor {first['chunked/bf16'] / first['bf16 floor']:.2f}")


if __name__ == "__main__":
    main()
