"""Adam's cost in a DistilE stage-2 step: the CPU default (one tensor at a time) against ``foreach``.

A stage-2 step trains the student and its teacher together, and both optimizers update every row
of their entity tables each step (dense Adam, as in the authors' code), so on a CPU the optimizer is a
large share of the step. The trainer builds its optimizers with ``foreach=True``, which runs the
same arithmetic in the same order in fewer passes. This times the same batches through both,
checks that the parameters after them are bit for bit equal (so committed records stay
reproducible), and ends with the line ``foreach_over_default_speedup <ratio>``.

    python benchmarks/distile_adam.py                              # RotatE d16 student, d64 teacher, WN18RR
    python benchmarks/distile_adam.py --model ComplEx --dim 8 --steps 20 --threads 1
"""
from __future__ import annotations

import argparse

import torch

from _options import DATA_DIR_HELP, add_common, add_dataset, load_data, setup
from kgdistill.core.records import device_description
from kgdistill.core.timer import timed
from kgdistill.distile import DistilEConfig, kge
from kgdistill.distile.sampling import corrupt
from kgdistill.distile.trainer import DistilETrainer, build_backbone


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_dataset(parser, "WN18RR", help="benchmark name (its entity count sizes the tables)")
    parser.add_argument("--model", default="RotatE", choices=sorted(kge.LOSS_KINDS), help="DistilE backbone")
    parser.add_argument("--dim", type=int, default=16, help="student dimension")
    parser.add_argument("--teacher-dim", type=int, default=64, help="teacher dimension")
    parser.add_argument("--batch-size", type=int, default=1024, help="positives per step (the paper's)")
    parser.add_argument("--negatives", type=int, default=25, help="negatives per positive (WN18RR's RotatE setting)")
    parser.add_argument("--steps", type=int, default=8, help="timed stage-2 steps per optimizer variant")
    add_common(parser, data_dir_help=DATA_DIR_HELP)
    return parser


def _trainer(config: DistilEConfig, data, device: torch.device, teacher_state: dict, foreach: bool) -> DistilETrainer:
    trainer = DistilETrainer(config, data, device, teacher_state)
    trainer.use_foreach(foreach)
    return trainer


def _timed_steps(trainer: DistilETrainer, batches: list, device: torch.device) -> float:
    """Seconds per stage-2 step over ``batches``."""
    trainer.modules["teacher"].requires_grad_(True)

    def steps() -> None:
        for pos, neg in batches:
            trainer.step(pos, neg, stage=2)

    return timed(steps, device)[0] / len(batches)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    device = setup(args)
    data = load_data(args)
    base = {"dataset": data.name, "model": args.model, "batch_size": args.batch_size, "negatives": args.negatives}
    teacher = DistilEConfig(dim=args.teacher_dim, **base)
    config = DistilEConfig(dim=args.dim, method="ds", teacher=teacher.to_dict(), **base)
    torch.manual_seed(0)
    teacher_state = build_backbone(teacher, data).state_dict()
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(args.steps):
        pos = data.train[torch.randint(len(data.train), (args.batch_size,), generator=generator)]
        batches.append((pos.to(device), corrupt(pos, args.negatives, data.n_entities, generator).to(device)))
    print(f"{args.model} d{args.dim} student + d{args.teacher_dim} teacher on {data.name} "
          f"({data.n_entities:,} entities), batch {args.batch_size} x (1 + {args.negatives}), "
          f"{args.steps} stage-2 steps, {device_description(device)}, {torch.get_num_threads()} threads")
    seconds, weights = {}, {}
    for foreach in (False, True):
        _timed_steps(_trainer(config, data, device, teacher_state, foreach), batches[:1], device)  # warm-up
        trainer = _trainer(config, data, device, teacher_state, foreach)
        seconds[foreach] = _timed_steps(trainer, batches, device)
        weights[foreach] = [p.detach().cpu() for m in trainer.modules.values() for p in m.parameters()]
        print(f"{'foreach' if foreach else 'default (one tensor at a time)':31s} {1e3 * seconds[foreach]:8.1f} "
              "ms per step")
    same = all(torch.equal(a, b) for a, b in zip(weights[False], weights[True]))
    print(f"parameters after {args.steps} steps bit for bit equal: {same}")
    print(f"foreach_over_default_speedup {seconds[False] / seconds[True]:.2f}")


if __name__ == "__main__":
    main()
