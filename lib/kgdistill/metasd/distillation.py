"""Distillation methods on one trainer: MetaSD (Algorithm 1), its ablations, KD and DML.

Which parts run is set by ``RunConfig.method`` through :data:`kgdistill.metasd.config.METHODS`:

* student ``"pruned"``: S is the source model T seen through a global magnitude mask at rate γ
  (same parameters, ``masked=True``), the mask recomputed every epoch (or step);
  ``"separate"``: S is its own small model whose dense size matches the pruned one.
* teacher ``"mutual"``: T is trained on L_T = β·CE(T) + (1−β)·KL (Eq. 8–11) next to S;
  ``"frozen"``: T is a finished baseline run (KD) and never changes.
* ``meta``: MetaSD's Virtual-Train / Meta-Train before each Actual-Train (Eq. 4–6).

Losses (:mod:`kgdistill.metasd.distill_losses`). Cross-entropy terms are the full 1-vs-all objective of
the baseline (tail CE plus the RP relation CE when ``rp_weight`` > 0); the regularizer is added
unweighted by α/β so that α = 1 recovers the baseline. L_S = α·CE(S) + (1−α)·KL + reg(S),
L_T = β·CE(T) + (1−β)·KL + reg(T) (``loss_weighting: unit``: plain sums, as the official code).
The KL is between softmax(scores / temperature) over all entities, × temperature² unless
``kl_temperature_squared`` is off; its direction follows ``kl_mode``.

Meta step: :class:`kgdistill.metasd.metastep.MetaStep`. The quiz set Q is a fixed random
``quiz_fraction`` of the (reciprocal) training triples drawn once with the run's seed, or their
head in file order (``quiz_selection: head``). The official code's other choices (Step 0, soft
mask) are switches too; docs/official_code_audit.md lists them.
"""
from __future__ import annotations

import torch

from ..core.datasets import KGDataset
from ..core.evaluation import Scorer
from ..core.models import KBCModel, build_model, rank_for_budget
from ..core.pruning import kept_count, magnitude_mask, mask_density
from .config import RunConfig
from .distill_losses import distillation_kl, distilled_cross_entropy, tempered_log_probs
from .evalmodes import student_eval_rows
from .metastep import MetaStep
from .objective import Losses, baseline_loss, chunked_distillation_losses, supervised_loss
from .training import Learner, trained_teacher


class DistillationLearner(MetaStep, Learner):
    """Teacher/student training with the switches of :data:`kgdistill.metasd.config.METHODS`."""

    selected = "student"

    def __init__(self, config: RunConfig, dataset: KGDataset, device: torch.device, teacher_state: dict | None = None):
        """``teacher_state``: for a frozen teacher (KD), the trained weights of the finished
        baseline run ``config.teacher`` — loaded by the runner (:func:`kgdistill.protocol.runner.load_best`)."""
        super().__init__(config, dataset, device)
        switches = config.switches
        self.pruned = switches["student"] == "pruned"
        self.teacher_mode = switches["teacher"]
        self.meta = bool(switches["meta"])
        if self.teacher_mode == "frozen":
            # built after the run's seed, as the student's draws have always followed its initialisation
            teacher = trained_teacher(config, dataset, teacher_state)
        else:
            teacher = build_model(config.model, dataset.n_entities, dataset.n_relations, config.rank, config.init_scale)
        self.modules["teacher"] = teacher.to(device)
        if self.pruned:
            self.student = teacher
        else:
            student_rank = config.student_rank or self.budget_rank(config, dataset, teacher)
            self.student = build_model(
                config.model, dataset.n_entities, dataset.n_relations, student_rank, config.init_scale
            )
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
        return supervised_loss(
            model, batch, self.config, self.class_weights, masked, params=params, tail_ce=not self.fused
        )

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
            return (
                distilled_cross_entropy(own, other_log_p, weight, self.class_weights) + weight * own.fit + own.penalty
            )
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
        loss = baseline_loss(teacher, batch, self.config, self.class_weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def actual_step(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """Actual-Train (Eq. 7–11): S on L_S, T on L_T (mutual) with the other side detached
        (``one_vs_all: chunked``: the same objective in row chunks, :func:`chunked_distillation_losses`)."""
        teacher, student = self.modules["teacher"], self.student
        mutual = self.teacher_mode == "mutual"
        if self.config.one_vs_all == "chunked":
            loss_s, loss_t = chunked_distillation_losses(student, teacher, batch, self.config, self.class_weights,
                                                         pruned=self.pruned, mutual=mutual)
        else:
            with torch.set_grad_enabled(mutual):
                t_terms = self.terms(teacher, batch)
            s_terms = self.terms(student, batch, masked=self.pruned)
            loss_s = self.student_objective(s_terms, self.target_log_p(t_terms))
            loss_t = self.teacher_objective(t_terms, self.target_log_p(s_terms)) if mutual else None
        total = loss_s
        out = {"student": loss_s.detach()}
        if mutual:
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
        counts = {"teacher": {"dense": dense,
                              "nonzero": int(teacher.entity.count_nonzero() + teacher.relation.count_nonzero())}}
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
