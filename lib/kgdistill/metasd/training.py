"""The MetaSD family's learners: the baseline and prune + fine-tune learners and their base class
(the objective they minimise is :mod:`kgdistill.metasd.objective`).

A *method* (:class:`Learner` subclass) owns its models and optimizers and knows how to take one
training step on a batch of reciprocal triples; :func:`kgdistill.protocol.loop.fit` runs the epochs,
validation, selection, checkpoints and the record the same way for every method, and
:mod:`kgdistill.protocol.runner` builds the learner (:class:`PlainLearner` for baselines,
:class:`kgdistill.metasd.distillation.DistillationLearner` for the distillation methods).
"""
from __future__ import annotations

import torch

from ..core.datasets import KGDataset
from ..core.evaluation import Scorer
from ..core.models import KBCModel, build_model
from ..core.pruning import magnitude_mask
from ..protocol.loop import TrainerBase
from ..protocol.registry import model_from_state
from .config import RunConfig
from .evalmodes import student_eval_rows
from .objective import baseline_loss


def trained_teacher(config: RunConfig, dataset: KGDataset, teacher_state: dict | None) -> KBCModel:
    """The finished baseline run ``config.teacher`` (KD's teacher, prune_finetune's source) built
    with its trained weights ``teacher_state`` (which :func:`kgdistill.protocol.runner.run` loads)."""
    if teacher_state is None:
        raise ValueError(f"config field 'teacher': method {config.method!r} needs the trained weights of its teacher "
                         f"run; train it through kgdistill.protocol.runner.run, which loads them")
    return model_from_state(config.teacher_config(), dataset, teacher_state, "teacher")


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
            loss = baseline_loss(model, batch, self.config, self.class_weights)
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
            loss = baseline_loss(model, batch, self.config, self.class_weights, masked=True)
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
