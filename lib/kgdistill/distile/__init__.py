"""DistilE (Zhu et al.): distilling low-dimensional KG embeddings from a high-dimensional teacher.

One idea per module: ``kge`` (TransE/TransH/ComplEx/RotatE with negative sampling scorers),
``sampling`` (corrupted triples), ``losses`` (hard/soft label losses of Table 1), ``config``
(:class:`DistilEConfig`), ``trainer`` (:class:`DistilETrainer`, two-stage distillation),
``timing`` (Table 5 inference timing), ``claims`` (DS − no-DS per pair, and its verdict),
``experiments`` (profile-driven grids for the notebook).
Runs go through :func:`kgdistill.runner.run` like every other run of the study.
"""
from .config import ABLATIONS, DistilEConfig
from .kge import FAMILIES, ComplEx, KGEModel, RotatE, TransE, TransH, build_kge
from .losses import hard_loss, soft_loss
from .sampling import corrupt
from .timing import inference_table, time_link_prediction
from .trainer import DistilETrainer, build_backbone

__all__ = [
    "ABLATIONS", "FAMILIES", "ComplEx", "DistilEConfig", "KGEModel", "RotatE", "TransE", "TransH", "build_kge",
    "DistilETrainer", "build_backbone", "corrupt", "hard_loss", "inference_table", "soft_loss",
    "time_link_prediction",
]
