"""kgdistill: knowledge-graph embedding compression by distillation (MetaSD, DistilE), reproduced.

Subpackages by concern, each importing only from those before it:
``core`` (data, models, evaluation, records) <- ``protocol`` (configs, the training loop, the
runner and its family registry) <- the methods ``metasd``, ``distile``, ``compression`` <-
``study`` (profiles, tables, figures, the notebooks' facade and sections).
"""
from __future__ import annotations

import importlib

# importing the method packages registers their families with kgdistill.protocol.registry
from . import distile, metasd  # noqa: F401
from .core.datasets import KGDataset, load_dataset, long_tail_split
from .core.evaluation import evaluate, evaluation_report, filtered_ranks
from .core.models import BACKBONES, build_model
from .core.moved import MOVED
from .metasd.config import METHODS, RunConfig
from .protocol.runner import load_best, run

__all__ = [
    "BACKBONES", "METHODS", "KGDataset", "RunConfig", "build_model", "evaluate", "evaluation_report",
    "filtered_ranks", "load_best", "load_dataset", "long_tail_split", "run",
]


def __getattr__(name: str):
    """``from kgdistill import figures`` and the other module names of the flat layout."""
    if name in MOVED and "." not in name:
        return importlib.import_module(f"{__name__}.{MOVED[name]}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
