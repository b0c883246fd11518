"""The MetaSD family's learners: the 1-vs-all supervised objective and the baseline learner.

A *method* (:class:`Learner` subclass) owns its models and optimizers and knows how to take one
training step on a batch of reciprocal triples; :func:`kgdistill.loop.fit` runs the epochs,
validation, selection, checkpoints and the record the same way for every method, and
:mod:`kgdistill.runner` builds the learner (:class:`PlainLearner` for baselines,
:class:`kgdistill.distillation.DistillationLearner` for the distillation methods).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from .config import RunConfig
from .datasets import KGDataset
from .evaluation import Scorer
from .loop import TrainerBase
from .models import KBCModel, build_model, load_module_state
from .pruning import magnitude_mask
from .evalmodes import student_eval_rows
from .regularizers import regularize


LOW_PRECISION = (torch.bfloat16, torch.float16)


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
    if tails.dtype in LOW_PRECISION:  # bf16 autocast: the products are bf16, the softmax and losses are not
        tails = tails.float()
        relations = relations.float() if relations is not None else None
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


def trained_teacher(config: RunConfig, dataset: KGDataset, teacher_state: dict | None) -> KBCModel:
    """The finished baseline run ``config.teacher`` (KD's teacher, prune_finetune's source) built
    with its trained weights ``teacher_state`` (which :func:`kgdistill.runner.run` loads)."""
    if teacher_state is None:
        raise ValueError(f"config field 'teacher': method {config.method!r} needs the trained weights of its teacher "
                         f"run; train it through kgdistill.runner.run, which loads them")
    spec = config.teacher_config()
    model = build_model(spec.model, dataset.n_entities, dataset.n_relations, spec.rank, spec.init_scale)
    load_module_state(model, teacher_state)
    return model


class Learner(TrainerBase):
    """One training method of the MetaSD family. Subclasses fill ``modules``/``optimizers`` and
    implement ``train_step``; an epoch is one pass over the shuffled reciprocal training triples."""

    def __init__(self, config: RunConfig, dataset: KGDataset, device: torch.device):
        super().__init__(config, dataset, device)
        self.class_weights = dataset.entity_frequency_weights().to(device) if config.entity_weights else None

    def start_epoch(self, epoch: int) -> None:
        """Hook run before each epoch (e.g. recompute a pruning mask)."""

    def train_epoch(self, epoch: int, generator: torch.Generator) -> dict:
        """One pass over the shuffled reciprocal training triples; returns ``{"loss": {name: mean}}``."""
        self.start_epoch(epoch)
        train = self.train_triples
        # the order comes from the seeded CPU generator (resumable), then lives on the device
        order = torch.randperm(len(train), generator=generator).to(self.device)
        sums: dict[str, torch.Tensor] = {}
        n_batches = 0
        for start in range(0, len(train), self.config.batch_size):
            batch = train[order[start : start + self.config.batch_size]]
            for k, v in self.train_step(batch).items():  # summed as tensors: no sync per step
                sums[k] = sums.get(k, 0.0) + v
            n_batches += 1
        return {"loss": {k: float(v) / n_batches for k, v in sums.items()}}  # one read per epoch

    @property
    def train_triples(self) -> torch.Tensor:
        """The reciprocal training triples (2·|train|, 3), moved to the device once per run."""
        if getattr(self, "_train_triples", None) is None:
            self._train_triples = self.dataset.reciprocal(self.dataset.train).to(self.device)
        return self._train_triples

    def record_fields(self, history: list[dict]) -> dict:
        """Sizes, dims, phase timings per epoch and the method's extras."""
        phases = {k: v / max(1, len(history)) for k, v in self.phase_seconds.items()}
        return {"parameter_counts": self.parameter_counts(), "dims": self.dims(),
                "phase_seconds_per_epoch": phases, **self.extra_record()}

    def train_step(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def parameter_counts(self) -> dict[str, dict[str, int]]:
        raise NotImplementedError

    def extra_record(self) -> dict:
        return {}


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

    def dims(self) -> dict[str, int]:
        return {"model": self.modules["model"].rank}


class PrunedFinetuneLearner(Learner):
    """A finished dense run (the *source*) pruned once by global magnitude at rate γ and
    fine-tuned with that mask fixed on the baseline objective: no teacher, no distillation.

    Pruned entries get zero gradient through the mask, so Adagrad never moves them and the
    student's non-zero weights stay exactly the mask's ⌈(1−γ)·P⌉."""

    selected = "student"

    def __init__(self, config: RunConfig, dataset: KGDataset, device: torch.device, teacher_state: dict | None = None):
        super().__init__(config, dataset, device)
        model = trained_teacher(config, dataset, teacher_state)
        model.set_masks(magnitude_mask(model.prunable(), config.gamma))
        self.modules["student"] = model.to(device)
        self.optimizers["student"] = torch.optim.Adagrad(model.parameters(), lr=config.learning_rate)

    def train_step(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        model, optimizer = self.modules["student"], self.optimizers["student"]
        with self.timed("step"):
            loss, _ = fit_loss(model, batch, self.config, self.class_weights, masked=True)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return {"student": loss.detach()}

    def scorers(self) -> dict[str, Scorer]:
        model = self.modules["student"]
        return {"student": lambda q: model.score_tails(q, masked=True)}

    def parameter_counts(self) -> dict[str, dict[str, int]]:
        return {"student": self.modules["student"].parameter_counts()}

    def dims(self) -> dict[str, int]:
        return {"student": self.modules["student"].rank}

    def final_evaluations(self, dataset: KGDataset, device: torch.device) -> dict:
        c = self.config
        return {"student_eval": student_eval_rows(self.modules["student"], dataset, c.student_eval_modes,
                                                  c.student_eval_gammas, c.gamma, c.tie_policy, c.eval_batch_size)}
