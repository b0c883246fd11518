"""Distillation methods on one trainer: MetaSD (Algorithm 1), its ablations, KD and DML.

Which parts run is set by ``RunConfig.method`` through :data:`kgdistill.config.METHODS`:

* student ``"pruned"``: S is the source model T seen through a global magnitude mask at rate γ
  (same parameters, ``masked=True``), the mask recomputed every epoch (or step);
  ``"separate"``: S is its own small model whose dense size matches the pruned one.
* teacher ``"mutual"``: T is trained on L_T = β·CE(T) + (1−β)·KL (Eq. 8–11) next to S;
  ``"frozen"``: T is a finished baseline run (KD) and never changes.
* ``meta``: MetaSD's Virtual-Train / Meta-Train before each Actual-Train (Eq. 4–6).

Losses. Cross-entropy terms are the full 1-vs-all objective of the baseline (tail CE plus the RP
relation CE when ``rp_weight`` > 0); the regularizer is added unweighted by α/β so that α = 1
recovers the baseline. L_S = α·CE(S) + (1−α)·KL + reg(S), L_T = β·CE(T) + (1−β)·KL + reg(T).
The KL is between softmax(scores / temperature) over all entities, scaled by temperature²
(Hinton et al.); its direction follows ``kl_mode`` (see :func:`distillation_kl`).

Meta step. θ'_S = θ_S − λ ∇_{θ_S} L_S(x; θ_S, θ_T) is built with ``torch.func.grad`` on a detached
copy of the student's (masked) tables, so θ'_S depends on θ_T only through the teacher
distribution in the KL, exactly as Eq. 4 reads; CE(S'(q)) on one quiz batch q is then
differentiated with respect to θ_T (a Hessian-vector product through that graph) and applied with
its own Adagrad at learning rate μ. The quiz set Q is a fixed random ``quiz_fraction`` of the
(reciprocal) training triples drawn once with the run's seed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call, jvp

from .config import RunConfig
from .datasets import KGDataset
from .evaluation import Scorer
from .models import KBCModel, build_model, load_module_state, rank_for_budget
from .pruning import kept_count, magnitude_mask, mask_density
from .training import Learner, Losses, supervised_loss


def tempered_log_probs(scores: torch.Tensor, temperature: float, log_probs: torch.Tensor | None = None) -> torch.Tensor:
    """log softmax(scores / temperature) over entities; reuses ``log_probs`` (T = 1) when given."""
    if temperature == 1.0:
        return log_probs if log_probs is not None else F.log_softmax(scores, dim=-1)
    return F.log_softmax(scores / temperature, dim=-1)


def distillation_kl(
    learner_log_p: torch.Tensor, other_log_p: torch.Tensor, temperature: float, mode: str, learner_is_student: bool
) -> torch.Tensor:
    """Batch-mean KL between two tempered log-distributions (B, N), × temperature² (Hinton et al.).

    ``mode="target_first"``: KL(other ‖ learner), the usual distillation direction (the learner
    matches the other model's distribution). ``mode="paper"``: KL(S ‖ T) whichever model learns,
    as Eq. 2 and Eq. 9 are written. Gradients flow into whichever inputs require them; callers
    detach the side that must not learn.
    """
    if mode == "target_first" or not learner_is_student:
        # KL(p_o ‖ p_l); in "paper" mode the teacher's KL(S ‖ T) is this too (other = S)
        kl = F.kl_div(learner_log_p, other_log_p, reduction="batchmean", log_target=True)
    else:  # paper mode, student learning: KL(p_S ‖ p_T) with the student first
        kl = F.kl_div(other_log_p, learner_log_p, reduction="batchmean", log_target=True)
    return kl * temperature**2


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
        coef = row_weights / row_weights.sum() if row_weights is not None else torch.full((n,), 1.0 / n, device=log_p.device, dtype=log_p.dtype)
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


class DistillationLearner(Learner):
    """Teacher/student training with the switches of :data:`kgdistill.config.METHODS`."""

    selected = "student"

    def __init__(self, config: RunConfig, dataset: KGDataset, device: torch.device, teacher_state: dict | None = None):
        """``teacher_state``: for a frozen teacher (KD), the trained weights of the finished
        baseline run ``config.teacher`` — loaded by the runner (:func:`kgdistill.runner.load_best`)."""
        super().__init__(config, dataset, device)
        switches = config.switches
        self.pruned = switches["student"] == "pruned"
        self.teacher_mode = switches["teacher"]
        self.meta = bool(switches["meta"])
        if self.teacher_mode == "frozen":
            if teacher_state is None:
                raise ValueError("config field 'teacher': a frozen-teacher method needs the teacher's trained weights; "
                                 "train it through kgdistill.runner.run, which loads them")
            spec = config.teacher_config()
            # built after the run's seed, as the student's draws have always followed its initialisation
            teacher = build_model(spec.model, dataset.n_entities, dataset.n_relations, spec.rank, spec.init_scale)
            load_module_state(teacher, teacher_state)
        else:
            teacher = build_model(config.model, dataset.n_entities, dataset.n_relations, config.rank, config.init_scale)
        self.modules["teacher"] = teacher.to(device)
        if self.pruned:
            self.student = teacher
        else:
            student_rank = config.student_rank or self.budget_rank(config, dataset, teacher)
            self.student = build_model(config.model, dataset.n_entities, dataset.n_relations, student_rank, config.init_scale)
            self.modules["student"] = self.student.to(device)
        trainable = list(self.student.parameters()) if not self.pruned else []
        if self.teacher_mode == "mutual":
            trainable = list(teacher.parameters()) + trainable
        else:
            teacher.requires_grad_(False)
        self.optimizers["actual"] = torch.optim.Adagrad(trainable, lr=config.learning_rate)
        if self.meta:
            self.optimizers["meta"] = torch.optim.Adagrad(teacher.parameters(), lr=config.meta_lr)
            train = dataset.reciprocal(dataset.train)
            quiz_gen = torch.Generator().manual_seed(config.seed + 1)
            size = max(1, int(round(config.quiz_fraction * len(train))))
            self.quiz = train[torch.randperm(len(train), generator=quiz_gen)[:size]].to(device)
            self.quiz_generator = torch.Generator().manual_seed(config.seed + 2)
            self.quiz_batch_size = config.quiz_batch_size or config.batch_size
        if self.pruned:
            self.recompute_mask()

    # --- construction helpers ------------------------------------------------------------------
    @staticmethod
    def budget_rank(config: RunConfig, dataset: KGDataset, teacher: KBCModel) -> int:
        """Rank of a separate student whose dense size is at most the pruned student's."""
        budget = kept_count(teacher.parameter_counts()["dense"], config.gamma)
        return rank_for_budget(config.model, dataset.n_entities, dataset.n_relations, budget)

    # --- pruning -------------------------------------------------------------------------------
    def recompute_mask(self) -> None:
        teacher = self.modules["teacher"]
        teacher.set_masks(magnitude_mask(teacher.prunable(), self.config.gamma))

    def start_epoch(self, epoch: int) -> None:
        if self.pruned:
            with self.timed("mask"):
                self.recompute_mask()

    # --- losses ----------------------------------------------------------------------------------
    @property
    def fused(self) -> bool:
        """CE and KL computed together (:func:`distilled_cross_entropy`): the default KL mode at T = 1."""
        return self.config.kl_mode == "target_first" and self.config.temperature == 1.0

    def terms(self, model: KBCModel, batch: torch.Tensor, masked: bool = False, params: dict | None = None) -> Losses:
        return supervised_loss(model, batch, self.config, self.class_weights, masked, params=params, tail_ce=not self.fused)

    def target_log_p(self, terms: Losses) -> torch.Tensor:
        """A model's tempered log-distribution, detached: what the other model distils from."""
        if self.fused:
            return terms.log_probs
        return tempered_log_probs(terms.scores, self.config.temperature, terms.log_probs).detach()

    def student_objective(self, student: Losses, teacher_log_p: torch.Tensor) -> torch.Tensor:
        """L_S = α·CE(S) + (1−α)·KL + reg(S); ``teacher_log_p`` tempered and detached."""
        return self._objective(student, teacher_log_p, self.config.alpha, learner_is_student=True)

    def teacher_objective(self, teacher: Losses, student_log_p: torch.Tensor) -> torch.Tensor:
        """L_T = β·CE(T) + (1−β)·KL + reg(T) (Eq. 10)."""
        return self._objective(teacher, student_log_p, self.config.beta, learner_is_student=False)

    def _objective(self, own: Losses, other_log_p: torch.Tensor, weight: float, learner_is_student: bool):
        c = self.config
        if self.fused:
            return distilled_cross_entropy(own, other_log_p, weight, self.class_weights) + weight * own.fit + own.penalty
        own_log_p = tempered_log_probs(own.scores, c.temperature, own.log_probs)
        kl = distillation_kl(own_log_p, other_log_p, c.temperature, c.kl_mode, learner_is_student)
        return weight * own.fit + (1 - weight) * kl + own.penalty

    # --- one step of Algorithm 1 -------------------------------------------------------------------
    def train_step(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.pruned and self.config.mask_schedule == "step":
            with self.timed("mask"):
                self.recompute_mask()
        out = {}
        if self.meta and self.config.meta_order == "simultaneous":
            return self.simultaneous_step(batch)
        if self.meta:
            out["quiz"] = self.meta_step(batch)
        with self.timed("actual"):
            out.update(self.actual_step(batch))
        return out

    def sample_quiz(self) -> torch.Tensor:
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
            loss_s = self.student_objective(student_terms, t_log_p)
            grads = self._masked(dict(zip(theta_s, torch.autograd.grad(loss_s, list(theta_s.values())))), masks)
            theta_virtual = {k: (theta_s[k] - c.virtual_lr * grads[k]).detach().requires_grad_() for k in theta_s}
            if c.meta_order != "simultaneous":  # only the simultaneous step reuses ∇θ_S L_S
                grads = None
        with self.timed("meta"):
            q_scores = functional_call(student, theta_virtual, (quiz,))[0]
            quiz_loss = F.cross_entropy(q_scores, quiz[:, 2], weight=self.class_weights)
            v = self._masked(dict(zip(theta_virtual, torch.autograd.grad(quiz_loss, list(theta_virtual.values())))), masks)
            del theta_virtual, q_scores
            u = self.logit_tangent(batch, {k: t.detach() for k, t in theta_s.items()}, v)
            grad_t_scores = self.meta_grad_of_teacher_logits(student_terms.scores.detach(), t_log_p, u)
            meta_grads = torch.autograd.grad(
                t_scores, list(teacher.parameters()), grad_t_scores, allow_unused=True, retain_graph=t_terms is not None
            )
        s_grads = list(grads.values()) if grads is not None else None
        return quiz_loss.detach(), list(meta_grads), (t_terms, student_terms, s_grads, loss_s)

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

    def meta_grad_of_teacher_logits(self, s_scores: torch.Tensor, t_log_p: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """∂/∂z_T of −λ(1−α)⟨∂KL/∂z_S, u⟩ in closed form, (B, N); z = logits, T = temperature.

        target_first, KL(p_T ‖ p_S):  ∂KL/∂z_S = T (p_S − p_T) / B, so the z_T-gradient is
        λ(1−α)/B · p_T ⊙ (u − ⟨p_T, u⟩).  paper, KL(p_S ‖ p_T): the z_T-dependent part of
        ⟨∂KL/∂z_S, u⟩ is −(T/B)⟨w, log p_T⟩ with w = p_S ⊙ u − ⟨p_S, u⟩ p_S (rows of w sum to 0),
        giving λ(1−α)/B · w. Checked against finite differences in the tests.
        """
        c = self.config
        scale = c.virtual_lr * (1 - c.alpha) / len(u)
        if c.kl_mode == "target_first":
            p = t_log_p.exp()
        else:
            p = tempered_log_probs(s_scores, c.temperature).exp()
        w = p * u
        w -= p * w.sum(-1, keepdim=True)
        return w.mul_(scale)

    def actual_step(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """Actual-Train (Eq. 7–11): S on L_S, T on L_T (mutual) with the other side detached."""
        teacher, student = self.modules["teacher"], self.student
        mutual = self.teacher_mode == "mutual"
        with torch.set_grad_enabled(mutual):
            t_terms = self.terms(teacher, batch)
        s_terms = self.terms(student, batch, masked=self.pruned)
        loss_s = self.student_objective(s_terms, self.target_log_p(t_terms))
        total = loss_s
        out = {"student": loss_s.detach()}
        if mutual:
            loss_t = self.teacher_objective(t_terms, self.target_log_p(s_terms))
            total = total + loss_t
            out["teacher"] = loss_t.detach()
        optimizer = self.optimizers["actual"]
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        return out

    # --- evaluation and bookkeeping -------------------------------------------------------------------
    def scorers(self) -> dict[str, Scorer]:
        teacher, student = self.modules["teacher"], self.student
        if self.pruned:
            return {"student": lambda q: student.score_tails(q, masked=True), "teacher": teacher.score_tails}
        return {"student": student.score_tails, "teacher": teacher.score_tails}

    def parameter_counts(self) -> dict[str, dict[str, int]]:
        teacher = self.modules["teacher"]
        dense = teacher.parameter_counts()["dense"]
        counts = {"teacher": {"dense": dense, "nonzero": int(teacher.entity.count_nonzero() + teacher.relation.count_nonzero())}}
        counts["student"] = self.student.parameter_counts()
        return counts

    def dims(self) -> dict[str, int]:
        return {"teacher": self.modules["teacher"].rank, "student": self.student.rank}

    def extra_record(self) -> dict:
        extra = {
            "student_rank": self.student.rank,
            "teacher_rank": self.modules["teacher"].rank,
        }
        if self.pruned:
            teacher = self.modules["teacher"]
            extra["mask_density"] = mask_density({"e": teacher.entity_mask, "r": teacher.relation_mask})
        if self.meta:
            extra["quiz_size"] = len(self.quiz)
        return extra

    def extra_state(self) -> dict:
        return {"quiz_generator": self.quiz_generator.get_state()} if self.meta else {}

    def load_extra_state(self, state: dict) -> None:
        if self.meta:
            self.quiz_generator.set_state(state["quiz_generator"])
