"""One run's configuration: the single source of truth for every hyperparameter default."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .datasets import ARCHIVES
from .evaluation import TIE_POLICIES
from .models import BACKBONES
from .records import stable_hash
from .regularizers import REGULARIZERS

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
}
KL_MODES = ("target_first", "paper")
MASK_SCHEDULES = ("epoch", "step")
META_ORDERS = ("sequential", "simultaneous")

#: Fields that only matter when the run has a student; left out of a baseline's hash so that
#: changing a distillation default does not invalidate baseline records.
DISTILL_FIELDS = (
    "gamma", "alpha", "beta", "temperature", "kl_mode", "student_rank", "meta_lr", "virtual_lr",
    "quiz_fraction", "quiz_batch_size", "mask_schedule", "meta_order", "teacher",
)


@dataclass(frozen=True)
class RunConfig:
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
    seed: int = 0
    tie_policy: str = "pessimistic"
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

    def __post_init__(self) -> None:
        self.validate()

    # --- validation ------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field and how to fix it."""
        known = {k.lower(): k for k in ARCHIVES}
        if self.dataset.lower() not in known:
            raise ValueError(f"config field 'dataset': unknown dataset {self.dataset!r}; choose one of {sorted(ARCHIVES)}")
        if self.method not in METHODS:
            raise ValueError(f"config field 'method': unknown method {self.method!r}; choose one of {sorted(METHODS)}")
        if self.model not in BACKBONES:
            raise ValueError(f"config field 'model': unknown model {self.model!r}; choose one of {sorted(BACKBONES)}")
        if self.regularizer not in REGULARIZERS:
            raise ValueError(
                f"config field 'regularizer': unknown regularizer {self.regularizer!r}; choose one of {sorted(REGULARIZERS)}"
            )
        if self.tie_policy not in TIE_POLICIES:
            raise ValueError(f"config field 'tie_policy': {self.tie_policy!r} is not one of {TIE_POLICIES}")
        if self.kl_mode not in KL_MODES:
            raise ValueError(f"config field 'kl_mode': {self.kl_mode!r} is not one of {KL_MODES}")
        if self.meta_order not in META_ORDERS:
            raise ValueError(f"config field 'meta_order': {self.meta_order!r} is not one of {META_ORDERS}")
        if self.mask_schedule not in MASK_SCHEDULES:
            raise ValueError(f"config field 'mask_schedule': {self.mask_schedule!r} is not one of {MASK_SCHEDULES}")
        for name in ("rank", "batch_size", "max_epochs", "eval_every", "eval_batch_size"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"config field {name!r} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("learning_rate", "init_scale", "temperature", "virtual_lr"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"config field {name!r} must be > 0, got {getattr(self, name)!r}")
        for name in ("reg_weight", "rp_weight", "meta_lr", "student_rank", "quiz_batch_size"):
            if float(getattr(self, name)) < 0:
                raise ValueError(f"config field {name!r} must be >= 0, got {getattr(self, name)!r}")
        if not 0.0 <= float(self.gamma) < 1.0:
            raise ValueError(f"config field 'gamma' (pruning rate) must be in [0, 1), got {self.gamma!r}")
        for name in ("alpha", "beta"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ValueError(f"config field {name!r} must be in [0, 1], got {getattr(self, name)!r}")
        if not 0.0 < float(self.quiz_fraction) < 1.0:
            raise ValueError(f"config field 'quiz_fraction' must be in (0, 1), got {self.quiz_fraction!r}")
        if self.method == "kd" and not self.teacher:
            raise ValueError("config field 'teacher': method 'kd' needs the config of a finished baseline run as teacher")

    # --- identity --------------------------------------------------------------------------
    @property
    def switches(self) -> dict[str, object]:
        return METHODS[self.method]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def identity(self) -> dict:
        """The fields that define the run: everything except settings its method ignores."""
        data = self.to_dict()
        if self.method == "baseline":
            for name in DISTILL_FIELDS:
                data.pop(name)
        if self.method != "kd":
            data.pop("teacher", None)
        return data

    def config_hash(self) -> str:
        return stable_hash(self.identity())

    def run_name(self) -> str:
        return f"{self.method}-{self.dataset}-{self.model}-r{self.rank}-s{self.seed}-{self.config_hash()}"

    def replace(self, **changes) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        """Build from a mapping, rejecting unknown keys with the list of valid ones."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown config field(s) {unknown}; valid fields are {sorted(names)}")
        return cls(**data)
