"""The training loop shared by every method: epochs, validation, selection, checkpoints, records.

A *method* (:class:`Learner` subclass) owns its models and optimizers and knows how to take one
training step; :func:`run` does everything else the same way for all of them:

* shuffles reciprocal training triples with a seeded generator (saved in checkpoints),
* evaluates on validation every ``eval_every`` epochs and at the end, selects the epoch with the
  best validation MRR of the method's *selected* model (never test),
* checkpoints atomically at each evaluation, so that a killed run started again with the same
  config resumes and ends with the same numbers as an uninterrupted run (CPU, same seed),
* evaluates test once, with the selected weights (overall, long-tail subset, per relation),
* writes ``record.json`` atomically into ``<runs_dir>/<run name with config hash>/``; asking for
  a run whose record exists returns the record without retraining.
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .config import RunConfig
from .datasets import KGDataset, load_dataset, long_tail_split
from .evaluation import Scorer, evaluation_report
from .models import KBCModel, build_model
from .records import atomic_torch_save, atomic_write_json, pick_device, provenance, read_json
from .regularizers import regularize

RECORD = "record.json"
CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"


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


class Losses(NamedTuple):
    """Per-batch terms of one model: ``fit`` (tail CE + RP·relation CE; RP only when the caller
    folds the tail CE into its own loss), ``penalty`` (regularizer), ``scores`` (B, N) tail
    logits, their ``log_probs`` (log-softmax; detached when the tail CE is left to the caller)
    and the tail ``targets`` (B,)."""

    fit: torch.Tensor
    penalty: torch.Tensor
    scores: torch.Tensor
    log_probs: torch.Tensor
    targets: torch.Tensor


def supervised_loss(
    model: KBCModel,
    batch: torch.Tensor,
    config: RunConfig,
    class_weights: torch.Tensor | None = None,
    masked: bool = False,
    params: dict[str, torch.Tensor] | None = None,
    tail_ce: bool = True,
) -> Losses:
    """Supervised terms of a batch of reciprocal triples (B, 3); ``params`` substitutes the model's
    tables (``torch.func.functional_call``). With ``tail_ce=False`` the tail cross-entropy is
    left out of ``fit`` (a distillation loss computes it together with its KL term)."""
    kwargs = {"masked": masked, "relation_prediction": config.rp_weight > 0}
    if params is None:
        tails, relations, factors = model(batch, **kwargs)
    else:
        tails, relations, factors = torch.func.functional_call(model, params, (batch,), kwargs)
    targets = batch[:, 2]
    if tail_ce:
        log_probs = F.log_softmax(tails, dim=-1)
        fit = F.nll_loss(log_probs, targets, weight=class_weights)  # = cross-entropy of the tails
    else:
        with torch.no_grad():
            log_probs = F.log_softmax(tails, dim=-1)
        fit = tails.new_zeros(())
    if config.rp_weight > 0:
        fit = fit + config.rp_weight * F.cross_entropy(relations, batch[:, 1])
    return Losses(fit, regularize(config.regularizer, factors, config.reg_weight), tails, log_probs, targets)


def fit_loss(
    model: KBCModel,
    batch: torch.Tensor,
    config: RunConfig,
    class_weights: torch.Tensor | None = None,
    masked: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Baseline objective: tail CE + RP·relation CE + regularizer. Returns ``(loss, tail_scores)``."""
    losses = supervised_loss(model, batch, config, class_weights, masked)
    return losses.fit + losses.penalty, losses.scores


def load_module_state(module: torch.nn.Module, state: dict) -> None:
    """``load_state_dict`` that also restores pruning masks absent from a fresh model."""
    if isinstance(module, KBCModel) and "entity_mask" in state:
        module.set_masks({"entity": state["entity_mask"], "relation": state["relation_mask"]})
    module.load_state_dict(state)


class Learner:
    """One training method. Subclasses fill ``modules``/``optimizers`` and implement ``train_step``."""

    #: name of the model whose validation MRR selects the epoch
    selected = "model"

    def __init__(self, config: RunConfig, dataset: KGDataset, device: torch.device):
        self.config, self.dataset, self.device = config, dataset, device
        self.modules: dict[str, torch.nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.class_weights = dataset.entity_frequency_weights().to(device) if config.entity_weights else None
        self.phase_seconds: dict[str, float] = {}

    def start_epoch(self, epoch: int) -> None:
        """Hook run before each epoch (e.g. recompute a pruning mask)."""

    def train_epoch(self, epoch: int, generator: torch.Generator) -> dict:
        """One pass over the shuffled reciprocal training triples; returns ``{"loss": {name: mean}}``."""
        self.start_epoch(epoch)
        train = self.dataset.reciprocal(self.dataset.train)
        order = torch.randperm(len(train), generator=generator)
        sums: dict[str, torch.Tensor] = {}
        n_batches = 0
        for start in range(0, len(train), self.config.batch_size):
            batch = train[order[start : start + self.config.batch_size]].to(self.device)
            for k, v in self.train_step(batch).items():  # summed as tensors: no sync per step
                sums[k] = sums.get(k, 0.0) + v
            n_batches += 1
        return {"loss": {k: float(v) / n_batches for k, v in sums.items()}}

    def valid_scorers(self) -> dict[str, Scorer]:
        return self.scorers()

    def record_fields(self, history: list[dict]) -> dict:
        """What the record adds for this method (sizes, phase timings, ...)."""
        phases = {k: v / max(1, len(history)) for k, v in self.phase_seconds.items()}
        return {"parameter_counts": self.parameter_counts(), "phase_seconds_per_epoch": phases, **self.extra_record()}

    def train_step(self, batch: torch.Tensor) -> dict[str, float]:
        raise NotImplementedError

    def scorers(self) -> dict[str, Scorer]:
        """Models to evaluate, by name; must include :attr:`selected`."""
        raise NotImplementedError

    def parameter_counts(self) -> dict[str, dict[str, int]]:
        raise NotImplementedError

    def extra_record(self) -> dict:
        return {}

    # --- state -----------------------------------------------------------------------------
    def model_state(self) -> dict:
        return {name: {k: v.detach().clone() for k, v in m.state_dict().items()} for name, m in self.modules.items()}

    def load_model_state(self, state: dict) -> None:
        for name, module_state in state.items():
            load_module_state(self.modules[name], module_state)

    def state_dict(self) -> dict:
        return {
            "models": self.model_state(),
            "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
            "extra": self.extra_state(),
            "phase_seconds": dict(self.phase_seconds),
        }

    def load_state_dict(self, state: dict) -> None:
        self.load_model_state(state["models"])
        for name, opt_state in state["optimizers"].items():
            self.optimizers[name].load_state_dict(opt_state)
        self.load_extra_state(state["extra"])
        self.phase_seconds = dict(state["phase_seconds"])

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    @contextmanager
    def timed(self, phase: str):
        """Add the wall time of the block to ``phase_seconds[phase]`` (syncs CUDA for honest numbers)."""
        start = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.phase_seconds[phase] = self.phase_seconds.get(phase, 0.0) + time.perf_counter() - start


class PlainLearner(Learner):
    """Baseline: one backbone, Adagrad, full 1-vs-all cross-entropy (+RP, +regularizer)."""

    def __init__(self, config: RunConfig, dataset: KGDataset, device: torch.device):
        super().__init__(config, dataset, device)
        model = build_model(config.model, dataset.n_entities, dataset.n_relations, config.rank, config.init_scale)
        self.modules["model"] = model.to(device)
        self.optimizers["model"] = torch.optim.Adagrad(model.parameters(), lr=config.learning_rate)

    def train_step(self, batch: torch.Tensor) -> dict[str, float]:
        model, optimizer = self.modules["model"], self.optimizers["model"]
        with self.timed("step"):
            loss, _ = fit_loss(model, batch, self.config, self.class_weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return {"loss": loss.detach()}

    def scorers(self) -> dict[str, Scorer]:
        return {"model": self.modules["model"].score_tails}

    def parameter_counts(self) -> dict[str, dict[str, int]]:
        return {"model": self.modules["model"].parameter_counts()}


def make_learner(config: RunConfig, dataset: KGDataset, device: torch.device, runs_dir: Path) -> Learner:
    if config.method == "baseline":
        return PlainLearner(config, dataset, device)
    from .distillation import DistillationLearner

    return DistillationLearner(config, dataset, device, runs_dir)


def run_dir_for(config: RunConfig, runs_dir: str | Path) -> Path:
    return Path(runs_dir) / config.run_name()


def run(
    config: RunConfig,
    runs_dir: str | Path = "runs",
    data_dir: str | Path | None = None,
    device: str | None = "auto",
    show_progress: bool = False,
    force: bool = False,
    keep_checkpoint: bool = True,
    stop_after_epoch: int | None = None,
    dataset: KGDataset | None = None,
) -> dict:
    """Train (or resume, or reuse) the run described by ``config`` and return its record.

    ``force`` retrains even when a record exists. ``stop_after_epoch`` ends the process-like run
    early after that epoch's checkpoint (used to test resumption); the returned dict then has
    ``status: 'interrupted'``.
    """
    config.validate()
    out = run_dir_for(config, runs_dir)
    record = existing_record(out, force)
    if record is not None:
        return record
    dev = pick_device(device)
    dataset = dataset if dataset is not None and dataset.name.lower() == config.dataset.lower() else load_dataset(config.dataset, data_dir)
    torch.manual_seed(config.seed)
    learner = make_learner(config, dataset, dev, Path(runs_dir))
    tail = long_tail_split(dataset, config.long_tail_threshold)
    return fit_recorded(
        config, learner, dataset, out, dev, show_progress=show_progress, force=force,
        keep_checkpoint=keep_checkpoint, stop_after_epoch=stop_after_epoch,
        test_subsets={"all": None, "long_tail": tail.test_mask}, extra_record={"long_tail": tail.summary()},
    )


def existing_record(out: Path, force: bool = False) -> dict | None:
    """The finished record in ``out`` (None when absent, unfinished or ``force``)."""
    record_path = out / RECORD
    if record_path.exists() and not force:
        record = read_json(record_path)
        if record.get("status") == "complete":
            return record
    return None


def fit_recorded(
    config,
    learner,
    dataset: KGDataset,
    out: Path,
    device: torch.device,
    *,
    show_progress: bool = False,
    force: bool = False,
    keep_checkpoint: bool = True,
    stop_after_epoch: int | None = None,
    test_subsets: dict[str, torch.Tensor | None] | None = None,
    extra_record: dict | None = None,
) -> dict:
    """The loop every method shares: epochs, validation, selection, checkpoints, test, record.

    ``config`` needs ``seed``, ``max_epochs``, ``eval_every``, ``tie_policy``, ``eval_batch_size``,
    ``run_name()``, ``config_hash()``, ``to_dict()`` and ``method``; ``learner`` needs
    ``selected``, ``train_epoch(epoch, generator) -> entry fields``, ``valid_scorers()``,
    ``scorers()`` (all models, for test), ``state_dict()``/``load_state_dict()``,
    ``model_state()``/``load_model_state()`` and ``record_fields(history)``.
    """
    generator = torch.Generator().manual_seed(config.seed)
    history: list[dict] = []
    best = {"epoch": 0, "mrr": -1.0, "state": None}
    plateau = Plateau(config.patience, config.min_delta)
    first_epoch = 1
    checkpoint_path = out / CHECKPOINT
    if checkpoint_path.exists() and not force:
        checkpoint = torch.load(checkpoint_path, map_location=device, weights_only=False)
        learner.load_state_dict(checkpoint["learner"])
        generator.set_state(checkpoint["generator"])
        torch.set_rng_state(checkpoint["torch_rng"])
        history, best = checkpoint["history"], checkpoint["best"]
        plateau.load_state_dict(checkpoint.get("plateau", {}))
        first_epoch = checkpoint["epoch"] + 1
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", config.to_dict())

    bar = tqdm(total=config.max_epochs, initial=first_epoch - 1, disable=not show_progress, desc=config.run_name(), unit="epoch")
    for epoch in range(first_epoch, config.max_epochs + 1):
        if plateau.reached:  # resumed from the checkpoint that reached it
            break
        t0 = time.perf_counter()
        fields = learner.train_epoch(epoch, generator)
        entry = {"epoch": epoch, "seconds": time.perf_counter() - t0, **fields}
        if not all(math.isfinite(v) for v in entry["loss"].values()):
            bar.close()
            raise FloatingPointError(
                f"run {config.run_name()} diverged in epoch {epoch} (mean losses {entry['loss']}); no record was "
                f"written. Lower learning_rate or init_scale, or raise reg_weight, and run again."
            )
        bar.update(1)
        history.append(entry)
        if epoch % config.eval_every == 0 or epoch == config.max_epochs:
            t0 = time.perf_counter()
            entry["valid"] = {
                name: evaluation_report(s, dataset, "valid", config.tie_policy, config.eval_batch_size, device=device)["all"]
                for name, s in learner.valid_scorers().items()
            }
            # apart from "seconds" (training only): filtered validation can outlast the epoch itself
            entry["valid_seconds"] = time.perf_counter() - t0
            mrr = entry["valid"][learner.selected]["MRR"]
            if mrr > best["mrr"]:
                best = {"epoch": epoch, "mrr": mrr, "state": learner.model_state()}
            plateau.update(mrr)
            bar.set_postfix(valid_mrr=f"{mrr:.3f}")
            atomic_torch_save(
                {
                    "epoch": epoch,
                    "learner": learner.state_dict(),
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
            if stop_after_epoch is not None and stop_after_epoch <= epoch < config.max_epochs:
                bar.close()
                return {"status": "interrupted", "epoch": epoch}
    bar.close()

    learner.load_model_state(best["state"])
    test = {
        name: evaluation_report(
            s, dataset, "test", config.tie_policy, config.eval_batch_size,
            subsets=test_subsets or {"all": None}, per_relation=True, device=device,
        )
        for name, s in learner.scorers().items()
    }
    seconds = [h["seconds"] for h in history]
    record = {
        "status": "complete",
        "run_name": config.run_name(),
        "config_hash": config.config_hash(),
        "config": config.to_dict(),
        "method": config.method,
        "selected_model": learner.selected,
        "selected_epoch": best["epoch"],
        "best_valid_mrr": best["mrr"],
        "history": history,
        "test": test,
        "seconds_per_epoch": sum(seconds) / max(1, len(seconds)),
        # budget-hit runs are not converged: tables mark them (patience 0 never converges)
        "converged": plateau.reached,
        "stopped_epoch": history[-1]["epoch"] if history else 0,
        "stop_reason": "plateau" if plateau.reached else "budget",
        "provenance": provenance(device),
        **learner.record_fields(history),
        **(extra_record or {}),
    }
    atomic_write_json(out / RECORD, record)
    atomic_torch_save({"models": best["state"], "epoch": best["epoch"]}, out / BEST)
    if not keep_checkpoint:
        checkpoint_path.unlink(missing_ok=True)
    return record
