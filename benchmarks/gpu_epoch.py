"""Seconds per epoch of plain ComplEx, RP and MetaSD at the paper's rank, for each precision.

For each recipe of the paper profile (batch sizes of the official scripts and of the baselines'
recipes) and each precision, times ``--steps`` training steps after ``--warmup`` untimed ones and
prints one figure per line: ms per step, seconds per epoch (steps per epoch × the step time,
extrapolated from the timed steps), peak device memory (CUDA: the allocator's peak for that
learner; CPU: the process's peak resident memory so far) and the TFLOP/s achieved by the score
products the step performs (:func:`kgdistill.study.costs.step_products`). Then the small-batch figure
(steps/s of a plain step at batch 100 and 1000 and the best step's ratio to the step's measured
arithmetic floor, :func:`kgdistill.study.costs.floor_seconds`), and last ``metasd_epoch_seconds <s>`` (the
precision ``auto`` resolves to on the device: tf32 on CUDA, fp32 on CPU).

    python benchmarks/gpu_epoch.py                                    # on the GPU: FB15k-237, rank 2000
    python benchmarks/gpu_epoch.py --dataset UMLS --rank 16 --steps 2 # on CPU, seconds (as CI runs it)
"""
from __future__ import annotations

import argparse
import math
import resource

import torch

from _options import DATA_DIR_HELP, add_common, add_dataset, load_data, setup
from kgdistill.core.models import BACKBONES
from kgdistill.core.records import device_description
from kgdistill.core.timer import Stopwatch
from kgdistill.metasd.config import RunConfig
from kgdistill.metasd.objective import fit_loss
from kgdistill.metasd.training import PlainLearner
from kgdistill.protocol.configbase import PRECISIONS, resolve_precision
from kgdistill.protocol.runner import make_trainer
from kgdistill.study.costs import QUERY_WIDTH, GraphSize, count_kernels, floor_seconds, step_cost
from kgdistill.study.profile import config_for, load_profile

DEFAULTS = RunConfig()
PAPER_DATASETS = ("FB15k-237", "WN18RR")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_dataset(parser, DEFAULTS.dataset, help="benchmark name")
    parser.add_argument("--recipes-of", default=None, choices=PAPER_DATASETS,
                        help="paper dataset whose recipes (batch, regularizer, RP) apply "
                             "(default: --dataset, else FB15k-237)")
    parser.add_argument("--profile", default="paper", help="profile holding the recipes")
    parser.add_argument("--recipes", nargs="+", default=["ComplEx", "RP", "MetaSD"],
                        help="recipes of the profile to time")
    parser.add_argument("--rank", type=int, default=2000, help="rank of every model (the paper's 2000)")
    parser.add_argument("--model", default=DEFAULTS.model, choices=sorted(BACKBONES), help="backbone of every recipe")
    parser.add_argument("--precisions", nargs="+", default=None, choices=PRECISIONS[1:],
                        help="default: fp32 tf32 bf16 on CUDA, fp32 bf16 elsewhere")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per recipe and precision")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before timing")
    parser.add_argument("--small-batches", type=int, nargs="+", default=[100, 1000],
                        help="batch sizes of the plain-step steps/s and floor figure")
    parser.add_argument("--compile", action="store_true", help="torch.compile the plain and RP steps' loss")
    add_common(parser, data_dir_help=DATA_DIR_HELP, seed=True)
    return parser


def recipe_config(
    args: argparse.Namespace, profile: dict, recipe: str, precision: str, batch: int | None = None
) -> RunConfig:
    """The profile's ``recipe`` at ``--rank`` and ``precision``, trained on ``--dataset``."""
    paper = args.recipes_of or (args.dataset if args.dataset in PAPER_DATASETS else "FB15k-237")
    config = config_for(profile, paper, recipe, args.seed, rank=args.rank, model=args.model, precision=precision)
    return config.replace(dataset=args.dataset, batch_size=batch or config.batch_size)


def compiled_step(learner: PlainLearner):
    """The plain learner's step with its loss (forward, regularizer, cross-entropy) compiled."""
    model, optimizer, config = learner.modules["model"], learner.optimizers["model"], learner.config
    loss_fn = torch.compile(lambda batch: fit_loss(model, batch, config, learner.class_weights)[0])

    def step(batch: torch.Tensor) -> dict:
        loss = loss_fn(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"loss": loss.detach()}

    return step


def time_config(args: argparse.Namespace, config: RunConfig, dataset, device: torch.device) -> dict:
    """Median and best seconds per step, kernels per step and peak memory (MiB) of ``config``'s learner."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(args.seed)
    learner = make_trainer(config, dataset, device)
    learner.start_epoch(1)
    compiled = args.compile and isinstance(learner, PlainLearner)
    step = compiled_step(learner) if compiled else learner.train_step
    train = learner.train_triples
    generator = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(len(train), generator=generator).to(device)
    starts = [(i * config.batch_size) % max(1, len(train) - config.batch_size + 1)
              for i in range(args.warmup + args.steps)]
    batches = [train[order[s : s + config.batch_size]] for s in starts]
    with learner.precision_context():
        for batch in batches[: args.warmup]:
            step(batch)
        kernels = "compiled" if compiled else count_kernels(lambda: step(batches[0]))
        times = []
        for batch in batches[args.warmup :]:
            with Stopwatch(device) as watch:
                step(batch)
            times.append(watch.seconds)
    times.sort()
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"step": times[len(times) // 2], "best": times[0], "kernels": kernels, "peak_mib": peak}


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    device = setup(args)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # per precision below
    precisions = args.precisions or (["fp32", "tf32", "bf16"] if device.type == "cuda" else ["fp32", "bf16"])
    profile = load_profile(args.profile)
    dataset = load_data(args)
    graph = GraphSize.from_dataset(dataset)
    print(f"gpu_epoch: {dataset.name} ({graph.entities} entities, {2 * graph.train} reciprocal train triples), "
          f"rank {args.rank}, {args.steps} timed steps after {args.warmup}; device {device_description(device)}; "
          f"seconds per epoch = steps per epoch x median step time (extrapolated)")
    auto = resolve_precision("auto", device.type)
    metasd_epoch = None
    for recipe in args.recipes:
        for precision in precisions:
            config = recipe_config(args, profile, recipe, precision)
            if device.type == "cuda":
                torch.backends.cuda.matmul.allow_tf32 = precision != "fp32"
            t = time_config(args, config, dataset, device)
            steps = math.ceil(2 * graph.train / config.batch_size)
            cost = step_cost(config, graph)
            key = f"{recipe.lower().replace(' ', '_')}_{precision}"
            print(f"{key}_batch {config.batch_size}")
            print(f"{key}_step_ms {1e3 * t['step']:.2f}")
            print(f"{key}_epoch_seconds {steps * t['step']:.2f}")
            print(f"{key}_peak_mib {t['peak_mib']:.0f}")
            print(f"{key}_kernels_per_step {t['kernels']}")
            print(f"{key}_tflops {cost.flops / t['step'] / 1e12:.4g}")
            if config.method == "metasd" and precision == resolve_precision(precision, device.type) == auto:
                metasd_epoch = steps * t["step"]
    for batch in args.small_batches:  # the launch-bound regime of the baselines' batch 100
        config = recipe_config(args, profile, args.recipes[0], "auto", batch)
        t = time_config(args, config, dataset, device)
        floor = floor_seconds(graph.entities, QUERY_WIDTH[config.model](config.rank), batch, device)
        print(f"plain_b{batch}_steps_per_second {1 / t['step']:.1f}")
        print(f"plain_b{batch}_over_floor_ratio {t['best'] / floor:.2f}")
    if metasd_epoch is None:
        raise SystemExit("no MetaSD recipe was timed at the device's auto precision; keep MetaSD in --recipes and "
                         f"{auto} in --precisions")
    print(f"metasd_epoch_seconds {metasd_epoch:.2f}")


if __name__ == "__main__":
    main()
