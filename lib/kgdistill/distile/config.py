"""DistilE run configuration: frozen, validated, hashed — the single source of DistilE defaults."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..datasets import ARCHIVES
from ..evaluation import TIE_POLICIES
from ..records import stable_hash
from .kge import FAMILIES
from .losses import WEIGHTINGS

#: "plain": the backbone alone on its hard loss (teachers and the "no-DS" students);
#: "ds": a student distilled from ``teacher`` in two stages (Eqs. 5 and 11).
METHODS = ("plain", "ds")
#: paper defaults per backbone: margin γ, negatives per positive (Implementation details)
MARGINS = {"TransE": 1.0, "TransH": 0.5, "ComplEx": 0.0, "RotatE": 6.0}
NEGATIVES = {"TransE": 5, "TransH": 5, "ComplEx": 25, "RotatE": 25}
#: fields only a distilled run uses (left out of a plain run's hash)
DS_FIELDS = ("alpha", "beta", "stage1_epochs", "teacher")
#: ablations of Table 6 as stage-1 lengths: DS keeps the configured switch, −S1 starts in
#: stage 2 from a random student, −S2 never leaves stage 1.
ABLATIONS = ("DS", "-S1", "-S2")


@dataclass(frozen=True)
class DistilEConfig:
    """Everything that determines a DistilE run's numbers. ``None`` fields take the paper's per-backbone default."""

    dataset: str = "WN18RR"
    model: str = "TransE"
    dim: int = 64
    method: str = "plain"
    #: negatives per positive (None: 5 for TransE/TransH, 25 for ComplEx/RotatE)
    negatives: int | None = None
    #: margin γ (None: TransE 1.0, TransH 0.5, RotatE 6.0; unused by ComplEx)
    margin: float | None = None
    #: RotatE's ε of the initialisation range (γ + ε)/dim
    epsilon: float = 2.0
    #: TransH's soft-constraint weight C
    soft_c: float = 0.0625
    #: logistic losses: "balanced" (RotatE recipe) or "sum" (Eq. 6 literally); see losses.py
    weighting: str = "balanced"
    learning_rate: float = 0.005
    #: Adam learning-rate decay: ×lr_decay when the epoch's training loss has not improved for
    #: lr_patience epochs (the paper's "decay 0.96, trigger threshold 5")
    lr_decay: float = 0.96
    lr_patience: int = 5
    batch_size: int = 1024
    max_epochs: int = 1000
    eval_every: int = 10
    seed: int = 0
    tie_policy: str = "pessimistic"
    eval_batch_size: int = 256
    # --- distillation (method "ds") ------------------------------------------------------
    alpha: float = 0.5
    beta: float = 0.5
    #: epochs of stage 1 (teacher frozen); the remaining max_epochs − stage1_epochs are stage 2.
    #: None: half of max_epochs. 0 = ablation −S1; max_epochs = ablation −S2.
    stage1_epochs: int | None = None
    #: the DistilEConfig fields (a dict) of the finished "plain" run used as teacher
    teacher: dict | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        self.validate()
        if self.negatives is None:
            object.__setattr__(self, "negatives", NEGATIVES[self.model])
        if self.margin is None:
            object.__setattr__(self, "margin", MARGINS[self.model])
        if self.stage1_epochs is None:
            object.__setattr__(self, "stage1_epochs", self.max_epochs // 2)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field and how to fix it."""
        if self.dataset.lower() not in {k.lower() for k in ARCHIVES}:
            raise ValueError(f"config field 'dataset': unknown dataset {self.dataset!r}; choose one of {sorted(ARCHIVES)}")
        if self.model not in FAMILIES:
            raise ValueError(f"config field 'model': unknown model {self.model!r}; choose one of {sorted(FAMILIES)}")
        if self.method not in METHODS:
            raise ValueError(f"config field 'method': unknown method {self.method!r}; choose one of {METHODS}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"config field 'weighting': {self.weighting!r} is not one of {WEIGHTINGS}")
        if self.tie_policy not in TIE_POLICIES:
            raise ValueError(f"config field 'tie_policy': {self.tie_policy!r} is not one of {TIE_POLICIES}")
        for name in ("dim", "batch_size", "max_epochs", "eval_every", "eval_batch_size", "lr_patience"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"config field {name!r} must be a positive integer, got {getattr(self, name)!r}")
        if self.negatives is not None and int(self.negatives) <= 0:
            raise ValueError(f"config field 'negatives' must be a positive integer, got {self.negatives!r}")
        for name in ("learning_rate",):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"config field {name!r} must be > 0, got {getattr(self, name)!r}")
        for name in ("epsilon", "soft_c"):
            if float(getattr(self, name)) < 0:
                raise ValueError(f"config field {name!r} must be >= 0, got {getattr(self, name)!r}")
        if self.margin is not None and float(self.margin) < 0:
            raise ValueError(f"config field 'margin' must be >= 0, got {self.margin!r}")
        if not 0.0 < float(self.lr_decay) <= 1.0:
            raise ValueError(f"config field 'lr_decay' must be in (0, 1], got {self.lr_decay!r}")
        for name in ("alpha", "beta"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ValueError(f"config field {name!r} must be in [0, 1], got {getattr(self, name)!r}")
        if self.stage1_epochs is not None and not 0 <= int(self.stage1_epochs) <= int(self.max_epochs):
            raise ValueError(
                f"config field 'stage1_epochs' must be in [0, max_epochs={self.max_epochs}], got {self.stage1_epochs!r}"
            )
        if self.method == "ds":
            if not self.teacher:
                raise ValueError("config field 'teacher': method 'ds' needs the config (dict) of a 'plain' run as teacher")
            teacher = self.teacher_config()
            if teacher.method != "plain":
                raise ValueError("config field 'teacher': the teacher must be a 'plain' run")
            if teacher.dataset.lower() != self.dataset.lower() or teacher.model != self.model:
                raise ValueError(
                    f"config field 'teacher': teacher is {teacher.model} on {teacher.dataset}, "
                    f"student is {self.model} on {self.dataset}; they must match"
                )

    # --- identity --------------------------------------------------------------------------
    @property
    def family(self) -> str:
        return FAMILIES[self.model]

    def teacher_config(self) -> "DistilEConfig":
        if not self.teacher:
            raise ValueError("config field 'teacher' is empty: only method 'ds' has a teacher")
        return DistilEConfig.from_dict(self.teacher)

    def stage(self, epoch: int) -> int:
        """Distillation stage (1 or 2) of a 1-based epoch; 0 for plain runs."""
        if self.method != "ds":
            return 0
        return 1 if epoch <= self.stage1_epochs else 2

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def identity(self) -> dict:
        data = self.to_dict()
        if self.method != "ds":
            for name in DS_FIELDS:
                data.pop(name)
        else:
            data["teacher"] = self.teacher_config().identity()
        return data

    def config_hash(self) -> str:
        return stable_hash(self.identity())

    def run_name(self) -> str:
        return f"distile-{self.method}-{self.dataset}-{self.model}-d{self.dim}-s{self.seed}-{self.config_hash()}"

    def replace(self, **changes) -> "DistilEConfig":
        return dataclasses.replace(self, **changes)

    def ablation(self, name: str) -> "DistilEConfig":
        """Table 6 variants of a DS config: 'DS' (unchanged), '-S1' (stage 2 only), '-S2' (stage 1 only)."""
        if self.method != "ds":
            raise ValueError("ablations apply to method 'ds' configs")
        if name == "DS":
            return self
        if name == "-S1":
            return self.replace(stage1_epochs=0)
        if name == "-S2":
            return self.replace(stage1_epochs=self.max_epochs)
        raise ValueError(f"unknown ablation {name!r}; choose one of {ABLATIONS}")

    @classmethod
    def from_dict(cls, data: dict) -> "DistilEConfig":
        """Build from a mapping, rejecting unknown keys with the list of valid ones."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown DistilE config field(s) {unknown}; valid fields are {sorted(names)}")
        return cls(**data)
