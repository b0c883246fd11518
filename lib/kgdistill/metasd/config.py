"""The MetaSD family's run configuration (baseline, KD, DML, MetaSD and its ablations).

:class:`RunConfig` is the single source of truth for every hyperparameter default of the family;
it follows the protocol of :class:`kgdistill.protocol.configbase.ConfigBase` (field-rule validation,
identity hash, ``from_dict`` with typo hints) and :data:`METHODS` is the switch table that says
which parts of MetaSD each method runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ..core.models import BACKBONES
from ..core.regularizers import REGULARIZERS
from ..protocol.configbase import ConfigBase, Rule, choice, non_negative, positive, positive_int, within

#: What each method switches on. ``student``: none / the pruned view of the source / a separate
#: small model; ``teacher``: trained normally, frozen (KD: a finished baseline run), or trained
#: mutually with the student; ``meta``: MetaSD's virtual/meta step.
METHODS: dict[str, dict[str, object]] = {
    "baseline": {"student": None, "teacher": "train", "meta": False},
    "kd": {"student": "separate", "teacher": "frozen", "meta": False},
    "dml": {"student": "separate", "teacher": "mutual", "meta": False},  # = MetaSD w/o P&M
    "metasd": {"student": "pruned", "teacher": "mutual", "meta": True},
    "metasd_wo_p": {"student": "separate", "teacher": "mutual", "meta": True},
    "metasd_wo_m": {"student": "pruned", "teacher": "mutual", "meta": False},
    # no distillation: a finished baseline (the source) pruned once by magnitude, then fine-tuned
    # with that mask fixed (the equal-size study's "prune + fine-tune" row)
    "prune_finetune": {"student": "pruned", "teacher": "source", "meta": False},
}
#: methods that start from a finished baseline run named in ``teacher``
TEACHER_METHODS = ("kd", "prune_finetune")
KL_MODES = ("target_first", "paper", "official")
LOSS_WEIGHTINGS = ("alpha_beta", "unit")
QUIZ_SELECTIONS = ("random", "head")
QUIZ_PER_META_STEP = ("batch", "all")
MASK_SCHEDULES = ("epoch", "step")
META_ORDERS = ("sequential", "simultaneous")
#: the ways a step computes the 1-vs-all loss (field ``one_vs_all``) and the methods that have each
ONE_VS_ALL: dict[str, tuple[str, ...]] = {
    "autograd": tuple(METHODS),
    "chunked": ("baseline", "prune_finetune", "kd", "dml", "metasd_wo_m", "metasd", "metasd_wo_p"),
}

#: Fields that only matter when the run has a student; left out of a baseline's hash so that
#: changing a distillation default does not invalidate baseline records.
DISTILL_FIELDS = (
    "gamma", "alpha", "beta", "temperature", "kl_mode", "student_rank", "meta_lr", "virtual_lr",
    "quiz_fraction", "quiz_batch_size", "mask_schedule", "meta_order", "teacher",
    # the official code's choices (docs/official_code_audit.md, point 4) and student evaluation
    "kl_temperature_squared", "loss_weighting", "teacher_warm_step", "quiz_selection", "quiz_per_meta_step",
    "soft_mask_epsilon", "student_eval_modes", "student_eval_gammas",
)

@dataclass(frozen=True)
class RunConfig(ConfigBase):
    """Everything that determines a run's numbers (and hence its record's hash).

    Defaults follow the MetaSD paper and the DURA/RP recipes it builds on; the profiles in
    ``params/`` override them per experiment.
    """

    dataset: str = "FB15k-237"
    method: str = "baseline"
    model: str = "ComplEx"
    rank: int = 100
    init_scale: float = 1e-3
    regularizer: str = "DURA_W"
    reg_weight: float = 5e-2
    #: weight of the relation-prediction auxiliary loss (RP, Chen et al. 2021); 0 disables it.
    #: The MetaSD code uses 4 (``rp_criterion``).
    rp_weight: float = 0.0
    #: DURA's ``-weight``: entity-frequency class weights in the tail cross-entropy.
    entity_weights: bool = False
    learning_rate: float = 0.1
    batch_size: int = 1000
    max_epochs: int = 50
    eval_every: int = 5
    eval_batch_size: int = 500
    long_tail_threshold: int = 1000
    # --- distillation (methods other than "baseline") -----------------------------------
    #: pruning rate γ: the pruned student keeps ⌈(1−γ)·P⌉ of the P source weights.
    gamma: float = 0.9
    #: α: weight of the student's cross-entropy against its distillation term (Eq. 3).
    alpha: float = 0.5
    #: β: the same for the source/teacher in mutual learning (Eq. 10).
    beta: float = 0.5
    #: softmax temperature of the distillation KL. The paper is silent; 1 keeps Eq. 2 literal
    #: (the official code uses 3 with a 3:1 mix of both KL directions).
    temperature: float = 1.0
    #: "target_first": each learner minimises KL(other ‖ self) (Hinton KD, DML); "paper": KL(S ‖ T)
    #: for both S and T exactly as Eq. 2 and Eq. 9 are written.
    kl_mode: str = "target_first"
    #: rank of a separate student (KD, DML, w/o P); 0 picks the largest rank whose dense size is
    #: at most the pruned student's ⌈(1−γ)·P⌉.
    student_rank: int = 0
    #: μ: learning rate of the meta step (Adagrad, Eq. 6).
    meta_lr: float = 1e-4
    #: λ: SGD step of the virtual student (Eq. 4).
    virtual_lr: float = 0.1
    #: share of train held out once, at random, as the fixed quiz set Q (the official code takes
    #: the first 2%); it stays in the training data, as in the official code.
    quiz_fraction: float = 0.02
    #: quiz batch per meta step; 0 means ``batch_size``.
    quiz_batch_size: int = 0
    #: recompute the pruning mask every "epoch" (the paper) or every "step".
    mask_schedule: str = "epoch"
    #: "sequential": Algorithm 1 as written, Actual-Train after the meta update of θ_T.
    #: "simultaneous": Actual-Train gradients taken at the same θ_T as the virtual step, reusing its
    #: forward passes and ∇θ_S L_S (about a third fewer score products); differs from the paper
    #: only by the μ-sized meta update between the two (μ = 1e-4).
    meta_order: str = "sequential"
    #: KD only: the RunConfig fields (as a dict) of the finished baseline run used as teacher.
    teacher: dict | None = field(default=None, compare=False)
    # --- the official code's choices (docs/official_code_audit.md); defaults = the paper's equations
    #: multiply the KL by T² (Hinton et al.); the official code does not
    kl_temperature_squared: bool = True
    #: "alpha_beta": L = α·CE + (1−α)·KL + reg (Eq. 3/10); "unit": L = CE + KL + reg, the official sums
    loss_weighting: str = "alpha_beta"
    #: the official "Step 0": one plain update of the source on its baseline objective (same
    #: Adagrad as Actual-Train) before each virtual step
    teacher_warm_step: bool = False
    #: the quiz set Q: a seeded "random" share of the reciprocal training triples, or their
    #: "head" in file order (the official code: the first 2%, i.e. 4% of train.txt, forward only)
    quiz_selection: str = "random"
    #: each meta step on one quiz "batch", or on "all" of Q in chunks (mean of chunk means)
    quiz_per_meta_step: str = "batch"
    #: soft mask in training: pruned weights enter as ε·w (official 1e-8) and keep a gradient, so
    #: under Adagrad they still move and can re-enter the next epoch's mask; evaluation stays hard
    soft_mask_epsilon: float = 0.0
    # --- evaluation of a pruned student (stored in the record as "student_eval") ----------
    #: "pruned" (queries and candidates masked, what the tables report) and "official_dense"
    #: (masked queries against the unmasked entity table, as the official score() does)
    student_eval_modes: tuple = ("pruned", "official_dense")
    #: extra pruning rates at which the trained source is evaluated (official scripts: 0.8)
    student_eval_gammas: tuple = ()
    #: how a training step computes the 1-vs-all loss: "autograd" (the batch's whole (B, N) score
    #: matrix through autograd; every committed record) or "chunked" (rows in cache-sized chunks,
    #: scores, softmax, loss and gradients fused per chunk: kgdistill.core.onevsall; with
    #: precision "bf16" its score products run in bf16). Methods on the chunked step so far:
    #: ONE_VS_ALL["chunked"].
    one_vs_all: str = "autograd"
    #: rows per chunk of the chunked step; 0 sizes them from the entity count (core.onevsall.chunk_rows_for)
    chunk_rows: int = 0

    FIELD_RULES: ClassVar[dict[str, Rule]] = {
        "method": choice(METHODS),
        "model": choice(BACKBONES),
        "regularizer": choice(REGULARIZERS),
        "kl_mode": choice(KL_MODES),
        "meta_order": choice(META_ORDERS),
        "mask_schedule": choice(MASK_SCHEDULES),
        "rank": positive_int(),
        **{name: positive() for name in ("init_scale", "temperature", "virtual_lr")},
        **{name: non_negative() for name in ("reg_weight", "rp_weight", "meta_lr", "student_rank", "quiz_batch_size")},
        "gamma": within(0.0, 1.0, high_open=True, what="(pruning rate) "),
        "alpha": within(0.0, 1.0),
        "beta": within(0.0, 1.0),
        "quiz_fraction": within(0.0, 1.0, low_open=True, high_open=True),
        "kl_temperature_squared": choice((True, False)),
        "loss_weighting": choice(LOSS_WEIGHTINGS),
        "teacher_warm_step": choice((True, False)),
        "quiz_selection": choice(QUIZ_SELECTIONS),
        "quiz_per_meta_step": choice(QUIZ_PER_META_STEP),
        "soft_mask_epsilon": within(0.0, 1.0, high_open=True),
        "one_vs_all": choice(tuple(ONE_VS_ALL)),
        "chunk_rows": non_negative(),
        **ConfigBase.FIELD_RULES,
    }
    LATE_FIELDS: ClassVar[dict] = {
        **ConfigBase.LATE_FIELDS, "kl_temperature_squared": True, "loss_weighting": "alpha_beta",
        "teacher_warm_step": False, "quiz_selection": "random", "quiz_per_meta_step": "batch",
        "soft_mask_epsilon": 0.0, "student_eval_modes": ("pruned", "official_dense"), "student_eval_gammas": (),
        "one_vs_all": "autograd", "chunk_rows": 0,
    }
    PAPER: ClassVar[str] = "metasd"

    def check(self) -> None:
        self._check_official_switches()
        if self.method not in TEACHER_METHODS:
            return
        if not self.teacher:
            raise ValueError(
                f"config field 'teacher': method {self.method!r} needs the config of a finished baseline run"
            )
        teacher = self.teacher_config()
        if teacher.method != "baseline" or teacher.dataset.lower() != self.dataset.lower():
            raise ValueError(
                f"config field 'teacher': the {self.method} teacher must be a baseline run on the same dataset"
            )
        if self.method == "prune_finetune" and (teacher.model, teacher.rank) != (self.model, self.rank):
            raise ValueError(
                f"config field 'teacher': prune_finetune prunes its source, so model and rank must match it "
                f"(source {teacher.model} rank {teacher.rank}, this run {self.model} rank {self.rank})"
            )

    def _check_official_switches(self) -> None:
        """Switches that only make sense for some methods fail before training, naming the field."""
        switches = METHODS[self.method]
        late = self.LATE_FIELDS

        def changed(name: str) -> bool:
            return getattr(self, name) != late[name]

        needs = {
            "quiz_selection": (switches["meta"], "a meta method (metasd, metasd_wo_p)"),
            "quiz_per_meta_step": (switches["meta"], "a meta method (metasd, metasd_wo_p)"),
            "teacher_warm_step": (switches["teacher"] == "mutual", "a mutually trained teacher (dml, metasd*)"),
            "soft_mask_epsilon": (switches["student"] == "pruned", "a pruned student (metasd, metasd_wo_m)"),
            "student_eval_modes": (
                switches["student"] == "pruned", "a pruned student (metasd, metasd_wo_m, prune_finetune)"
            ),
            "student_eval_gammas": (
                switches["student"] == "pruned", "a pruned student (metasd, metasd_wo_m, prune_finetune)"
            ),
        }
        for name, (applies, what) in needs.items():
            if changed(name) and not applies:
                raise ValueError(f"config field {name!r}: applies only to {what}, not method {self.method!r}; "
                                 f"remove it from this recipe")
        if self.method not in ONE_VS_ALL[self.one_vs_all]:
            fast = [s for s, methods in ONE_VS_ALL.items() if self.method in methods]
            raise ValueError(f"config field 'one_vs_all': method {self.method!r} has no {self.one_vs_all!r} step yet; "
                             f"use {' or '.join(repr(s) for s in fast)}")
        fused = self.kl_mode == "target_first" and self.temperature == 1.0 and self.loss_weighting == "alpha_beta"
        if self.one_vs_all == "chunked" and METHODS[self.method]["teacher"] in ("frozen", "mutual") and not fused:
            raise ValueError("config field 'one_vs_all': the chunked distillation step computes the default objective "
                             "only (kl_mode target_first, temperature 1, loss_weighting alpha_beta); use 'autograd'")
        if self.one_vs_all == "chunked" and METHODS[self.method]["meta"] and self.meta_order != "sequential":
            raise ValueError("config field 'meta_order': the chunked meta step is sequential only; use meta_order "
                             "'sequential' or one_vs_all 'autograd'")
        if self.chunk_rows and self.one_vs_all != "chunked":
            raise ValueError("config field 'chunk_rows': applies only to one_vs_all 'chunked'; remove it or set "
                             "one_vs_all: chunked")
        if self.kl_mode == "official" and self.meta_order == "simultaneous":
            raise ValueError("config field 'meta_order': 'simultaneous' reuses the virtual step's student loss, which "
                             "kl_mode 'official' defines differently from Actual-Train's; use 'sequential'")
        if switches["student"] == "pruned":
            from .evalmodes import check_gamma, check_mode

            for mode in self.student_eval_modes:
                check_mode(mode)
            for gamma in self.student_eval_gammas:
                check_gamma(gamma)

    # --- identity --------------------------------------------------------------------------
    @property
    def switches(self) -> dict[str, object]:
        return METHODS[self.method]

    def ignored_fields(self) -> tuple[str, ...]:
        if self.method == "baseline":
            return DISTILL_FIELDS
        if self.method == "prune_finetune":  # no distillation: only the rate and the source matter
            return tuple(f for f in DISTILL_FIELDS if f not in ("gamma", "teacher"))
        return () if self.method == "kd" else ("teacher",)

    def teacher_config(self) -> "RunConfig | None":
        return RunConfig.from_dict(self.teacher) if self.method in TEACHER_METHODS and self.teacher else None

    def run_name(self) -> str:
        return f"{self.method}-{self.dataset}-{self.model}-r{self.rank}-s{self.seed}-{self.config_hash()}"
