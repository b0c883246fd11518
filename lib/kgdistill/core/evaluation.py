"""Filtered link-prediction evaluation: ranks, MRR/MR/Hits@k, per relation and on subsets.

A *scorer* is any callable mapping queries (B, ≥2) int64 ``(anchor, relation)`` with relation in
``[0, 2R)`` to scores (B, N) over all entities (``model.score_tails`` for the factorization
models; DistilE models follow the same convention). Head queries are reciprocal tail queries
``(t, r + R, h)``, and metrics are the mean of the tail and head directions, as kbc reports.

Filtering never writes into the score matrix: the rank counts all entities scoring at least
(or above) the target in one vectorized pass and subtracts the known answers that do, which
are gathered from the CSR filter index. Memory is bounded by ``batch_size × N``.
"""
from __future__ import annotations

from typing import Callable

import torch

from .datasets import FilterIndex, KGDataset

Scorer = Callable[[torch.Tensor], torch.Tensor]
TIE_POLICIES = ("pessimistic", "optimistic", "realistic")
HITS_AT = (1, 3, 10)


@torch.no_grad()
def filtered_ranks(
    scorer: Scorer,
    queries: torch.Tensor,
    filters: FilterIndex,
    tie_policy: str = "pessimistic",
    batch_size: int = 250,
) -> torch.Tensor:
    """Filtered rank (n,) float of ``queries[:, 2]`` among all entities for each query row.

    The scorer's output is consumed (modified in place); it must return a fresh tensor. Each
    query's own triple must be among its answers in ``filters`` (true for a dataset's splits,
    whose filter index covers train ∪ valid ∪ test).

    Known answers of the query (from ``filters``) other than the target are ignored. Ties with
    the target count against it under ``pessimistic`` (kbc, the papers' numbers), for it under
    ``optimistic``, and half-way under ``realistic`` (the mean of the two, i.e. the expected rank
    under random tie-breaking).
    """
    if tie_policy not in TIE_POLICIES:
        raise ValueError(f"unknown tie policy {tie_policy!r}; choose one of {TIE_POLICIES}")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    ranks = torch.empty(len(queries), dtype=torch.float64)
    need_ge = tie_policy != "optimistic"
    need_gt = tie_policy != "pessimistic"
    for start in range(0, len(queries), batch_size):
        batch = queries[start : start + batch_size]
        scores = scorer(batch)
        target = batch[:, 2].to(scores.device)
        target_score = scores.gather(1, target.unsqueeze(1))
        rows, cols = filters.answers(batch)
        rows, cols = rows.to(scores.device), cols.to(scores.device)
        answer_diff = scores[rows, cols] - target_score[rows, 0]  # exactly 0 for the target itself
        n, n_entities = scores.shape
        # In place: s - s_t < 0 iff s < s_t (IEEE), and summing floats is several times faster than
        # summing a fresh bool matrix. Counting the complement makes NaN scores count against the
        # target (a diverged model ranks last, never first).
        diff = scores.sub_(target_score)
        ge = gt = None
        if need_gt:  # entities not at most as good as the target, minus the known answers among them
            gt = n_entities + 1 - (diff <= 0).sum(1) - torch.bincount(rows[~(answer_diff <= 0)], minlength=n)
        if need_ge:  # not worse than the target: known answers (target included) removed, target put back
            ge = n_entities + 1 - diff.lt_(0).sum(1) - torch.bincount(rows[~(answer_diff < 0)], minlength=n)
        if tie_policy == "pessimistic":
            rank = ge.double()
        elif tie_policy == "optimistic":
            rank = gt.double()
        else:
            rank = (ge.double() + gt.double()) / 2
        ranks[start : start + n] = rank.cpu()
    return ranks


def metrics_from_ranks(ranks: torch.Tensor) -> dict[str, float]:
    """MRR, MR and Hits@{1,3,10} of a rank vector (empty input gives NaN)."""
    ranks = ranks.double()
    if ranks.numel() == 0:
        return {"MRR": float("nan"), "MR": float("nan"), **{f"H@{k}": float("nan") for k in HITS_AT}}
    out = {"MRR": float((1.0 / ranks).mean()), "MR": float(ranks.mean())}
    out.update({f"H@{k}": float((ranks <= k).double().mean()) for k in HITS_AT})
    return out


def two_direction_metrics(tail_ranks: torch.Tensor, head_ranks: torch.Tensor) -> dict[str, float]:
    """kbc's aggregation: each metric is the mean of its tail-query and head-query values."""
    tail, head = metrics_from_ranks(tail_ranks), metrics_from_ranks(head_ranks)
    return {k: (tail[k] + head[k]) / 2 for k in tail}


def evaluate(
    scorer: Scorer,
    dataset: KGDataset,
    split: str = "test",
    tie_policy: str = "pessimistic",
    batch_size: int = 250,
    subset: torch.Tensor | None = None,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """Filtered metrics of ``scorer`` on a split (optionally a boolean ``subset`` of its triples)."""
    return evaluation_report(scorer, dataset, split, tie_policy, batch_size, subsets={"all": subset}, device=device)[
        "all"
    ]


def evaluation_report(
    scorer: Scorer,
    dataset: KGDataset,
    split: str = "test",
    tie_policy: str = "pessimistic",
    batch_size: int = 250,
    subsets: dict[str, torch.Tensor | None] | None = None,
    per_relation: bool = False,
    device: torch.device | str | None = None,
) -> dict:
    """Rank a split once and report metrics overall, on named triple subsets and per relation.

    ``subsets`` maps a name to a boolean mask over the split's triples (``None`` = all).
    With ``per_relation`` the result has ``"per_relation"``: {relation name: metrics + count}.
    """
    triples = dataset.split(split)
    device = device or _device_of(scorer)
    queries = dataset.reciprocal(triples).to(device)
    ranks = filtered_ranks(scorer, queries, dataset.filters.to(device), tie_policy, batch_size)
    n = len(triples)
    tail, head = ranks[:n], ranks[n:]
    report: dict = {}
    for name, mask in (subsets or {"all": None}).items():
        if mask is None:
            report[name] = two_direction_metrics(tail, head)
        else:
            report[name] = two_direction_metrics(tail[mask], head[mask]) | {"triples": int(mask.sum())}
    if per_relation:
        report["per_relation"] = {}
        for rel in torch.unique(triples[:, 1]).tolist():
            mask = triples[:, 1] == rel
            report["per_relation"][dataset.relations[rel]] = two_direction_metrics(tail[mask], head[mask]) | {
                "triples": int(mask.sum())
            }
    return report


def _device_of(scorer: Scorer) -> torch.device:
    owner = getattr(scorer, "__self__", None)
    if isinstance(owner, torch.nn.Module):
        try:
            return next(owner.parameters()).device
        except StopIteration:
            pass
    return torch.device("cpu")
