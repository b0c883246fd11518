"""DistilE (Zhu et al.): distilling low-dimensional KG embeddings from a high-dimensional teacher.

One idea per module: ``kge`` (TransE/TransH/ComplEx/RotatE with negative sampling scorers),
``sampling`` (corrupted triples), ``losses`` (hard/soft label losses of Table 1), ``config``
(:class:`DistilEConfig`), ``trainer`` (:class:`DistilETrainer`, two-stage distillation),
``timing`` (Table 5 inference timing), ``family`` (the ``distile`` family of the run registry).
The study of these runs (notebook 06's grids, curves and claims) is :mod:`kgdistill.study.distile`.
Runs go through :func:`kgdistill.protocol.runner.run` like every other run of the study.
"""
from . import family  # noqa: F401  (registers the family)
from .config import ABLATIONS, DistilEConfig
from .kge import LOSS_KINDS, DistilEComplEx, KGEModel, RotatE, TransE, TransH, build_kge
from .losses import hard_loss, soft_loss
from .sampling import corrupt
from .timing import inference_table, time_link_prediction
from .trainer import DistilETrainer, build_backbone

__all__ = [
    "ABLATIONS", "LOSS_KINDS", "DistilEComplEx", "DistilEConfig", "KGEModel", "RotatE", "TransE", "TransH", "build_kge",
    "DistilETrainer", "build_backbone", "corrupt", "hard_loss", "inference_table", "soft_loss",
    "time_link_prediction",
]
