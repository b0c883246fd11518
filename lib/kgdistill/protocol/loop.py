"""The training loop every trainer of both paper families shares, and the trainer protocol.

:func:`fit` runs epochs of a :class:`TrainerBase` subclass the same way for every method:

* shuffles with a seeded CPU generator (saved in checkpoints, with torch's RNG state);
* validates every ``eval_every`` epochs and at the last one, and selects the epoch with the best
  validation MRR of the trainer's *selected* model (never test);
* stops early when the convergence rule is met (:class:`Plateau`; ``patience`` 0 trains the
  whole ``max_epochs`` budget) and records whether it was (``converged``, ``stopped_epoch``);
* checkpoints atomically at each evaluation, so a killed run resumes to the same numbers (CPU);
* evaluates test once, with the selected weights, and writes ``record.json`` atomically.

A trainer owns its models (``modules``), optimizers, schedulers and one epoch of steps; the
runner (:mod:`kgdistill.protocol.runner`) builds it and passes in any teacher it learns from.
"""
from __future__ import annotations

import logging
import math
import time
from contextlib import contextmanager
from pathlib import Path

import torch

# text bars, not tqdm.auto's widget: an executed notebook keeps only the widget's first frame (0%)
from tqdm.std import tqdm

from ..core.datasets import KGDataset
from ..core.evaluation import Scorer, evaluation_report
from ..core.models import load_module_state
from ..core.records import (
    BEST,
    CHECKPOINT,
    CONFIG,
    RECORD,
    atomic_torch_save,
    atomic_write_json,
    load_torch,
    provenance,
    remove_orphan_temporaries,
)
from ..core.timer import Stopwatch
from .configbase import ConfigBase, resolve_precision

log = logging.getLogger("kgdistill")
#: seconds between two epoch lines of a run in the library's log (a quick run's epochs stay silent)
EPOCH_LINE_EVERY = 20.0


def _epoch_line(config, epoch: int, entry: dict, valid_mrr: float | None, last: float) -> float:
    """Log ``<run>: epoch 3/20 trained in 1150 s[, valid MRR 0.2017]`` when the last such line of
    this run is :data:`EPOCH_LINE_EVERY` seconds old (what scripts/reproduce.py echoes on its console:
    :func:`kgdistill.core.environment.forward_library_log`); returns the time of the last line."""
    now = time.perf_counter()  # not time.time(): the deadline of stop_at_time reads that clock alone
    if now - last < EPOCH_LINE_EVERY:
        return last
    mrr = f", valid MRR {valid_mrr:.4f}" if valid_mrr is not None else ""
    log.info("%s: epoch %d/%d trained in %.0f s%s", config.run_name(), epoch, config.max_epochs, entry["seconds"], mrr)
    return now


class Plateau:
    """The convergence rule: reached once validation MRR has not risen by at least ``min_delta``
    above the last counted improvement for ``patience`` evaluations in a row (never when
    ``patience`` is 0). Its state travels in checkpoints, so a resumed run stops where an
    uninterrupted one does."""

    def __init__(self, patience: int, min_delta: float):
        self.patience, self.min_delta = int(patience), float(min_delta)
        self.reference, self.stale = -math.inf, 0

    def update(self, mrr: float) -> None:
        if mrr >= self.reference + self.min_delta and mrr > self.reference:
            self.reference, self.stale = mrr, 0
        else:
            self.stale += 1

    @property
    def reached(self) -> bool:
        return self.patience > 0 and self.stale >= self.patience

    def state_dict(self) -> dict:
        return {"reference": self.reference, "stale": self.stale}

    def load_state_dict(self, state: dict) -> None:
        self.reference, self.stale = state.get("reference", -math.inf), state.get("stale", 0)


class TrainerBase:
    """What :func:`fit` needs from a trainer; subclasses fill ``modules`` (name -> model),
    ``optimizers`` and ``schedulers`` and implement :meth:`train_epoch` and :meth:`scorers`."""

    #: name of the model whose validation MRR selects the epoch
    selected = "model"

    def __init__(self, config: ConfigBase, dataset: KGDataset, device: torch.device):
        self.config, self.dataset, self.device = config, dataset, device
        self.modules: dict[str, torch.nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, object] = {}
        self.phase_seconds: dict[str, float] = {}

    # --- the protocol -------------------------------------------------------------------------
    def train_epoch(self, epoch: int, generator: torch.Generator) -> dict:
        """One pass over the training data; returns history fields, at least ``{"loss": {name: mean}}``."""
        raise NotImplementedError

    def scorers(self) -> dict[str, Scorer]:
        """Models to evaluate on test, by name; must include :attr:`selected`."""
        raise NotImplementedError

    def valid_scorers(self) -> dict[str, Scorer]:
        """Models validated at each evaluation (default: all of :meth:`scorers`)."""
        return self.scorers()

    def dims(self) -> dict[str, int]:
        """Each model's rank (MetaSD family) or dim (DistilE), stored in the record."""
        raise NotImplementedError

    def final_evaluations(self, dataset: KGDataset, device: torch.device) -> dict:
        """Extra record fields computed once at the selected epoch (e.g. a pruned student's
        evaluation modes); none by default."""
        return {}

    def record_fields(self, history: list[dict]) -> dict:
        """What the record adds for this trainer (sizes, dims, phase timings, ...)."""
        return {"parameter_counts": {n: m.parameter_counts() for n, m in self.modules.items()}, "dims": self.dims()}

    # --- state ----------------------------------------------------------------------------------
    def model_state(self) -> dict:
        return {name: {k: v.detach().clone() for k, v in m.state_dict().items()} for name, m in self.modules.items()}

    def load_model_state(self, state: dict) -> None:
        for name, module_state in state.items():
            load_module_state(self.modules[name], module_state)

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    def state_dict(self) -> dict:
        return {
            "models": self.model_state(),
            "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
            "schedulers": {n: s.state_dict() for n, s in self.schedulers.items()},
            "extra": self.extra_state(),
            "phase_seconds": dict(self.phase_seconds),
        }

    def load_state_dict(self, state: dict) -> None:
        self.load_model_state(state["models"])
        for name, opt_state in state["optimizers"].items():
            self.optimizers[name].load_state_dict(opt_state)
        for name, sched_state in state.get("schedulers", {}).items():
            self.schedulers[name].load_state_dict(sched_state)
        self.load_extra_state(state.get("extra", {}))
        self.phase_seconds = dict(state.get("phase_seconds", {}))

    def precision_context(self):
        """Autocast to bfloat16 for the training steps when the run's precision is bf16."""
        precision = resolve_precision(self.config.precision, self.device.type)
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    @contextmanager
    def timed(self, phase: str):
        """Add the wall time of the block to ``phase_seconds[phase]`` (syncs CUDA for honest numbers)."""
        with Stopwatch(self.device, sync_before=False) as watch:
            yield
        self.phase_seconds[phase] = self.phase_seconds.get(phase, 0.0) + watch.seconds


def _validate(trainer: TrainerBase, dataset: KGDataset, config: ConfigBase, device: torch.device,
              split: str = "valid") -> dict:
    return {
        name: evaluation_report(s, dataset, split, config.tie_policy, config.eval_batch_size, device=device)["all"]
        for name, s in trainer.valid_scorers().items()
    }


def fit(
    config: ConfigBase,
    trainer: TrainerBase,
    dataset: KGDataset,
    out: Path,
    device: torch.device,
    *,
    show_progress: bool = False,
    force: bool = False,
    keep_checkpoint: bool = True,
    stop_after_epoch: int | None = None,
    stop_at_time: float | None = None,
    test_subsets: dict[str, torch.Tensor | None] | None = None,
    extra_record: dict | None = None,
) -> dict:
    """Train ``trainer`` under ``config`` into the run folder ``out`` and return the record.

    ``force`` ignores an existing checkpoint. ``stop_after_epoch`` ends the run after that
    epoch's checkpoint (a process-like interruption, for resumption tests and time slices); the
    returned dict is then ``{"status": "interrupted", "epoch": e}``. ``stop_at_time`` (a
    ``time.time()`` value) ends it the same way at the first checkpoint after which one more
    interval as long as the last one would pass that time (the run's own pace: no run stops before
    its first checkpoint, and none is cut mid-interval). ``test_subsets`` maps a
    subset name to a test-triple mask (None: all); ``extra_record`` is merged into the record.
    """
    generator = torch.Generator().manual_seed(config.seed)
    history: list[dict] = []
    best = {"epoch": 0, "mrr": -1.0, "state": None}
    plateau = Plateau(config.patience, config.min_delta)
    first_epoch = 1
    checkpoint_path = out / CHECKPOINT
    remove_orphan_temporaries(out)  # a run killed mid-write left its target intact and a temp file
    if checkpoint_path.exists() and not force:
        checkpoint = load_torch(checkpoint_path, map_location=device)
        trainer.load_state_dict(checkpoint["learner"])
        generator.set_state(checkpoint["generator"])
        torch.set_rng_state(checkpoint["torch_rng"])
        history, best = checkpoint["history"], checkpoint["best"]
        plateau.load_state_dict(checkpoint.get("plateau", {}))
        first_epoch = checkpoint["epoch"] + 1
        log.info("%s: resuming from epoch %d (checkpoint of epoch %d)", config.run_name(), first_epoch, first_epoch - 1)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / CONFIG, config.to_dict())

    precision = resolve_precision(config.precision, device.type)
    if device.type == "cuda":  # TF32 matmuls for tf32 (and bf16's fp32 parts), exact fp32 otherwise
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision != "fp32"
    bar = tqdm(total=config.max_epochs, initial=first_epoch - 1, disable=not show_progress, desc=config.run_name(),
               unit="epoch")
    interval_start = time.time()  # wall clock since the last checkpoint, for stop_at_time
    last_line = time.perf_counter()  # of the last epoch line (_epoch_line)
    log.info("%s: epochs %d-%d to train", config.run_name(), first_epoch, config.max_epochs)
    for epoch in range(first_epoch, config.max_epochs + 1):
        if plateau.reached:  # resumed from the checkpoint that reached it
            break
        with Stopwatch(None) as watch, trainer.precision_context():  # wall clock, no synchronisation
            fields = trainer.train_epoch(epoch, generator)
        entry = {"epoch": epoch, "seconds": watch.seconds, **fields}
        if not all(math.isfinite(v) for v in entry["loss"].values()):
            bar.close()
            fixes = [fix for field, fix in (("learning_rate", "lower learning_rate"), ("init_scale", "init_scale"),
                                             ("reg_weight", "raise reg_weight")) if hasattr(config, field)]
            raise FloatingPointError(
                f"run {config.run_name()} diverged in epoch {epoch} (mean losses {entry['loss']}); no record was "
                f"written (its last checkpoint stays). To change it: {' or '.join(fixes)}, and run again."
            )
        bar.update(1)
        history.append(entry)
        evaluated = epoch % config.eval_every == 0 or epoch == config.max_epochs
        if not evaluated:
            last_line = _epoch_line(config, epoch, entry, None, last_line)
        if evaluated:
            with Stopwatch(None) as watch:  # wall clock, no synchronisation
                entry["valid"] = _validate(trainer, dataset, config, device)
                if config.test_history:  # for measuring test-set selection only; selection reads valid
                    entry["test"] = _validate(trainer, dataset, config, device, split="test")
            # apart from "seconds" (training only): filtered validation can outlast the epoch itself
            entry["valid_seconds"] = watch.seconds
            mrr = entry["valid"][trainer.selected]["MRR"]
            if mrr > best["mrr"]:
                best = {"epoch": epoch, "mrr": mrr, "state": trainer.model_state()}
            plateau.update(mrr)
            bar.set_postfix(valid_mrr=f"{mrr:.3f}")
            last_line = _epoch_line(config, epoch, entry, mrr, last_line)
            atomic_torch_save(
                {
                    "epoch": epoch,
                    "learner": trainer.state_dict(),
                    "generator": generator.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "history": history,
                    "best": best,
                    "plateau": plateau.state_dict(),
                },
                checkpoint_path,
            )
            if plateau.reached:
                break
            now = time.time()
            interval, interval_start = now - interval_start, now
            out_of_time = stop_at_time is not None and now + interval > stop_at_time
            asked = stop_after_epoch is not None and stop_after_epoch <= epoch
            if epoch < config.max_epochs and (out_of_time or asked):
                bar.close()
                return {"status": "interrupted", "epoch": epoch}
    bar.close()

    trainer.load_model_state(best["state"])
    test = {
        name: evaluation_report(
            s, dataset, "test", config.tie_policy, config.eval_batch_size,
            subsets=test_subsets or {"all": None}, per_relation=True, device=device,
        )
        for name, s in trainer.scorers().items()
    }
    seconds = [h["seconds"] for h in history]
    record = {
        "status": "complete",
        "run_name": config.run_name(),
        "config_hash": config.config_hash(),
        "config": config.to_dict(),
        "family": config.PAPER,
        "method": config.method,
        "selected_model": trainer.selected,
        "selected_epoch": best["epoch"],
        "best_valid_mrr": best["mrr"],
        "history": history,
        "test": test,
        "seconds_per_epoch": sum(seconds) / max(1, len(seconds)),
        # budget-hit runs are not converged: tables mark them (patience 0 never converges)
        "precision": precision,
        "converged": plateau.reached,
        "stopped_epoch": history[-1]["epoch"] if history else 0,
        "stop_reason": "plateau" if plateau.reached else "budget",
        "provenance": provenance(device),
        **trainer.record_fields(history),
        **trainer.final_evaluations(dataset, device),
        **(extra_record or {}),
    }
    atomic_write_json(out / RECORD, record)
    atomic_torch_save({"models": best["state"], "epoch": best["epoch"]}, out / BEST)
    if not keep_checkpoint:
        checkpoint_path.unlink(missing_ok=True)
    return record
