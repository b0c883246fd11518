"""MetaSD's meta-gradient (Eq. 4-6) on the chunked 1-vs-all path: no (B, N) matrix is ever held.

The same quantity as :meth:`kgdistill.metasd.metastep.MetaStep.meta_gradient` (tested equal within
1e-5 in fp32), computed in row chunks (:mod:`kgdistill.core.onevsall`):

1. Virtual-Train: ∇θ_S L_S(batch; θ_S, p_T) with p_T fixed, through
   :func:`~kgdistill.core.onevsall.mutual_distillation` (frozen side: the teacher), plus RP and the
   regularizer; θ' = θ_S − λ ∇ (masked like the student).
2. v = ∇θ' CE(S'(quiz)) through :func:`~kgdistill.core.onevsall.softmax_cross_entropy` (one quiz
   batch, or all of Q in chunks: the mean of chunk means, as the official code).
3. Per chunk of batch rows: the teacher's scores and p_T, the student's logit tangent
   u = J v = q̇ Cᵀ + q Ċᵀ, the closed-form gradient of the teacher's logits
   G = λ(1 − α)/B · p_T ⊙ (u − ⟨p_T, u⟩) and its products with the teacher's operands; one
   backward pass maps them onto the teacher's tables.

With ``precision: bf16`` every score product runs in bf16 (fp32 accumulation) as in the actual
step, through :class:`~kgdistill.core.onevsall.ScoreOperands`: shifted by the row's target value
(p_T's logits by the target score, u by its target entry: G does not change under a per-row
shift of u either), G formed in fp32 and rounded once. θ', v, G and the gradients stay fp32.

Only the default objective (``kl_mode: target_first``, temperature 1, ``loss_weighting:
alpha_beta``) and ``meta_order: sequential`` have this path (the config refuses the others).
"""
from __future__ import annotations

import torch
from torch.func import jvp

from ..core.chunk_kernels import fused_teacher_logit_chunk
from ..core.onevsall import ScoreOperands, chunk_rows_for, mutual_distillation, softmax_cross_entropy
from .objective import _rp_and_penalty, product_dtype


def chunked_meta_gradient(learner, batch: torch.Tensor, quiz: torch.Tensor) -> tuple[torch.Tensor, list]:
    """``(quiz loss, gradients for the teacher's parameters)`` of one meta step of ``learner`` (a
    :class:`~kgdistill.metasd.distillation.DistillationLearner` with a meta method)."""
    c, teacher, student = learner.config, learner.modules["teacher"], learner.student
    product = product_dtype(c, batch.device)
    rows_weight = (lambda t: learner.class_weights[t]) if learner.class_weights is not None else (lambda t: None)
    with learner.timed("virtual"):
        entity, relation = student.tables(masked=learner.pruned)
        theta_s = {"entity": entity.detach().requires_grad_(), "relation": relation.detach().requires_grad_()}
        masks = {"entity": student.entity_mask, "relation": student.relation_mask} if learner.pruned else None
        t_query, t_candidates = teacher.score_inputs(batch)[:2]  # graph kept for the outer gradient
        s_query, s_candidates, s_pair, s_relations, s_factors = student.score_inputs(
            batch, tables=(theta_s["entity"], theta_s["relation"]))
        targets = batch[:, 2]
        loss_s, _ = mutual_distillation(
            (s_query, s_candidates), (t_query.detach(), t_candidates.detach()), targets, c.alpha, c.beta,
            train_teacher=False, row_weights=rows_weight(targets), chunk_rows=c.chunk_rows, product_dtype=product)
        loss_s = loss_s + _rp_and_penalty(s_pair, s_relations, s_factors, batch, c, product, c.alpha)
        grads = learner._masked(dict(zip(theta_s, torch.autograd.grad(loss_s, list(theta_s.values())))), masks)
        theta_virtual = {k: (theta_s[k] - c.virtual_lr * grads[k]).detach().requires_grad_() for k in theta_s}
        del grads
    with learner.timed("meta"):
        quiz_loss, v = _quiz_direction(learner, theta_virtual, quiz, masks, rows_weight, product)
        del theta_virtual
        grad_q, grad_c = _teacher_logit_products(learner, batch, theta_s, v, t_query.detach(),
                                                 t_candidates.detach(), product)
        meta_grads = torch.autograd.grad((t_query, t_candidates), list(teacher.parameters()), (grad_q, grad_c),
                                         allow_unused=True)
    return quiz_loss.detach(), list(meta_grads)


def _quiz_direction(learner, theta_virtual: dict, quiz: torch.Tensor, masks: dict | None, rows_weight,
                    product: torch.dtype):
    """v = ∇θ' CE(S'(quiz)) and the quiz loss (tail CE only, class-weighted as the learner's)."""
    size = len(quiz) if learner.config.quiz_per_meta_step == "batch" else learner.quiz_batch_size
    chunks = quiz.split(size)
    loss_sum, v = 0.0, None
    tables = (theta_virtual["entity"], theta_virtual["relation"])
    for chunk in chunks:
        query, candidates = learner.student.score_inputs(chunk, tables=tables)[:2]
        loss = softmax_cross_entropy(query, candidates, chunk[:, 2], rows_weight(chunk[:, 2]),
                                     chunk_rows=learner.config.chunk_rows, product_dtype=product)
        grads = torch.autograd.grad(loss, list(theta_virtual.values()))
        v = list(grads) if v is None else [a + b for a, b in zip(v, grads)]
        loss_sum = loss_sum + loss.detach()
    v = {k: g / len(chunks) for k, g in zip(theta_virtual, v)}
    return loss_sum / len(chunks), learner._masked(v, masks)


def _teacher_logit_products(learner, batch: torch.Tensor, theta_s: dict, v: dict, t_query: torch.Tensor,
                            t_candidates: torch.Tensor, product: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """∂/∂(teacher query, teacher candidates) of the meta objective: G Cᵀ_T-products of the
    closed-form teacher-logit gradient G, chunk by chunk (see the module docstring)."""
    c, student = learner.config, learner.student
    entity, relation = theta_s["entity"].detach(), theta_s["relation"].detach()
    h, r, targets = batch[:, 0], batch[:, 1], batch[:, 2]
    with torch.no_grad():
        query, d_query = jvp(student._query, (entity[h], relation[r]), (v["entity"][h], v["relation"][r]))
        candidates, d_candidates = student._candidates(entity), student._candidates(v["entity"])
    n = len(batch)
    scale = c.virtual_lr * (1 - c.alpha) / n
    chunk = c.chunk_rows or chunk_rows_for(max(candidates.shape[0], t_candidates.shape[0]), n, batch.device)
    teacher = ScoreOperands(t_query, t_candidates, targets, product)
    teacher.start(n)
    # u = q̇ Cᵀ + q Ċᵀ: fp32 as two products (the original arithmetic); low precision as one
    # shifted product of the concatenated operands [q̇, q] [C, Ċ]ᵀ
    tangent = ScoreOperands(torch.cat([d_query, query], 1), torch.cat([candidates, d_candidates], 1), targets,
                            product) if product != torch.float32 else None
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        if tangent is not None:  # one fused kernel: G = scale · p ⊙ (u − ⟨p, u⟩), rounded once
            teacher.accumulate(start, stop, fused_teacher_logit_chunk(teacher.scores(start, stop),
                                                                      tangent.scores(start, stop), scale))
            continue
        p_t = torch.softmax(teacher.scores(start, stop), dim=1, dtype=torch.float32)
        u = d_query[start:stop] @ candidates.T
        u.addmm_(query[start:stop], d_candidates.T)
        u.sub_((p_t * u).sum(1, keepdim=True)).mul_(p_t).mul_(scale)  # G = scale · p ⊙ (u − ⟨p, u⟩)
        teacher.accumulate(start, stop, u)
    teacher.finish(targets, None)
    return teacher.grad_q, teacher.grad_c
