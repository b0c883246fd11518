"""Regularizers on the per-batch factors ``(h, r, t)`` returned by a model's forward pass.

For CP and ComplEx, factors are (B, k) tensors (ComplEx: element-wise moduli, as in kbc); for
RESCAL ``r`` is the batch of relation matrices (B, k, k). All values are sums divided by the
batch size B, as in kbc/DURA.
"""
from __future__ import annotations

import torch

from .models import Factors


def n3(factors: Factors, weight: float) -> torch.Tensor:
    """Nuclear 3-norm (Lacroix et al. 2018): weight · Σ |f|³ / B over the three factors."""
    h, r, t = factors
    return weight * sum(torch.sum(torch.abs(f) ** 3) for f in (h, r, t)) / h.shape[0]


def _products(h: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The 'h ∘ r' and 'r ∘ t' terms of DURA: element-wise for CP/ComplEx, M_rᵀh and M_r t for RESCAL."""
    if r.dim() == 3:
        return torch.bmm(r.transpose(1, 2), h.unsqueeze(-1)), torch.bmm(r, t.unsqueeze(-1))
    return h * r, t * r


def dura(factors: Factors, weight: float, entity_coef: float = 1.0, product_coef: float = 1.0) -> torch.Tensor:
    """DURA (Zhang et al. 2020): weight · [e·Σ(h² + t²) + p·Σ((h∘r)² + (r∘t)²)] / B.

    ``e = p = 1`` is DURA; ``e = 0.5, p = 1.5`` is the weighted DURA of the DURA/MetaSD code.
    RESCAL's products are M_rᵀh and M_r t (DURA_RESCAL).
    """
    h, r, t = factors
    hr, rt = _products(h, r, t)
    norm = entity_coef * torch.sum(h**2 + t**2) + product_coef * torch.sum(hr**2 + rt**2)
    return weight * norm / h.shape[0]


REGULARIZERS = {
    "none": lambda factors, weight: torch.zeros((), device=factors[0].device),
    "N3": n3,
    "DURA": dura,
    "DURA_W": lambda factors, weight: dura(factors, weight, entity_coef=0.5, product_coef=1.5),
}


def regularize(name: str, factors: Factors, weight: float) -> torch.Tensor:
    """Apply the regularizer ``name`` (one of :data:`REGULARIZERS`)."""
    if name not in REGULARIZERS:
        raise ValueError(f"unknown regularizer {name!r}; choose one of {sorted(REGULARIZERS)}")
    return REGULARIZERS[name](factors, weight)
