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
from .distill_losses import distillation_kl, distilled_cross_entropy, tempered_log_probs
from .evalmodes import student_eval_rows
from .training import Learner, Losses, fit_loss, supervised_loss


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
            if config.quiz_selection == "head":  # official: the first rows in file order
                self.quiz = train[: max(1, int(config.quiz_fraction * len(train)))].to(device)
            else:
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

    def train_epoch(self, epoch: int, generator: torch.Generator) -> dict:
        """The family's epoch, with the soft training mask (``soft_mask_epsilon``) in force."""
        source = self.modules["teacher"]
        source.mask_epsilon = self.config.soft_mask_epsilon if self.pruned else 0.0
        try:
            return super().train_epoch(epoch, generator)
        finally:
            source.mask_epsilon = 0.0  # evaluation and export always use the hard mask

    def final_evaluations(self, dataset: KGDataset, device: torch.device) -> dict:
        """A pruned student at the selected epoch, test split, in every ``student_eval_modes`` at
        the training rate γ and at each ``student_eval_gammas`` (mask recomputed from the same
        weights), with the non-zero parameters each reads: the record's ``student_eval``."""
        if not self.pruned:
            return {}
        c = self.config
        rows = student_eval_rows(self.modules["teacher"], dataset, c.student_eval_modes, c.student_eval_gammas,
                                 c.gamma, c.tie_policy, c.eval_batch_size)
        return {"student_eval": rows}

    # --- losses ----------------------------------------------------------------------------------
    @property
    def fused(self) -> bool:
        """CE and KL computed together (:func:`distilled_cross_entropy`): the default KL mode at T = 1."""
        c = self.config
        return c.kl_mode == "target_first" and c.temperature == 1.0 and c.loss_weighting == "alpha_beta"

    def terms(self, model: KBCModel, batch: torch.Tensor, masked: bool = False, params: dict | None = None) -> Losses:
        return supervised_loss(model, batch, self.config, self.class_weights, masked, params=params, tail_ce=not self.fused)

    def target_log_p(self, terms: Losses) -> torch.Tensor:
        """A model's tempered log-distribution, detached: what the other model distils from."""
        if self.fused:
            return terms.log_probs
        return tempered_log_probs(terms.scores, self.config.temperature, terms.log_probs).detach()

    def student_objective(self, student: Losses, teacher_log_p: torch.Tensor, virtual: bool = False) -> torch.Tensor:
        """L_S = α·CE(S) + (1−α)·KL + reg(S) (``loss_weighting: unit``: CE + KL + reg);
        ``teacher_log_p`` tempered; ``virtual``: the virtual step's loss (``kl_mode: official``
        orders its KL mix differently there)."""
        return self._objective(student, teacher_log_p, self.config.alpha, learner_is_student=True, virtual=virtual)

    def teacher_objective(self, teacher: Losses, student_log_p: torch.Tensor) -> torch.Tensor:
        """L_T = β·CE(T) + (1−β)·KL + reg(T) (Eq. 10)."""
        return self._objective(teacher, student_log_p, self.config.beta, learner_is_student=False)

    def _objective(self, own: Losses, other_log_p: torch.Tensor, weight: float, learner_is_student: bool,
                   virtual: bool = False):
        c = self.config
        if self.fused:
            return distilled_cross_entropy(own, other_log_p, weight, self.class_weights) + weight * own.fit + own.penalty
        own_log_p = tempered_log_probs(own.scores, c.temperature, own.log_probs)
        kl = distillation_kl(own_log_p, other_log_p, c.temperature, c.kl_mode, learner_is_student,
                             virtual=virtual, squared=c.kl_temperature_squared)
        fit_weight, kl_weight = (1.0, 1.0) if c.loss_weighting == "unit" else (weight, 1 - weight)
        return fit_weight * own.fit + kl_weight * kl + own.penalty

    # --- one step of Algorithm 1 -------------------------------------------------------------------
    def train_step(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.pruned and self.config.mask_schedule == "step":
            with self.timed("mask"):
                self.recompute_mask()
        out = {}
        if self.meta and self.config.meta_order == "simultaneous":
            return self.simultaneous_step(batch)
        if self.config.teacher_warm_step:
            with self.timed("warm"):
                out["warm"] = self.warm_step(batch)
        if self.meta:
            out["quiz"] = self.meta_step(batch)
        with self.timed("actual"):
            out.update(self.actual_step(batch))
        return out

    def warm_step(self, batch: torch.Tensor) -> torch.Tensor:
        """The official "Step 0": one update of the source on its baseline objective (CE + RP +
        reg) with the Actual-Train optimizer, before the virtual step."""
        teacher, optimizer = self.modules["teacher"], self.optimizers["actual"]
        loss, _ = fit_loss(teacher, batch, self.config, self.class_weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

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

    def meta_grad_of_teacher_logits(self, s_scores: torch.Tensor, t_log_p: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
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
