"""Global magnitude pruning (Han et al. 2015; Zhu & Gupta 2017) as masks, never in place."""
from __future__ import annotations

import math

import torch


def kept_count(total: int, gamma: float) -> int:
    """Weights kept at pruning rate γ: ⌈(1 − γ)·P⌉."""
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"pruning rate gamma must be in [0, 1), got {gamma}")
    # round first so that e.g. (1 - 0.9) * 1000 = 100.00000000000001 does not become 101
    return math.ceil(round((1.0 - gamma) * total, 9))


@torch.no_grad()
def magnitude_mask(tables: dict[str, torch.Tensor], gamma: float) -> dict[str, torch.Tensor]:
    """Boolean masks keeping exactly ⌈(1 − γ)·P⌉ largest-|w| weights over all ``tables`` jointly.

    P is the total number of elements; ties at the threshold are broken by position (topk), so
    the count is exact. Masks have the shapes of the tables and live on their device.
    """
    names = list(tables)
    flat = torch.cat([tables[n].detach().abs().reshape(-1) for n in names])
    keep = kept_count(flat.numel(), gamma)
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    mask[torch.topk(flat, keep, sorted=False).indices] = True
    out, start = {}, 0
    for n in names:
        size = tables[n].numel()
        out[n] = mask[start : start + size].view(tables[n].shape)
        start += size
    return out


def mask_density(masks: dict[str, torch.Tensor]) -> float:
    """Fraction of weights kept by ``masks``."""
    kept = sum(int(m.count_nonzero()) for m in masks.values())
    return kept / sum(m.numel() for m in masks.values())
