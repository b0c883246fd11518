"""MetaSD's meta step (Algorithm 1, Eq. 4-6) as a mixin of :class:`kgdistill.metasd.distillation.DistillationLearner`.

Virtual-Train: θ'_S = θ_S − λ ∇_{θ_S} L_S(x; θ_S, θ_T) on a detached copy of the student's
(masked) tables, so θ'_S depends on θ_T only through the teacher distribution in the KL, as Eq. 4
reads. Meta-Train: ∇_{θ_T} CE(S'(quiz)) in closed form — one forward-mode product
(``torch.func.jvp``) and one backward pass through the teacher's logits, never a second-order graph
through the (B × N) score products — applied with its own Adagrad at rate μ. The quiz is one
random batch of Q, or (``quiz_per_meta_step: all``) all of Q in chunks, as the official code does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call, jvp

from .chunked_meta import chunked_meta_gradient
from .distill_losses import tempered_log_probs


class MetaStep:
    """The meta step's methods; the learner provides ``config``, ``modules``, ``student``,
    ``pruned``, ``quiz``, ``quiz_generator``, ``quiz_batch_size``, ``optimizers``, ``timed`` and
    the objectives (``terms``, ``student_objective``, ``teacher_objective``, ``target_log_p``)."""

    def sample_quiz(self) -> torch.Tensor:
        """A quiz batch drawn with replacement, or (``quiz_per_meta_step: all``) Q reshuffled."""
        if self.config.quiz_per_meta_step == "all":
            order = torch.randperm(len(self.quiz), generator=self.quiz_generator)
            return self.quiz[order.to(self.quiz.device)]
        idx = torch.randint(len(self.quiz), (self.quiz_batch_size,), generator=self.quiz_generator)
        return self.quiz[idx.to(self.quiz.device)]

    def apply_meta_gradient(self, meta_grads: list) -> None:
        teacher, optimizer = self.modules["teacher"], self.optimizers["meta"]
        for p, g in zip(teacher.parameters(), meta_grads):
            p.grad = g
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def meta_step(self, batch: torch.Tensor) -> torch.Tensor:
        """Virtual-Train (Eq. 4) then Meta-Train (Eq. 5–6) on a random quiz batch; returns the quiz loss."""
        with self.timed("meta"):
            quiz = self.sample_quiz()
        quiz_loss, meta_grads, _ = self.meta_gradient(batch, quiz)
        with self.timed("meta"):
            self.apply_meta_gradient(meta_grads)
        return quiz_loss

    def simultaneous_step(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """Meta and actual updates from one set of forward passes (``meta_order="simultaneous"``)."""
        with self.timed("meta"):
            quiz = self.sample_quiz()
        quiz_loss, meta_grads, (t_terms, s_terms, s_grads, loss_s) = self.meta_gradient(batch, quiz)
        with self.timed("actual"):
            teacher = self.modules["teacher"]
            # teacher side of Actual-Train at the same θ_T (its graph was kept by meta_gradient)
            loss_t = self.teacher_objective(t_terms, self.target_log_p(s_terms))
            t_grads = torch.autograd.grad(loss_t, list(teacher.parameters()))
        with self.timed("meta"):
            self.apply_meta_gradient(meta_grads)
        with self.timed("actual"):
            # student side: ∇θ_S L_S was computed for the virtual step; on the shared tables of a
            # pruned student it adds to the teacher's gradient, as in the sequential step
            student_params = list(self.student.parameters())
            optimizer = self.optimizers["actual"]
            optimizer.zero_grad(set_to_none=True)
            for p, g in zip(teacher.parameters(), t_grads):
                p.grad = g
            for p, g in zip(student_params, s_grads):
                p.grad = g if p.grad is None else p.grad + g
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return {"quiz": quiz_loss, "student": loss_s.detach(), "teacher": loss_t.detach()}

    def meta_gradient(self, batch: torch.Tensor, quiz: torch.Tensor) -> tuple[torch.Tensor, list, tuple]:
        """∇_{θ_T} CE(S'(quiz)) with θ'_S(θ_T) = θ_S − λ ∇_{θ_S} L_S(batch; θ_S, θ_T).

        Returns (quiz loss, gradients for the teacher's parameters, intermediate terms reused by
        the simultaneous step: teacher terms, student terms, ∇θ_S L_S, L_S).

        Only the KL term of L_S depends on θ_T, so with v = ∇_{θ'} CE(S'(quiz)) and the student's
        logits z_S(θ_S):  ∇_{θ_T} = −λ (1−α) ∇_{θ_T} ⟨∂KL/∂z_S, J_{z_S} v⟩.
        J v is one forward-mode product (``torch.func.jvp``) and the outer gradient back-propagates
        through the teacher's logits only, so no second-order graph through the (B × N) score
        products is ever built. This equals differentiating through the virtual step with
        autograd (the finite-difference test checks it) at a fraction of the cost.
        """
        with torch.autocast(self.device.type, enabled=False):  # the meta-gradient stays in fp32
            if self.config.one_vs_all == "chunked":  # the same gradient in row chunks
                quiz_loss, meta_grads = chunked_meta_gradient(self, batch, quiz)
                return quiz_loss, meta_grads, (None, None, None, None)
            return self._meta_gradient(batch, quiz)

    def _meta_gradient(self, batch: torch.Tensor, quiz: torch.Tensor) -> tuple[torch.Tensor, list, tuple]:
        c, teacher, student = self.config, self.modules["teacher"], self.student
        with self.timed("virtual"):
            entity, relation = student.tables(masked=self.pruned)
            # θ_S: a copy of the student's (masked) weights. Gradients are masked explicitly, which
            # keeps S' exactly as sparse as S without re-masking the tables in every forward.
            theta_s = {"entity": entity.detach().requires_grad_(), "relation": relation.detach().requires_grad_()}
            masks = {"entity": student.entity_mask, "relation": student.relation_mask} if self.pruned else None
            if c.meta_order == "simultaneous":  # the actual step reuses the teacher's terms
                t_terms = self.terms(teacher, batch)
                t_scores, t_log_p = t_terms.scores, self.target_log_p(t_terms)
            else:
                t_terms, t_scores = None, teacher.score_tails(batch)  # graph kept for the outer gradient
                with torch.no_grad():
                    t_log_p = tempered_log_probs(t_scores, c.temperature)
            student_terms = self.terms(student, batch, params=theta_s)
            loss_s = self.student_objective(student_terms, t_log_p, virtual=True)
            grads = self._masked(dict(zip(theta_s, torch.autograd.grad(loss_s, list(theta_s.values())))), masks)
            theta_virtual = {k: (theta_s[k] - c.virtual_lr * grads[k]).detach().requires_grad_() for k in theta_s}
            if c.meta_order != "simultaneous":  # only the simultaneous step reuses ∇θ_S L_S
                grads = None
        with self.timed("meta"):
            quiz_loss, v = self.quiz_direction(theta_virtual, quiz, masks)
            del theta_virtual
            u = self.logit_tangent(batch, {k: t.detach() for k, t in theta_s.items()}, v)
            grad_t_scores = self.meta_grad_of_teacher_logits(student_terms.scores.detach(), t_log_p, u)
            meta_grads = torch.autograd.grad(
                t_scores, list(teacher.parameters()), grad_t_scores, allow_unused=True, retain_graph=t_terms is not None
            )
        s_grads = list(grads.values()) if grads is not None else None
        return quiz_loss.detach(), list(meta_grads), (t_terms, student_terms, s_grads, loss_s)

    def quiz_direction(self, theta_virtual: dict, quiz: torch.Tensor, masks: dict | None) -> tuple[torch.Tensor, dict]:
        """v = ∇_{θ'} CE(S'(quiz)) and the quiz loss. ``quiz_per_meta_step: all`` (official) takes
        the mean of chunk means over Q in chunks of ``quiz_batch_size``; the meta-gradient is
        linear in v, so the mean of the chunks' v gives the mean of their meta-gradients."""
        size = len(quiz) if self.config.quiz_per_meta_step == "batch" else self.quiz_batch_size
        chunks = quiz.split(size)
        loss_sum, v = 0.0, None
        for chunk in chunks:
            scores = functional_call(self.student, theta_virtual, (chunk,))[0]
            loss = F.cross_entropy(scores, chunk[:, 2], weight=self.class_weights)
            grads = torch.autograd.grad(loss, list(theta_virtual.values()))
            v = list(grads) if v is None else [a + b for a, b in zip(v, grads)]
            loss_sum = loss_sum + loss.detach()
        v = {k: g / len(chunks) for k, g in zip(theta_virtual, v)} if len(chunks) > 1 else dict(zip(theta_virtual, v))
        return loss_sum / len(chunks), self._masked(v, masks)

    @staticmethod
    def _masked(tensors: dict, masks: dict | None) -> dict:
        """Zero the pruned entries (in place) of per-table tensors; no-op without masks."""
        if masks is not None:
            for name, tensor in tensors.items():
                tensor.mul_(masks[name])
        return tensors

    def logit_tangent(self, batch: torch.Tensor, theta: dict, direction: dict) -> torch.Tensor:
        """J v: change (B, N) of the student's tail logits at ``theta`` along ``direction``.

        The logits are q(h, r) · c(E)ᵀ with c linear, so J v = q̇ · c(E)ᵀ + q · c(Ė)ᵀ: two products,
        the primal logits being known already. Both ``theta`` and ``direction`` are masked when the
        student is pruned (the direction is a gradient through the mask), so no mask is re-applied.
        """
        student = self.student
        entity, relation = theta["entity"], theta["relation"]
        d_entity, d_relation = direction["entity"], direction["relation"]
        h, r = batch[:, 0], batch[:, 1]
        q, dq = jvp(student._query, (entity[h], relation[r]), (d_entity[h], d_relation[r]))
        return dq @ student._candidates(entity).T + q @ student._candidates(d_entity).T

    def meta_grad_of_teacher_logits(
        self, s_scores: torch.Tensor, t_log_p: torch.Tensor, u: torch.Tensor
    ) -> torch.Tensor:
        """∂/∂z_T of −λ·w·⟨∂KL/∂z_S, u⟩ in closed form, (B, N); z = logits, T = temperature,
        w = 1−α (``loss_weighting: unit``: 1), KL × T² unless ``kl_temperature_squared`` is off.

        With the term g(p) = p ⊙ (u − ⟨p, u⟩):  target_first, KL(p_T ‖ p_S): λw/B · g(p_T);
        paper, KL(p_S ‖ p_T): λw/B · g(p_S) (its z_T-dependent part is −(T/B)⟨w, log p_T⟩ with
        w = g(p_S), rows summing to 0); official, 3·KL(p_T ‖ p_S') + KL(p_S' ‖ p_T): the same mix
        of the two. Without T² every term is divided by T². Checked against finite differences.
        """
        c = self.config
        weight = 1.0 if c.loss_weighting == "unit" else 1 - c.alpha
        scale = c.virtual_lr * weight / len(u) * (1.0 if c.kl_temperature_squared else 1.0 / c.temperature**2)

        def term(p: torch.Tensor) -> torch.Tensor:
            w = p * u
            w -= p * w.sum(-1, keepdim=True)
            return w

        if c.kl_mode == "target_first":
            out = term(t_log_p.exp())
        elif c.kl_mode == "paper":
            out = term(tempered_log_probs(s_scores, c.temperature).exp())
        else:
            out = 3.0 * term(t_log_p.exp()) + term(tempered_log_probs(s_scores, c.temperature).exp())
        return out.mul_(scale)
