"""DistilE run configuration: frozen, validated, hashed — the single source of DistilE defaults."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ..protocol.configbase import ConfigBase, Rule, choice, non_negative, optional, positive_int, within
from .kge import LOSS_KINDS
from .losses import WEIGHTINGS

#: "plain": the backbone alone on its hard loss (teachers and the "no-DS" students);
#: "ds": a student distilled from ``teacher`` in two stages (Eqs. 5 and 11).
DISTILE_METHODS = ("plain", "ds")
#: paper defaults per backbone: margin γ, negatives per positive (Implementation details)
MARGINS = {"TransE": 1.0, "TransH": 0.5, "ComplEx": 0.0, "RotatE": 6.0}
NEGATIVES = {"TransE": 5, "TransH": 5, "ComplEx": 25, "RotatE": 25}
#: fields only a distilled run uses (left out of a plain run's hash)
DS_FIELDS = ("alpha", "beta", "stage1_epochs", "teacher")
#: ablations of Table 6 as stage-1 lengths: DS keeps the configured switch, −S1 starts in
#: stage 2 from a random student, −S2 never leaves stage 1.
ABLATIONS = ("DS", "-S1", "-S2")


@dataclass(frozen=True)
class DistilEConfig(ConfigBase):
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

    FIELD_RULES: ClassVar[dict[str, Rule]] = {
        "model": choice(LOSS_KINDS),
        "method": choice(DISTILE_METHODS),
        "weighting": choice(WEIGHTINGS),
        "dim": positive_int(),
        "lr_patience": positive_int(),
        "negatives": optional(positive_int()),
        "epsilon": non_negative(),
        "soft_c": non_negative(),
        "margin": optional(non_negative()),
        "lr_decay": within(0.0, 1.0, low_open=True),
        "alpha": within(0.0, 1.0),
        "beta": within(0.0, 1.0),
        **ConfigBase.FIELD_RULES,
    }
    PAPER: ClassVar[str] = "distile"

    def check(self) -> None:
        if self.stage1_epochs is not None and not 0 <= int(self.stage1_epochs) <= int(self.max_epochs):
            raise ValueError(
                f"config field 'stage1_epochs' must be in [0, max_epochs={self.max_epochs}], got {self.stage1_epochs!r}"
            )
        if self.method == "ds":
            if not self.teacher:
                raise ValueError(
                    "config field 'teacher': method 'ds' needs the config (dict) of a 'plain' run as teacher"
                )
            teacher = DistilEConfig.from_dict(self.teacher)
            if teacher.method != "plain":
                raise ValueError("config field 'teacher': the teacher must be a 'plain' run")
            if teacher.dataset.lower() != self.dataset.lower() or teacher.model != self.model:
                raise ValueError(
                    f"config field 'teacher': teacher is {teacher.model} on {teacher.dataset}, "
                    f"student is {self.model} on {self.dataset}; they must match"
                )

    # --- identity --------------------------------------------------------------------------
    @property
    def loss_kind(self) -> str:
        return LOSS_KINDS[self.model]

    def teacher_config(self) -> "DistilEConfig | None":
        """The ``plain`` run a ``ds`` run distils from; None for plain runs."""
        return DistilEConfig.from_dict(self.teacher) if self.method == "ds" and self.teacher else None

    def stage(self, epoch: int) -> int:
        """Distillation stage (1 or 2) of a 1-based epoch; 0 for plain runs."""
        if self.method != "ds":
            return 0
        return 1 if epoch <= self.stage1_epochs else 2

    def ignored_fields(self) -> tuple[str, ...]:
        return () if self.method == "ds" else DS_FIELDS

    def identity(self) -> dict:
        data = super().identity()
        if self.method == "ds":
            data["teacher"] = self.teacher_config().identity()
        return data

    def run_name(self) -> str:
        return f"distile-{self.method}-{self.dataset}-{self.model}-d{self.dim}-s{self.seed}-{self.config_hash()}"

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
