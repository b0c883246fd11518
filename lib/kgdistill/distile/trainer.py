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

import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..datasets import KGDataset, load_dataset
from ..evaluation import evaluation_report
from ..records import atomic_torch_save, atomic_write_json, pick_device, provenance, read_json
from .config import DistilEConfig
from .kge import KGEModel, build_kge
from .losses import hard_loss, soft_loss
from .sampling import corrupt

RECORD = "record.json"
CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"


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
    evaluation epochs ``valid`` {model: metrics}), ``selected_epoch``, ``best_valid_mrr``, ``test``
    {model: {"all": metrics, "per_relation": ...}} at the selected epoch, ``parameter_counts``,
    ``seconds_per_epoch``, ``provenance``; ds runs add ``teacher_run`` and ``stage_switch_epoch``.
    """
    config.validate()
    out = run_dir_for(config, runs_dir)
    record_path = out / RECORD
    if record_path.exists() and not force:
        record = read_json(record_path)
        if record.get("status") == "complete":
            return record
    dev = pick_device(device)
    if dataset is None or dataset.name.lower() != config.dataset.lower():
        dataset = load_dataset(config.dataset, data_dir)
    teacher, teacher_record = None, None
    if config.method == "ds":
        teacher, teacher_record = load_trained(
            config.teacher_config(), runs_dir, dataset, dev, data_dir=data_dir, show_progress=show_progress
        )
    trainer = _Trainer(config, dataset, dev, teacher)
    generator = torch.Generator().manual_seed(config.seed)
    train = dataset.train
    history: list[dict] = []
    best: dict = {"epoch": 0, "mrr": -1.0, "state": None}
    first_epoch = 1
    checkpoint_path = out / CHECKPOINT
    if checkpoint_path.exists() and not force:
        checkpoint = torch.load(checkpoint_path, map_location=dev, weights_only=False)
        trainer.load_state_dict(checkpoint["trainer"])
        generator.set_state(checkpoint["generator"])
        history, best = checkpoint["history"], checkpoint["best"]
        first_epoch = checkpoint["epoch"] + 1
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", config.to_dict())

    bar = tqdm(total=config.max_epochs, initial=first_epoch - 1, disable=not show_progress, desc=config.run_name(), unit="epoch")
    for epoch in range(first_epoch, config.max_epochs + 1):
        t0 = time.perf_counter()
        stage = config.stage(epoch)
        if "teacher" in trainer.models:
            trainer.models["teacher"].requires_grad_(stage == 2)
        order = torch.randperm(len(train), generator=generator)
        sums: dict[str, float] = {}
        n_batches = 0
        for start in range(0, len(train), config.batch_size):
            pos = train[order[start : start + config.batch_size]]
            neg = corrupt(pos, config.negatives, dataset.n_entities, generator)
            for k, v in trainer.step(pos.to(dev), neg.to(dev), stage).items():
                sums[k] = sums.get(k, 0.0) + float(v)
            n_batches += 1
        losses = {k: v / n_batches for k, v in sums.items()}
        trainer.end_epoch(losses, stage)
        entry = {
            "epoch": epoch, "seconds": time.perf_counter() - t0, "stage": stage, "loss": losses,
            "lr": trainer.learning_rates(),
        }
        bar.update(1)
        if epoch % config.eval_every == 0 or epoch == config.max_epochs:
            model = trainer.models[trainer.selected]
            entry["valid"] = {
                trainer.selected: evaluation_report(
                    model.score_tails, dataset, "valid", config.tie_policy, config.eval_batch_size, device=dev
                )["all"]
            }
            mrr = entry["valid"][trainer.selected]["MRR"]
            if mrr > best["mrr"]:
                best = {"epoch": epoch, "mrr": mrr, "state": trainer.model_state()}
            bar.set_postfix(valid_mrr=f"{mrr:.3f}")
            history.append(entry)
            atomic_torch_save(
                {"epoch": epoch, "trainer": trainer.state_dict(), "generator": generator.get_state(),
                 "history": history, "best": best},
                checkpoint_path,
            )
            if stop_after_epoch is not None and stop_after_epoch <= epoch < config.max_epochs:
                bar.close()
                return {"status": "interrupted", "epoch": epoch}
        else:
            history.append(entry)
    bar.close()

    trainer.load_model_state(best["state"])
    test = {
        name: evaluation_report(
            m.score_tails, dataset, "test", config.tie_policy, config.eval_batch_size, per_relation=True, device=dev
        )
        for name, m in trainer.models.items()
    }
    seconds = [h["seconds"] for h in history]
    record = {
        "status": "complete",
        "run_name": config.run_name(),
        "config_hash": config.config_hash(),
        "config": config.to_dict(),
        "method": config.method,
        "selected_model": trainer.selected,
        "selected_epoch": best["epoch"],
        "best_valid_mrr": best["mrr"],
        "history": history,
        "test": test,
        "parameter_counts": {n: m.parameter_counts() for n, m in trainer.models.items()},
        "seconds_per_epoch": sum(seconds) / max(1, len(seconds)),
        "provenance": provenance(dev),
    }
    if config.method == "ds":
        record["teacher_run"] = teacher_record["run_name"]
        record["stage_switch_epoch"] = config.stage1_epochs
    atomic_write_json(record_path, record)
    atomic_torch_save({"models": best["state"], "epoch": best["epoch"]}, out / BEST)
    if not keep_checkpoint:
        checkpoint_path.unlink(missing_ok=True)
    return record
