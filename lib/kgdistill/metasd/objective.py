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
from ..core.onevsall import mutual_distillation, softmax_cross_entropy
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
    product = product_dtype(config, batch.device)
    targets = batch[:, 2]
    rows = class_weights[targets] if class_weights is not None else None
    fit = softmax_cross_entropy(query, candidates, targets, rows, chunk_rows=config.chunk_rows, product_dtype=product)
    return fit + _rp_and_penalty(pair, relations, factors, batch, config, product, 1.0)


def product_dtype(config: RunConfig, device: torch.device) -> torch.dtype:
    """The dtype of the chunked step's score products: bf16 when the run's precision resolves to it."""
    return torch.bfloat16 if resolve_precision(config.precision, device.type) == "bf16" else torch.float32


def _rp_and_penalty(pair, relations, factors, batch, config: RunConfig, product: torch.dtype, rp_scale: float):
    """``rp_scale``·RP·relation CE (unweighted, as :func:`supervised_loss`) + the regularizer."""
    out = regularize(config.regularizer, factors, config.reg_weight)
    if config.rp_weight > 0:
        out = out + rp_scale * config.rp_weight * softmax_cross_entropy(
            pair, relations, batch[:, 1], chunk_rows=config.chunk_rows, product_dtype=product)
    return out


def chunked_distillation_losses(
    student: KBCModel,
    teacher: KBCModel,
    batch: torch.Tensor,
    config: RunConfig,
    class_weights: torch.Tensor | None = None,
    pruned: bool = False,
    mutual: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Actual-Train's L_S and L_T (None unless ``mutual``) in row chunks
    (:func:`kgdistill.core.onevsall.mutual_distillation`): the fused objective of
    :class:`~kgdistill.metasd.distillation.DistillationLearner` (``kl_mode: target_first``,
    temperature 1, ``loss_weighting: alpha_beta``): w·(CE + RP·relation CE) + (1 − w)·KL + reg
    with w = α for the student (``pruned``: the masked view), β for the teacher."""
    with torch.set_grad_enabled(mutual and torch.is_grad_enabled()):
        t_query, t_candidates, t_pair, t_relations, t_factors = teacher.score_inputs(batch)
    s_query, s_candidates, s_pair, s_relations, s_factors = student.score_inputs(batch, masked=pruned)
    product = product_dtype(config, batch.device)
    targets = batch[:, 2]
    rows = class_weights[targets] if class_weights is not None else None
    loss_s, loss_t = mutual_distillation(
        (s_query, s_candidates), (t_query, t_candidates), targets, config.alpha, config.beta, train_teacher=mutual,
        row_weights=rows, chunk_rows=config.chunk_rows, product_dtype=product)
    loss_s = loss_s + _rp_and_penalty(s_pair, s_relations, s_factors, batch, config, product, config.alpha)
    if not mutual:
        return loss_s, None
    return loss_s, loss_t + _rp_and_penalty(t_pair, t_relations, t_factors, batch, config, product, config.beta)


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
