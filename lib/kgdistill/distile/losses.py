"""Hard- and soft-label losses of DistilE (Table 1, Eqs. 1/3/4/6/7/8/9/10).

All functions take the scores of a batch of B positives, ``pos`` (B,), and of their k
negatives, ``neg`` (B, k). Normalisation (the paper writes sums; these are means, so that
the loss does not scale with B or k and α mixes terms of the same size):

* margin hard loss (Eq. 1/3): mean over the B·k (positive, negative) pairs of
  ``[γ − s_pos + s_neg]₊`` (scores are negated distances, so ``f = −s``);
* margin soft loss (Eq. 4/9): mean over the B·(1 + k) triples of ``|s_T − s_S|``;
* logistic losses (Eq. 6/7/8/10): binary cross-entropy of ``σ(s)`` against a target (1/0 for the
  hard loss, the other model's ``σ(s)`` for the soft loss). ``weighting='balanced'`` (RotatE's
  recipe) averages ``½·(mean over positives + mean over negatives)``; ``'sum'`` weighs each
  triple of G ∪ G⁻ equally as Eq. 6 is written (per positive: its term + the sum over its k
  negatives, then the mean over positives).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

WEIGHTINGS = ("balanced", "sum")


def _combine(pos_terms: torch.Tensor, neg_terms: torch.Tensor, weighting: str) -> torch.Tensor:
    if weighting == "balanced":
        return 0.5 * (pos_terms.mean() + neg_terms.mean())
    if weighting == "sum":
        return (pos_terms + neg_terms.sum(1)).mean()
    raise ValueError(f"unknown weighting {weighting!r}; choose one of {WEIGHTINGS}")


def margin_hard(pos: torch.Tensor, neg: torch.Tensor, margin: float) -> torch.Tensor:
    """Eq. 1/3: mean over pairs of ``[margin − pos + neg]₊``."""
    return F.relu(margin - pos.unsqueeze(1) + neg).mean()


def margin_soft(
    pos: torch.Tensor, neg: torch.Tensor, target_pos: torch.Tensor, target_neg: torch.Tensor
) -> torch.Tensor:
    """Eq. 4/9: mean over the positive and its negatives of ``|target − score|``."""
    diffs = torch.cat([(target_pos - pos).abs().unsqueeze(1), (target_neg - neg).abs()], 1)
    return diffs.mean()


def logistic_hard(pos: torch.Tensor, neg: torch.Tensor, weighting: str = "balanced") -> torch.Tensor:
    """Eq. 6/7: cross-entropy of σ(score) with label 1 for positives and 0 for negatives."""
    return _combine(-F.logsigmoid(pos), -F.logsigmoid(-neg), weighting)


def logistic_soft(
    pos: torch.Tensor,
    neg: torch.Tensor,
    target_pos: torch.Tensor,
    target_neg: torch.Tensor,
    weighting: str = "balanced",
) -> torch.Tensor:
    """Eq. 8/10: ``−(p_T log p_S + (1 − p_T) log(1 − p_S))`` with ``p = σ(score)``; targets are logits."""
    pos_terms = F.binary_cross_entropy_with_logits(pos, torch.sigmoid(target_pos), reduction="none")
    neg_terms = F.binary_cross_entropy_with_logits(neg, torch.sigmoid(target_neg), reduction="none")
    return _combine(pos_terms, neg_terms, weighting)


def hard_loss(family: str, pos: torch.Tensor, neg: torch.Tensor, margin: float, weighting: str) -> torch.Tensor:
    """The backbone's own loss (hard labels) for a loss family ``'margin'`` or ``'logistic'``."""
    if family == "margin":
        return margin_hard(pos, neg, margin)
    return logistic_hard(pos, neg, weighting)


def soft_loss(
    family: str,
    pos: torch.Tensor,
    neg: torch.Tensor,
    target_pos: torch.Tensor,
    target_neg: torch.Tensor,
    weighting: str,
) -> torch.Tensor:
    """Soft-label loss of a learner's scores against the other model's (pass them detached)."""
    if family == "margin":
        return margin_soft(pos, neg, target_pos, target_neg)
    return logistic_soft(pos, neg, target_pos, target_neg, weighting)
