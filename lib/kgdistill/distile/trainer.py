"""DistilE's trainer: plain backbones (teachers, no-DS students) and two-stage distillation.

:class:`DistilETrainer` follows the trainer protocol of :mod:`kgdistill.protocol.loop`, so a DistilE run is
trained, resumed, selected (validation MRR, never test) and recorded exactly like a MetaSD-family
run: ``kgdistill.protocol.runner.run(DistilEConfig(...))``. Each epoch shuffles the training triples and
draws fresh negatives from the loop's seeded CPU generator, which makes the stream resumable.
Evaluation is the study's filtered ranking on the models' ``score_tails``.

Distillation (method ``"ds"``), per batch of positives and their k negatives:

* stage 1 (epochs ``1..stage1_epochs``): teacher frozen (no gradient, no optimizer step); the
  student minimises ``α·L_soft^S + (1 − α)·L_hard^S`` (Eq. 5) against the teacher's scores;
* stage 2 (later epochs): the teacher is unfrozen and also minimises
  ``β·L_soft^T + (1 − β)·L_hard^T`` (Eq. 11) against the student's scores. Each soft loss
  treats the other model's scores as constants (detached targets), so each model only learns
  from its own part of Eq. 11.
"""
from __future__ import annotations

import torch

from ..core.datasets import KGDataset
from ..protocol.loop import TrainerBase
from .config import DistilEConfig
from .kge import KGEModel, build_kge
from .losses import hard_loss, soft_loss
from .sampling import corrupt


def build_backbone(config: DistilEConfig, dataset: KGDataset) -> KGEModel:
    """The backbone a config describes, freshly initialised (seed it before calling)."""
    return build_kge(
        config.model, dataset.n_entities, dataset.n_relations, config.dim,
        margin=config.margin, epsilon=config.epsilon, soft_c=config.soft_c,
    )


class DistilETrainer(TrainerBase):
    """Models, Adam optimizers, plateau schedulers and the per-batch step of one DistilE run."""

    def __init__(self, config: DistilEConfig, dataset: KGDataset, device: torch.device,
                 teacher_state: dict | None = None):
        """``teacher_state``: for a ``ds`` run, the trained weights of its ``plain`` teacher run
        (loaded by :func:`kgdistill.protocol.runner.load_best`)."""
        super().__init__(config, dataset, device)
        teacher = None
        if config.method == "ds":
            if teacher_state is None:
                raise ValueError("config field 'teacher': a 'ds' run needs its teacher's trained weights; "
                                 "train it through kgdistill.protocol.runner.run, which loads them")
            teacher = build_backbone(config.teacher_config(), dataset)  # before the seed: the student's draws follow it
            teacher.load_state_dict(teacher_state)
        torch.manual_seed(config.seed)
        self.selected = "student" if config.method == "ds" else "model"
        self.modules[self.selected] = build_backbone(config, dataset).to(device)
        if teacher is not None:
            self.modules["teacher"] = teacher.to(device)
        # foreach: the same Adam arithmetic in the same order as the CPU default (bit for bit, so every
        # record stays reproducible) in fewer passes over the tables: 1.4x faster per WN18RR RotatE
        # stage-2 step on one thread (benchmarks/distile_adam.py)
        self.optimizers = {
            n: torch.optim.Adam(m.parameters(), lr=config.learning_rate, foreach=True) for n, m in self.modules.items()
        }
        self.schedulers = {
            n: torch.optim.lr_scheduler.ReduceLROnPlateau(
                o, mode="min", factor=config.lr_decay, patience=config.lr_patience
            )
            for n, o in self.optimizers.items()
        }

    def _scores(self, model: KGEModel, pos: torch.Tensor, neg: torch.Tensor) -> tuple[torch.Tensor, ...]:
        triples = torch.cat([pos.unsqueeze(1), neg], 1)  # (B, 1 + k, 3)
        h, r, t = triples[..., 0], triples[..., 1], triples[..., 2]
        scores = model.score(h, r, t)
        return scores[:, 0], scores[:, 1:], model.penalty(h, r, t)

    def step(self, pos: torch.Tensor, neg: torch.Tensor, stage: int) -> dict[str, torch.Tensor]:
        """One optimisation step on positives (B, 3) and negatives (B, k, 3); returns detached losses."""
        c = self.config
        student = self.modules[self.selected]
        s_pos, s_neg, s_pen = self._scores(student, pos, neg)
        hard_s = hard_loss(c.loss_kind, s_pos, s_neg, c.margin, c.weighting)
        out: dict[str, torch.Tensor] = {}
        if stage == 0:
            loss = hard_s + s_pen
            out["loss"] = loss.detach()
        else:
            teacher = self.modules["teacher"]
            if stage == 1:
                with torch.no_grad():
                    t_pos, t_neg, _ = self._scores(teacher, pos, neg)
            else:
                t_pos, t_neg, t_pen = self._scores(teacher, pos, neg)
            soft_s = soft_loss(c.loss_kind, s_pos, s_neg, t_pos.detach(), t_neg.detach(), c.weighting)
            loss = c.alpha * soft_s + (1 - c.alpha) * hard_s + s_pen
            out.update(student=loss.detach(), student_soft=soft_s.detach(), student_hard=hard_s.detach())
            if stage == 2:
                hard_t = hard_loss(c.loss_kind, t_pos, t_neg, c.margin, c.weighting)
                soft_t = soft_loss(c.loss_kind, t_pos, t_neg, s_pos.detach(), s_neg.detach(), c.weighting)
                loss_t = c.beta * soft_t + (1 - c.beta) * hard_t + t_pen
                out.update(teacher=loss_t.detach(), teacher_soft=soft_t.detach(), teacher_hard=hard_t.detach())
                loss = loss + loss_t
        active = [self.selected] + (["teacher"] if stage == 2 else [])
        for name in active:
            self.optimizers[name].zero_grad(set_to_none=True)
        loss.backward()
        for name in active:
            self.optimizers[name].step()
        return out

    def use_foreach(self, enabled: bool) -> None:
        """Step every optimizer with torch's foreach kernels (True, the trainer's setting) or one
        tensor at a time (False, torch's CPU default); the updates are bit for bit the same."""
        for optimizer in self.optimizers.values():
            for group in optimizer.param_groups:
                group["foreach"] = enabled

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.use_foreach(True)  # older checkpoints stored foreach=None, and Optimizer.load_state_dict restores it

    def end_epoch(self, losses: dict[str, float], stage: int) -> None:
        """Learning-rate decay on each trained model's epoch loss."""
        self.schedulers[self.selected].step(losses["loss" if stage == 0 else "student"])
        if stage == 2:
            self.schedulers["teacher"].step(losses["teacher"])

    def learning_rates(self) -> dict[str, float]:
        return {n: o.param_groups[0]["lr"] for n, o in self.optimizers.items()}

    # --- the trainer protocol of kgdistill.protocol.loop -----------------------------------------------------
    def train_epoch(self, epoch: int, generator: torch.Generator) -> dict:
        """One pass over the shuffled training triples with fresh negatives; entry fields for the history."""
        c, train = self.config, self.dataset.train
        stage = c.stage(epoch)
        if "teacher" in self.modules:
            self.modules["teacher"].requires_grad_(stage == 2)
        order = torch.randperm(len(train), generator=generator)
        sums: dict[str, torch.Tensor] = {}
        n_batches = 0
        for start in range(0, len(train), c.batch_size):
            # negatives come from the seeded CPU generator (resumable, device-independent)
            pos = train[order[start : start + c.batch_size]]
            neg = corrupt(pos, c.negatives, self.dataset.n_entities, generator)
            for k, v in self.step(pos.to(self.device), neg.to(self.device), stage).items():
                # summed on the device in float64 (as Python floats were): no sync per step
                sums[k] = sums[k] + v.double() if k in sums else v.double()
            n_batches += 1
        losses = {k: float(v) / n_batches for k, v in sums.items()}  # one read per epoch
        self.end_epoch(losses, stage)
        return {"stage": stage, "loss": losses, "lr": self.learning_rates()}

    def valid_scorers(self) -> dict:
        return {self.selected: self.modules[self.selected].score_tails}

    def scorers(self) -> dict:
        return {name: model.score_tails for name, model in self.modules.items()}

    def dims(self) -> dict[str, int]:
        return {name: model.dim for name, model in self.modules.items()}
