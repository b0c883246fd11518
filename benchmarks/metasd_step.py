"""Time one MetaSD training step against one plain step of the same backbone, rank and batch.

Prints the plain step time, the MetaSD step time in Algorithm 1's order (the default) and with
``meta_order="simultaneous"``, their per-phase times (virtual, meta, actual, mask), optionally the
peak resident memory of a process doing only MetaSD steps, and ends with one line
``metasd_over_plain_step_ratio <ratio>`` (default order). All steps are measured in this run,
interleaved.

    python benchmarks/metasd_step.py --dataset FB15k-237 --rank 100 --batch-size 1000 --repeats 5
    python benchmarks/metasd_step.py --rank 2000 --repeats 1 --memory   # peak memory at paper scale
    python benchmarks/metasd_step.py --one-vs-all chunked --precision bf16   # both steps on the chunked path

With ``--one-vs-all chunked`` (kgdistill.core.onevsall) both steps take the row-chunked path; the
chunked meta step is sequential only, so the simultaneous order is not timed then.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

import torch

from _options import add_common, add_dataset, load_data, setup
from kgdistill.core.models import BACKBONES
from kgdistill.core.timer import Stopwatch
from kgdistill.metasd.config import META_ORDERS, ONE_VS_ALL, RunConfig
from kgdistill.protocol.configbase import PRECISIONS
from kgdistill.protocol.runner import make_trainer

#: the library's defaults (kgdistill.metasd.config.RunConfig): dataset, backbone, rank, batch, RP weight,
#: the meta step's order
DEFAULTS = RunConfig()


def build(args, method: str, meta_order: str = DEFAULTS.meta_order):
    dataset = load_data(args)
    config = RunConfig(dataset=args.dataset, method=method, model=args.model, rank=args.rank,
                       batch_size=args.batch_size, init_scale=0.1, rp_weight=args.rp_weight, meta_order=meta_order,
                       one_vs_all=args.one_vs_all, precision=args.precision)
    torch.manual_seed(0)
    device = setup(args)
    learner = make_trainer(config, dataset, device)
    learner.start_epoch(1)
    train = dataset.reciprocal(dataset.train)
    batches = [train[torch.randperm(len(train))[: args.batch_size]].to(device) for _ in range(args.repeats + 1)]
    return learner, batches, device


def time_steps(learner, batches, device) -> list[float]:
    times = []
    for batch in batches:
        with Stopwatch(device, sync_before=False) as watch:
            learner.train_step(batch)
        times.append(watch.seconds)
    return times[1:]  # the first step warms up


def peak_memory_child(args) -> None:
    """Child process: MetaSD steps only, then print peak RSS (MiB) and CUDA peak if any."""
    learner, batches, device = build(args, "metasd")
    time_steps(learner, batches[:2], device)
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cuda_mib = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    print(json.dumps({"peak_rss_mib": rss_mib, "cuda_peak_mib": cuda_mib}))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataset(parser, DEFAULTS.dataset)
    parser.add_argument("--model", default=DEFAULTS.model, choices=sorted(BACKBONES))
    parser.add_argument("--rank", type=int, default=DEFAULTS.rank)
    parser.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size)
    parser.add_argument("--repeats", type=int, default=5, help="timed steps of each kind (after one warm-up)")
    parser.add_argument("--rp-weight", type=float, default=DEFAULTS.rp_weight,
                        help="relation-prediction weight of both steps")
    parser.add_argument("--one-vs-all", default=DEFAULTS.one_vs_all, choices=list(ONE_VS_ALL),
                        help="the 1-vs-all path of both steps")
    parser.add_argument("--precision", default=DEFAULTS.precision, choices=list(PRECISIONS),
                        help="arithmetic of both steps (bf16: bf16 score products)")
    add_common(parser, threads=False)
    parser.add_argument("--memory", action="store_true",
                        help="also measure peak memory of MetaSD steps in a child process")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.child:
        return peak_memory_child(args)

    # Measured first, in a child started before this process holds any model: Linux keeps a
    # forked child's peak RSS (ru_maxrss) across exec, so a large parent would inflate it.
    memory_line = None
    if args.memory:
        child = subprocess.run(
            [sys.executable, __file__, "--child", "--dataset", args.dataset, "--model", args.model, "--rank",
             str(args.rank), "--batch-size", str(args.batch_size), "--repeats", "1", "--device", args.device,
             "--rp-weight", str(args.rp_weight), "--one-vs-all", args.one_vs_all, "--precision", args.precision]
            + (["--data-dir", args.data_dir] if args.data_dir else []),
            capture_output=True, text=True, check=True, env=os.environ,
        )
        memory = json.loads(child.stdout.strip().splitlines()[-1])
        memory_line = f"peak_rss_mib {memory['peak_rss_mib']:.0f}" + (
            f"  cuda_peak_mib {memory['cuda_peak_mib']:.0f}" if memory["cuda_peak_mib"] is not None else "")
    plain, plain_batches, device = build(args, "baseline")
    orders = META_ORDERS if args.one_vs_all == "autograd" else ("sequential",)
    variants = {order: build(args, "metasd", order)[:2] for order in orders}
    times = {"plain": [], **{order: [] for order in orders}}
    phases = {}
    for i in range(args.repeats):  # interleave so machine noise hits all alike
        with plain.precision_context():
            times["plain"] += time_steps(plain, plain_batches[i : i + 2], device)
        for order, (learner, batches) in variants.items():
            learner.phase_seconds.clear()
            with learner.precision_context():
                times[order] += time_steps(learner, batches[i : i + 2], device)
            phases[order] = {k: v / 2 for k, v in learner.phase_seconds.items()}  # warm-up + timed step
    best = {k: min(v) for k, v in times.items()}
    print(f"device {device}  dataset {args.dataset}  model {args.model}  rank {args.rank}  batch {args.batch_size}  "
          f"one_vs_all {args.one_vs_all}  precision {args.precision}")
    for name, label in (("plain", "plain step"), ("sequential", "MetaSD step (Algorithm 1 order, default)"),
                        ("simultaneous", "MetaSD step (meta_order=simultaneous)")):
        if name in best:
            print(f"{label:42s} {best[name] * 1000:9.1f} ms  (min of {len(times[name])})")
    for order, p in phases.items():
        print(f"  {order} phases (ms/step, mean of last 2): " + "  ".join(f"{k} {v * 1000:.1f}" for k, v in p.items()))
    if memory_line:
        print(memory_line)
    if "simultaneous" in best:
        print(f"metasd_simultaneous_over_plain_step_ratio {best['simultaneous'] / best['plain']:.2f}")
    print(f"metasd_over_plain_step_ratio {best['sequential'] / best['plain']:.2f}")


if __name__ == "__main__":
    main()
