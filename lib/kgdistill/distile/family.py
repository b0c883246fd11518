"""The ``distile`` family of runs (:class:`~kgdistill.distile.config.DistilEConfig`), registered
with :mod:`kgdistill.protocol.registry`: its trainer, its backbones, and the teacher run and stage
switch that a DS record states."""
from __future__ import annotations

import torch

from ..core.datasets import KGDataset
from ..protocol.loop import TrainerBase
from ..protocol.registry import Family, register
from .config import DistilEConfig
from .kge import KGEModel
from .trainer import DistilETrainer, build_backbone


def make_trainer(config: DistilEConfig, dataset: KGDataset, device: torch.device, teacher_state: dict | None = None,
                 ) -> TrainerBase:
    return DistilETrainer(config, dataset, device, teacher_state)


def build_run_model(config: DistilEConfig, dataset: KGDataset, model: str, dim: int | None = None) -> KGEModel:
    """Model ``model`` of the run (``"teacher"``: the teacher run's backbone) at ``dim``."""
    spec = config if model != "teacher" else config.teacher_config()
    return build_backbone(spec.replace(dim=dim) if dim else spec, dataset)


def record_outputs(config: DistilEConfig, dataset: KGDataset, teacher_record: dict | None) -> tuple[dict, dict]:
    extra = {} if teacher_record is None else {
        "teacher_run": teacher_record["run_name"], "stage_switch_epoch": config.stage1_epochs}
    return {"all": None}, extra


FAMILY = register(Family(
    name=DistilEConfig.PAPER, config_class=DistilEConfig, run_prefix="distile-", make_trainer=make_trainer,
    build_model=build_run_model, record_outputs=record_outputs,
))
