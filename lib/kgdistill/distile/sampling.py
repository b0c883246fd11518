"""Negative sampling: corrupt the head or the tail of each positive with another entity."""
from __future__ import annotations

import torch


def corrupt(triples: torch.Tensor, k: int, n_entities: int, generator: torch.Generator) -> torch.Tensor:
    """k negatives per positive: (B, 3) int64 -> (B, k, 3) int64.

    Each negative replaces the head or the tail (probability ½ each) by an entity drawn uniformly
    among the *other* N − 1 entities (a random shift 1..N−1 modulo N), so a corrupted triple never
    equals its positive. Negatives are not filtered against the KG (as in TransE/RotatE code).
    Random numbers come from ``generator`` (CPU), which makes the stream resumable.
    """
    if n_entities < 2:
        raise ValueError("negative sampling needs at least 2 entities")
    b = len(triples)
    replace_head = torch.rand(b, k, generator=generator) < 0.5
    shift = torch.randint(1, n_entities, (b, k), generator=generator)
    neg = triples.cpu().unsqueeze(1).repeat(1, k, 1)
    column = torch.where(replace_head, 0, 2)
    original = neg.gather(2, column.unsqueeze(2)).squeeze(2)
    neg.scatter_(2, column.unsqueeze(2), ((original + shift) % n_entities).unsqueeze(2))
    return neg.to(triples.device)
