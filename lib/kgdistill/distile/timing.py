"""Inference timing of Table 5: link prediction over a set of triples, per embedding dimension.

Each model is timed ``repeats`` times; a row reports the median (and the fastest and slowest
repetition, the spread a busy machine adds), and speed-ups are ratios of medians, so that one
disturbed repetition does not decide a ratio.
"""
from __future__ import annotations

import statistics

import torch

from ..core.datasets import KGDataset
from ..core.timer import timed
from .kge import KGEModel, build_kge


@torch.no_grad()
def link_prediction_seconds(model: KGEModel, triples: torch.Tensor, batch_size: int = 1024,
                            repeats: int = 3) -> list[float]:
    """Wall seconds of each of ``repeats`` passes ranking every entity for the tail and head query of each triple.

    ``triples`` (n, 3) int64 ``(h, r, t)``; each batch of ``batch_size`` queries is scored against
    all entities with ``score_tails`` and the raw rank of the answer is computed (what link
    prediction does; filtering is bookkeeping independent of the model and is left out).
    """
    device = model.device
    r = model.n_relations
    queries = torch.cat([triples, torch.stack([triples[:, 2], triples[:, 1] + r, triples[:, 0]], 1)]).to(device)

    def rank_all() -> None:
        for s in range(0, len(queries), batch_size):
            batch = queries[s : s + batch_size]
            scores = model.score_tails(batch)
            target = scores.gather(1, batch[:, 2:3])
            (scores > target).sum(1)

    return timed(rank_all, device, repeats=repeats)


def time_link_prediction(model: KGEModel, triples: torch.Tensor, batch_size: int = 1024, repeats: int = 3) -> float:
    """Median wall seconds (over ``repeats``) of :func:`link_prediction_seconds`."""
    return statistics.median(link_prediction_seconds(model, triples, batch_size, repeats))


def all_triples(dataset: KGDataset) -> torch.Tensor:
    """train ∪ valid ∪ test as one (n, 3) tensor (the paper times WN18RR's 93,003 triples)."""
    return torch.cat([dataset.train, dataset.valid, dataset.test])


def inference_table(
    dataset: KGDataset,
    model_name: str,
    dims: list[int] | tuple[int, ...],
    triples: torch.Tensor | None = None,
    batch_size: int = 1024,
    repeats: int = 3,
    device: torch.device | str = "cpu",
    models: dict[int, KGEModel] | None = None,
) -> list[dict]:
    """Rows ``{model, dim, params, seconds, seconds min, seconds max, repeats, speedup}`` per dimension:
    ``seconds`` is the median over ``repeats`` passes (:func:`link_prediction_seconds`), ``seconds
    min`` / ``max`` their range, ``speedup`` the median of ``dims[0]`` over this one's.

    ``models`` maps a dimension to a trained model; missing ones are built with random weights
    (timing does not depend on the values). ``triples`` defaults to all splits of ``dataset``.
    """
    triples = all_triples(dataset) if triples is None else triples
    rows = []
    for dim in dims:
        model = (models or {}).get(dim)
        if model is None:
            torch.manual_seed(0)
            model = build_kge(model_name, dataset.n_entities, dataset.n_relations, dim)
        model = model.to(device).eval()
        seconds = link_prediction_seconds(model, triples, batch_size, repeats)
        rows.append({"model": model_name, "dim": dim, "params": model.parameter_counts()["dense"],
                     "seconds": statistics.median(seconds), "seconds min": min(seconds),
                     "seconds max": max(seconds), "repeats": len(seconds)})
    for row in rows:
        row["speedup"] = rows[0]["seconds"] / row["seconds"]
    return rows
