"""DistilE training: plain backbones (teachers, no-DS students) and two-stage distillation.

:func:`run_distile` follows the conventions of :func:`kgdistill.training.run`: the record goes to
``<runs_dir>/<run name with config hash>/record.json`` (atomic), a second call returns it, a
killed run resumes from ``checkpoint.pt`` (written at each evaluation; holds the models, Adam
and scheduler states, and the seeded CPU generator that shuffles triples and draws negatives),
the epoch is selected on validation MRR of the selected model (never test), and test metrics
are those of the selected epoch. Evaluation is :func:`kgdistill.evaluation.evaluation_report`
on the models' ``score_tails`` — the same filtered ranking as every other model of the study.

Distillation (method ``"ds"``), per batch of positives and their k negatives:

* stage 1 (epochs ``1..stage1_epochs``): teacher frozen (no gradient, no optimizer step); the
  student minimises ``α·L_soft^S + (1 − α)·L_hard^S`` (Eq. 5) against the teacher's scores;
* stage 2 (later epochs): the teacher is unfrozen and also minimises
  ``β·L_soft^T + (1 − β)·L_hard^T`` (Eq. 11) against the student's scores. Each soft loss
  treats the other model's scores as constants (detached targets), so each model only learns
  from its own part of Eq. 11.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..datasets import KGDataset, load_dataset
from ..records import pick_device
from ..training import BEST, existing_record, fit_recorded
from .config import DistilEConfig
from .kge import KGEModel, build_kge
from .losses import hard_loss, soft_loss
from .sampling import corrupt



def run_dir_for(config: DistilEConfig, runs_dir: str | Path) -> Path:
    return Path(runs_dir) / config.run_name()


def build_backbone(config: DistilEConfig, dataset: KGDataset) -> KGEModel:
    """The backbone a config describes, freshly initialised (seed it before calling)."""
    return build_kge(
        config.model, dataset.n_entities, dataset.n_relations, config.dim,
        margin=config.margin, epsilon=config.epsilon, soft_c=config.soft_c,
    )


def load_trained(config: DistilEConfig, runs_dir: str | Path, dataset: KGDataset, device: torch.device,
                 **run_kwargs) -> tuple[KGEModel, dict]:
    """The selected-epoch model of a finished ``plain`` run (trained now if missing) and its record."""
    record = run_distile(config, runs_dir, dataset=dataset, device=str(device), **run_kwargs)
    model = build_backbone(config, dataset).to(device)
    state = torch.load(run_dir_for(config, runs_dir) / BEST, map_location=device, weights_only=False)
    model.load_state_dict(state["models"][record["selected_model"]])
    return model, record


class _Trainer:
    """Models, optimizers, schedulers and the per-batch step of one run."""

    def __init__(self, config: DistilEConfig, dataset: KGDataset, device: torch.device,
                 teacher: KGEModel | None):
        self.config, self.dataset, self.device = config, dataset, device
        torch.manual_seed(config.seed)
        self.models: dict[str, KGEModel] = {}
        self.selected = "student" if config.method == "ds" else "model"
        self.models[self.selected] = build_backbone(config, dataset).to(device)
        if teacher is not None:
            self.models["teacher"] = teacher
        self.optimizers = {n: torch.optim.Adam(m.parameters(), lr=config.learning_rate) for n, m in self.models.items()}
        self.schedulers = {
            n: torch.optim.lr_scheduler.ReduceLROnPlateau(o, mode="min", factor=config.lr_decay, patience=config.lr_patience)
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
        student = self.models[self.selected]
        s_pos, s_neg, s_pen = self._scores(student, pos, neg)
        hard_s = hard_loss(c.family, s_pos, s_neg, c.margin, c.weighting)
        out: dict[str, torch.Tensor] = {}
        if stage == 0:
            loss = hard_s + s_pen
            out["loss"] = loss.detach()
        else:
            teacher = self.models["teacher"]
            if stage == 1:
                with torch.no_grad():
                    t_pos, t_neg, _ = self._scores(teacher, pos, neg)
            else:
                t_pos, t_neg, t_pen = self._scores(teacher, pos, neg)
            soft_s = soft_loss(c.family, s_pos, s_neg, t_pos.detach(), t_neg.detach(), c.weighting)
            loss = c.alpha * soft_s + (1 - c.alpha) * hard_s + s_pen
            out.update(student=loss.detach(), student_soft=soft_s.detach(), student_hard=hard_s.detach())
            if stage == 2:
                hard_t = hard_loss(c.family, t_pos, t_neg, c.margin, c.weighting)
                soft_t = soft_loss(c.family, t_pos, t_neg, s_pos.detach(), s_neg.detach(), c.weighting)
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

    def end_epoch(self, losses: dict[str, float], stage: int) -> None:
        """Learning-rate decay on each trained model's epoch loss."""
        self.schedulers[self.selected].step(losses["loss" if stage == 0 else "student"])
        if stage == 2:
            self.schedulers["teacher"].step(losses["teacher"])

    def model_state(self) -> dict:
        return {n: {k: v.detach().clone() for k, v in m.state_dict().items()} for n, m in self.models.items()}

    def load_model_state(self, state: dict) -> None:
        for name, module_state in state.items():
            self.models[name].load_state_dict(module_state)

    def state_dict(self) -> dict:
        return {
            "models": self.model_state(),
            "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
            "schedulers": {n: s.state_dict() for n, s in self.schedulers.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        self.load_model_state(state["models"])
        for name, opt in state["optimizers"].items():
            self.optimizers[name].load_state_dict(opt)
        for name, sched in state["schedulers"].items():
            self.schedulers[name].load_state_dict(sched)

    def learning_rates(self) -> dict[str, float]:
        return {n: o.param_groups[0]["lr"] for n, o in self.optimizers.items()}

    # --- the interface of kgdistill.training.fit_recorded ------------------------------------------
    def train_epoch(self, epoch: int, generator: torch.Generator) -> dict:
        """One pass over the shuffled training triples with fresh negatives; entry fields for the history."""
        c, train = self.config, self.dataset.train
        stage = c.stage(epoch)
        if "teacher" in self.models:
            self.models["teacher"].requires_grad_(stage == 2)
        order = torch.randperm(len(train), generator=generator)
        sums: dict[str, float] = {}
        n_batches = 0
        for start in range(0, len(train), c.batch_size):
            pos = train[order[start : start + c.batch_size]]
            neg = corrupt(pos, c.negatives, self.dataset.n_entities, generator)
            for k, v in self.step(pos.to(self.device), neg.to(self.device), stage).items():
                sums[k] = sums.get(k, 0.0) + float(v)
            n_batches += 1
        losses = {k: v / n_batches for k, v in sums.items()}
        self.end_epoch(losses, stage)
        return {"stage": stage, "loss": losses, "lr": self.learning_rates()}

    def valid_scorers(self) -> dict:
        return {self.selected: self.models[self.selected].score_tails}

    def scorers(self) -> dict:
        return {name: model.score_tails for name, model in self.models.items()}

    def record_fields(self, history: list[dict]) -> dict:
        return {"parameter_counts": {n: m.parameter_counts() for n, m in self.models.items()}}


def run_distile(
    config: DistilEConfig,
    runs_dir: str | Path = "runs",
    data_dir: str | Path | None = None,
    device: str | None = "auto",
    show_progress: bool = False,
    force: bool = False,
    dataset: KGDataset | None = None,
    keep_checkpoint: bool = True,
    stop_after_epoch: int | None = None,
) -> dict:
    """Train (or resume, or reuse) the DistilE run described by ``config`` and return its record.

    A ``ds`` run first obtains its teacher: the ``plain`` run ``config.teacher`` (trained here
    if its record is missing). ``stop_after_epoch`` ends the run after that epoch's checkpoint
    (for resumption tests); the returned dict then has ``status: 'interrupted'``.

    The record holds ``history`` (per epoch: seconds, stage, losses, learning rates, and on
    evaluation epochs ``valid`` {model: metrics} and ``valid_seconds``), ``selected_epoch``,
    ``best_valid_mrr``, ``test`` {model: {"all": metrics, "per_relation": ...}} at the selected
    epoch, ``parameter_counts``,
    ``seconds_per_epoch``, ``provenance``; ds runs add ``teacher_run`` and ``stage_switch_epoch``.
    """
    config.validate()
    out = run_dir_for(config, runs_dir)
    record = existing_record(out, force)
    if record is not None:
        return record
    dev = pick_device(device)
    if dataset is None or dataset.name.lower() != config.dataset.lower():
        dataset = load_dataset(config.dataset, data_dir)
    teacher, extra = None, {}
    if config.method == "ds":
        teacher, teacher_record = load_trained(
            config.teacher_config(), runs_dir, dataset, dev, data_dir=data_dir, show_progress=show_progress
        )
        extra = {"teacher_run": teacher_record["run_name"], "stage_switch_epoch": config.stage1_epochs}
    trainer = _Trainer(config, dataset, dev, teacher)
    return fit_recorded(
        config, trainer, dataset, out, dev, show_progress=show_progress, force=force,
        keep_checkpoint=keep_checkpoint, stop_after_epoch=stop_after_epoch, extra_record=extra,
    )
