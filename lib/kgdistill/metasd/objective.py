"""The 1-vs-all supervised objective of the MetaSD family: the terms of one model on a batch.

:func:`supervised_loss` returns a :class:`Losses` (fit, penalty, scores, log-probabilities,
targets) that the baseline learner sums and the distillation losses
(:mod:`kgdistill.metasd.distill_losses`) combine with their KL terms.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..core.models import KBCModel
from ..core.onevsall import softmax_cross_entropy
from ..core.regularizers import regularize
from ..protocol.configbase import resolve_precision
from .config import RunConfig

LOW_PRECISION = (torch.bfloat16, torch.float16)


class Losses(NamedTuple):
    """Per-batch terms of one model: ``fit`` (tail CE + RP·relation CE; RP only when the caller
    folds the tail CE into its own loss), ``penalty`` (regularizer), ``scores`` (B, N) tail
    logits, their ``log_probs`` (log-softmax; detached when the tail CE is left to the caller)
    and the tail ``targets`` (B,)."""

    fit: torch.Tensor
    penalty: torch.Tensor
    scores: torch.Tensor
    log_probs: torch.Tensor
    targets: torch.Tensor


def supervised_loss(
    model: KBCModel,
    batch: torch.Tensor,
    config: RunConfig,
    class_weights: torch.Tensor | None = None,
    masked: bool = False,
    params: dict[str, torch.Tensor] | None = None,
    tail_ce: bool = True,
) -> Losses:
    """Supervised terms of a batch of reciprocal triples (B, 3); ``params`` substitutes the model's
    tables (``torch.func.functional_call``). With ``tail_ce=False`` the tail cross-entropy is
    left out of ``fit`` (a distillation loss computes it together with its KL term)."""
    kwargs = {"masked": masked, "relation_prediction": config.rp_weight > 0}
    if params is None:
        tails, relations, factors = model(batch, **kwargs)
    else:
        tails, relations, factors = torch.func.functional_call(model, params, (batch,), kwargs)
    targets = batch[:, 2]
    if tails.dtype in LOW_PRECISION:  # bf16 autocast: the products are bf16, the softmax and losses are not
        tails = tails.float()
        relations = relations.float() if relations is not None else None
    if tail_ce:
        log_probs = F.log_softmax(tails, dim=-1)
        fit = F.nll_loss(log_probs, targets, weight=class_weights)  # = cross-entropy of the tails
    else:
        with torch.no_grad():
            log_probs = F.log_softmax(tails, dim=-1)
        fit = tails.new_zeros(())
    if config.rp_weight > 0:
        fit = fit + config.rp_weight * F.cross_entropy(relations, batch[:, 1])
    return Losses(fit, regularize(config.regularizer, factors, config.reg_weight), tails, log_probs, targets)


def fit_loss(
    model: KBCModel,
    batch: torch.Tensor,
    config: RunConfig,
    class_weights: torch.Tensor | None = None,
    masked: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Baseline objective: tail CE + RP·relation CE + regularizer. Returns ``(loss, tail_scores)``."""
    losses = supervised_loss(model, batch, config, class_weights, masked)
    return losses.fit + losses.penalty, losses.scores


def chunked_fit_loss(
    model: KBCModel,
    batch: torch.Tensor,
    config: RunConfig,
    class_weights: torch.Tensor | None = None,
    masked: bool = False,
) -> torch.Tensor:
    """:func:`fit_loss`'s loss (tail CE + RP·relation CE + regularizer) without ever holding the
    batch's (B, N) scores: both cross-entropies go through
    :func:`kgdistill.core.onevsall.softmax_cross_entropy` in row chunks (``config.chunk_rows``),
    with bf16 score products when the run's precision resolves to bf16."""
    query, candidates, pair, relations, factors = model.score_inputs(batch, masked=masked)
    bf16 = resolve_precision(config.precision, batch.device.type) == "bf16"
    product = torch.bfloat16 if bf16 else torch.float32
    targets = batch[:, 2]
    rows = class_weights[targets] if class_weights is not None else None
    fit = softmax_cross_entropy(query, candidates, targets, rows, chunk_rows=config.chunk_rows, product_dtype=product)
    if config.rp_weight > 0:
        fit = fit + config.rp_weight * softmax_cross_entropy(
            pair, relations, batch[:, 1], chunk_rows=config.chunk_rows, product_dtype=product)
    return fit + regularize(config.regularizer, factors, config.reg_weight)


def baseline_loss(
    model: KBCModel,
    batch: torch.Tensor,
    config: RunConfig,
    class_weights: torch.Tensor | None = None,
    masked: bool = False,
) -> torch.Tensor:
    """The baseline objective through the run's ``one_vs_all`` path: :func:`fit_loss`
    ("autograd") or :func:`chunked_fit_loss` ("chunked")."""
    if config.one_vs_all == "chunked":
        return chunked_fit_loss(model, batch, config, class_weights, masked)
    return fit_loss(model, batch, config, class_weights, masked)[0]
