"""The distillation losses of the MetaSD family, as functions of logits (B, N) over entities.

* :func:`tempered_log_probs`: log softmax(z / T);
* :func:`distillation_kl`: the KL term in each direction the study compares (``kl_mode``:
  ``target_first`` as in KD/DML, ``paper`` as Eq. 2/9 are written, ``official`` the official
  code's 3:1 mix of both directions), with or without the T² factor;
* :func:`distilled_cross_entropy`: a·CE + b·KL(p_o ‖ p) fused, with its gradient in closed form.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .objective import Losses


def tempered_log_probs(scores: torch.Tensor, temperature: float, log_probs: torch.Tensor | None = None) -> torch.Tensor:
    """log softmax(scores / temperature) over entities; reuses ``log_probs`` (T = 1) when given."""
    if temperature == 1.0:
        return log_probs if log_probs is not None else F.log_softmax(scores, dim=-1)
    return F.log_softmax(scores / temperature, dim=-1)


def kl(p_log: torch.Tensor, q_log: torch.Tensor) -> torch.Tensor:
    """Batch-mean KL(p ‖ q) of two log-distributions (B, N)."""
    return F.kl_div(q_log, p_log, reduction="batchmean", log_target=True)


def distillation_kl(
    learner_log_p: torch.Tensor,
    other_log_p: torch.Tensor,
    temperature: float,
    mode: str,
    learner_is_student: bool,
    virtual: bool = False,
    squared: bool = True,
) -> torch.Tensor:
    """Batch-mean KL between two tempered log-distributions (B, N), × temperature² when ``squared``
    (Hinton et al.; the official code leaves it out).

    ``mode="target_first"``: KL(other ‖ learner), the usual distillation direction (the learner
    matches the other model's distribution). ``mode="paper"``: KL(S ‖ T) whichever model learns,
    as Eq. 2 and Eq. 9 are written. ``mode="official"``: the official code's mix
    3·KL(first ‖ second) + KL(second ‖ first), where *first* is the learner in Actual-Train and the
    teacher in the virtual step (``virtual=True``; the learner is then the virtual student), the
    argument order of its call sites. Gradients flow into whichever inputs require them; callers
    detach the side that must not learn.
    """
    if mode == "official":
        first, second = (other_log_p, learner_log_p) if virtual else (learner_log_p, other_log_p)
        value = 3.0 * kl(first, second) + kl(second, first)
    elif mode == "target_first" or not learner_is_student:
        # KL(p_o ‖ p_l); in "paper" mode the teacher's KL(S ‖ T) is this too (other = S)
        value = kl(other_log_p, learner_log_p)
    else:  # paper mode, student learning: KL(p_S ‖ p_T) with the student first
        value = kl(learner_log_p, other_log_p)
    return value * temperature**2 if squared else value


class _DistilledCrossEntropy(torch.autograd.Function):
    """a·CE(z, y) + b·KL(p_o ‖ softmax(z)) from precomputed log-softmax, gradient in closed form.

    ∂/∂z = a·c_i (p − e_y) + (b/B)(p − p_o), with c_i the weight of row i in the (class-weighted)
    mean. Three passes over the (B, N) matrix backward instead of autograd's chain through
    log-softmax, nll and kl_div.
    """

    @staticmethod
    def forward(ctx, logits, log_p, targets, other_log_p, a, b, row_weights):
        n = log_p.shape[0]
        rows = torch.arange(n, device=log_p.device)
        coef = (
            row_weights / row_weights.sum()
            if row_weights is not None
            else torch.full((n,), 1.0 / n, device=log_p.device, dtype=log_p.dtype)
        )
        ce = -(log_p[rows, targets] * coef).sum()
        p_other = other_log_p.exp()
        kl = (p_other * (other_log_p - log_p)).sum() / n
        ctx.save_for_backward(log_p, targets, p_other, coef)
        ctx.a, ctx.b = a, b
        return a * ce + b * kl

    @staticmethod
    def backward(ctx, grad_out):
        log_p, targets, p_other, coef = ctx.saved_tensors
        a, b, n = ctx.a, ctx.b, log_p.shape[0]
        grad = log_p.exp().mul_(((a * coef + b / n) * grad_out).unsqueeze(1))
        grad.addcmul_(p_other, grad_out * (-b / n))
        grad[torch.arange(n, device=grad.device), targets] -= a * coef * grad_out
        return grad, None, None, None, None, None, None


def distilled_cross_entropy(
    terms: Losses, other_log_p: torch.Tensor, weight: float, class_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """weight·CE(terms) + (1 − weight)·KL(other ‖ terms' distribution) at temperature 1.

    Equals the unfused ``weight·F.cross_entropy + (1−weight)·distillation_kl(.., "target_first")``
    (tested); ``terms`` must come from ``supervised_loss(..., tail_ce=False)``.
    """
    row_weights = class_weights[terms.targets] if class_weights is not None else None
    return _DistilledCrossEntropy.apply(
        terms.scores, terms.log_probs, terms.targets, other_log_p, weight, 1.0 - weight, row_weights
    )
