"""Estimated minutes of every run of a profile on an H100, from the score products each step
performs (estimated, no GPU measured).

For each planned run: steps per epoch, TFLOP and (coarse) GB per step, the estimated seconds per
step and per epoch and the estimated minutes of the whole run at ``max_epochs`` with its
validations (:func:`kgdistill.study.costs.run_cost` under the assumed rates of
:data:`kgdistill.study.costs.H100`). The last line is ``max_run_minutes <m>``. ``--count-kernels``
also counts, on CPU, the kernels one step of each method launches and prints them beside the
table the estimate uses (:data:`kgdistill.study.costs.KERNELS_PER_STEP`).

    python benchmarks/gpu_estimate.py                    # params/gpu.yaml
    python benchmarks/gpu_estimate.py --profile paper --precision bf16
"""
from __future__ import annotations

import argparse

import torch

from _options import add_common
from kgdistill.core.datasets import load_dataset
from kgdistill.core.models import build_model
from kgdistill.metasd.config import METHODS, RunConfig
from kgdistill.protocol.runner import make_trainer
from kgdistill.study.costs import H100, KERNELS_PER_STEP, GraphSize, count_kernels, run_cost, step_cost
from kgdistill.study.plan import planned_runs
from kgdistill.study.profile import load_profile


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--profile", default="gpu", help="params/<profile>.yaml")
    parser.add_argument("--precision", default="tf32", choices=sorted(H100.flops_per_second),
                        help="arithmetic of the steps")
    parser.add_argument("--match", nargs="+", default=None,
                        help="only runs whose row, recipe, dataset or name contains one of these")
    parser.add_argument("--count-kernels", action="store_true", help="also count each method's kernels per step on CPU")
    add_common(parser, device=False, threads=False, data_dir_help="folder with the archives (for --count-kernels)")
    return parser


def live_kernel_counts(data_dir: str | None = None) -> dict[str, int]:
    """Kernels one step of each method launches: rank-8 Nations models, batch 64, on CPU."""
    nations = load_dataset("Nations", data_dir)
    base = dict(dataset="Nations", rank=8, batch_size=64, init_scale=0.1)
    counts = {}
    for method in METHODS:
        teacher = RunConfig(**base)
        config = RunConfig(method=method, teacher=teacher.to_dict() if method in ("kd", "prune_finetune") else None,
                           **base)
        state = build_model(config.model, nations.n_entities, nations.n_relations, 8).state_dict()
        torch.manual_seed(0)
        trainer = make_trainer(config, nations, torch.device("cpu"), state)
        trainer.start_epoch(1)
        batch = trainer.train_triples[:64]
        trainer.train_step(batch)  # optimizers create their state lazily
        counts[method] = count_kernels(lambda: trainer.train_step(batch))
    return counts


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    profile = load_profile(args.profile)
    runs = [r for r in planned_runs(profile) if not args.match or r.matches(args.match)]
    print(f"gpu_estimate: profile {profile['name']}, {args.precision}; {H100.name}: {H100.note}")
    print(f"{'dataset':10s} {'run':9s} {'epochs':>6s} {'steps/ep':>8s} {'TFLOP/step':>10s} {'GB/step':>8s} "
          f"{'ms/step':>8s} {'s/epoch':>8s} {'est. min':>8s}")
    longest = 0.0
    for run in runs:
        config = run.config
        if not isinstance(config, RunConfig):
            continue  # DistilE runs: no cost model
        graph = GraphSize.of(config.dataset)
        estimate = run_cost(config, graph, H100, args.precision)
        cost = step_cost(config, graph)
        longest = max(longest, estimate.minutes)
        print(f"{run.paper_dataset:10s} {', '.join(run.rows)[:9]:9s} {config.max_epochs:6d} "
              f"{estimate.steps_per_epoch:8d} {cost.flops / 1e12:10.3f} {cost.bytes / 1e9:8.2f} "
              f"{1e3 * estimate.step_seconds:8.2f} {estimate.epoch_seconds:8.1f} {estimate.minutes:8.1f}")
    if args.count_kernels:
        for method, count in live_kernel_counts(args.data_dir).items():
            print(f"kernels_per_step {method} {count} (table: {KERNELS_PER_STEP[method]})")
    print(f"max_run_minutes {longest:.1f} (estimated, no GPU measured)")


if __name__ == "__main__":
    main()
