"""kgdistill: knowledge-graph embedding compression by distillation (MetaSD, DistilE), reproduced."""
from .config import METHODS, RunConfig
from .datasets import KGDataset, load_dataset, long_tail_split
from .evaluation import evaluate, evaluation_report, filtered_ranks
from .models import BACKBONES, build_model
from .runner import load_best, run

__all__ = [
    "BACKBONES", "METHODS", "KGDataset", "RunConfig", "build_model", "evaluate", "evaluation_report",
    "filtered_ranks", "load_best", "load_dataset", "long_tail_split", "run",
]
