"""The ``metasd`` family of runs (:class:`~kgdistill.metasd.config.RunConfig`), registered with
:mod:`kgdistill.protocol.registry`: which learner trains a method, how a run's model is built, and
the long-tail test subset of the MetaSD paper's Table 2 in every record."""
from __future__ import annotations

import torch

from ..core.datasets import KGDataset, long_tail_split
from ..core.models import KBCModel, build_model
from ..protocol.loop import TrainerBase
from ..protocol.registry import Family, register
from .config import RunConfig
from .distillation import DistillationLearner
from .training import PlainLearner, PrunedFinetuneLearner


def make_trainer(config: RunConfig, dataset: KGDataset, device: torch.device, teacher_state: dict | None = None,
                 ) -> TrainerBase:
    """The learner of ``config.method`` (seed torch before calling)."""
    if config.method == "baseline":
        return PlainLearner(config, dataset, device)
    if config.method == "prune_finetune":
        return PrunedFinetuneLearner(config, dataset, device, teacher_state)
    return DistillationLearner(config, dataset, device, teacher_state)


def build_run_model(config: RunConfig, dataset: KGDataset, model: str, dim: int | None = None) -> KBCModel:
    """Model ``model`` of the run (``"teacher"``: its teacher run's backbone when it has one) at
    rank ``dim`` (default: the config's rank), freshly initialised."""
    spec = config.teacher_config() if (model == "teacher" and config.teacher_config()) else config
    return build_model(spec.model, dataset.n_entities, dataset.n_relations, dim or spec.rank, spec.init_scale)


def record_outputs(config: RunConfig, dataset: KGDataset, teacher_record: dict | None) -> tuple[dict, dict]:
    """Every test metric also on the long-tail subset (Table 2), and the split's summary."""
    tail = long_tail_split(dataset, config.long_tail_threshold)
    return {"all": None, "long_tail": tail.test_mask}, {"long_tail": tail.summary()}


FAMILY = register(Family(
    name=RunConfig.PAPER, config_class=RunConfig, run_prefix="", make_trainer=make_trainer,
    build_model=build_run_model, record_outputs=record_outputs,
))
