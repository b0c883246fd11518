"""How much a trained model loses to one-shot magnitude pruning, and why.

MetaSD's student is its source seen through a global magnitude mask (γ = 0.9). A trilinear score
only sums terms whose head, relation and tail coordinates are all kept, so a 90% mask hurts
little when the trained tables concentrate their mass in a few shared coordinates (a low
effective rank) and a lot when the mass is spread evenly. These helpers measure both for a
finished baseline run (``scripts/pruning_vs_rank.py`` sweeps rank and regularisation); the run's
weights come through :func:`kgdistill.protocol.runner.load_best`.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..core.datasets import KGDataset
from ..core.evaluation import evaluate
from ..core.models import ComplEx, KBCModel
from ..core.pruning import magnitude_mask
from ..metasd.config import RunConfig
from ..protocol.runner import load_best as load_run


def coordinate_mass_share(model: KBCModel, fraction: float = 0.1) -> float:
    """Share of the entity table's squared norm held by its top ``fraction`` of coordinates.

    Coordinates are the table's columns, except ComplEx, whose real and imaginary halves of one
    coordinate are counted together. 0.1 means evenly spread mass; close to 1, a low effective rank.
    """
    table = model.entity.detach().float() ** 2
    if isinstance(model, ComplEx):
        half = table.shape[1] // 2
        table = table[:, :half] + table[:, half:]
    mass = table.sum(0).sort(descending=True).values
    top = max(1, round(fraction * mass.numel()))
    return float(mass[:top].sum() / mass.sum())


def load_baseline(config: RunConfig, runs_dir: str | Path, dataset: KGDataset) -> KBCModel:
    """The selected model of a finished baseline run (its ``best.pt``), in eval mode on CPU;
    :func:`kgdistill.protocol.runner.load_best` restricted to baselines, without retraining a run whose
    weights are missing."""
    if config.method != "baseline":
        raise ValueError(f"load_baseline reads baseline runs; {config.run_name()} is a {config.method} run")
    model, _ = load_run(config, runs_dir, dataset, "cpu", retrain_missing=False)
    return model


@torch.no_grad()
def one_shot_pruning(model: KBCModel, dataset: KGDataset, gamma: float = 0.9, split: str = "valid",
                     fraction: float = 0.1) -> dict[str, float]:
    """Filtered ``split`` MRR of ``model`` dense and through a fresh γ magnitude mask (no retraining),
    and its :func:`coordinate_mass_share`. The model is left unmasked."""
    dense = evaluate(lambda q: model.score_tails(q), dataset, split)["MRR"]
    model.set_masks(magnitude_mask(model.prunable(), gamma))
    try:
        pruned = evaluate(lambda q: model.score_tails(q, masked=True), dataset, split)["MRR"]
    finally:
        model.set_masks(None)
    return {"dense MRR": dense, "pruned MRR": pruned, "retained": pruned / dense if dense else float("nan"),
            "mass share": coordinate_mass_share(model, fraction)}
