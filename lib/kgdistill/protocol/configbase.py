"""The protocol every run configuration follows, whichever paper family it belongs to.

A config is a frozen dataclass whose fields determine a run's numbers. :class:`ConfigBase` gives
both families (:class:`kgdistill.metasd.config.RunConfig`, :class:`kgdistill.distile.config.DistilEConfig`)
the same behaviour:

* validation from a table of field rules (:attr:`ConfigBase.FIELD_RULES`, checked in order, each
  error naming the field and the fix) plus the family's cross-field checks (:meth:`check`);
* serialisation (``to_dict`` / ``from_dict``; an unknown key is an error naming the closest
  valid field);
* identity: ``identity()`` is ``to_dict()`` less the fields the run ignores
  (:meth:`ignored_fields`) and less the *late fields* (:data:`LATE_FIELDS`) while they hold their
  default, so a field added after records existed leaves those records' hashes unchanged;
* the convergence rule shared by every trainer (``patience``, ``min_delta``; see
  :func:`kgdistill.protocol.loop.fit`).
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable

from ..core.datasets import ARCHIVES
from ..core.evaluation import TIE_POLICIES
from ..core.records import stable_hash

#: A field rule: ``rule(value) -> None`` when fine, else the complaint (``"must be > 0"``).
Rule = Callable[[Any], "str | None"]


def choice(values: Iterable[str]) -> Rule:
    """The value must be one of ``values``."""
    options = tuple(values)
    return lambda v: None if v in options else f"{v!r} is not one of {sorted(options)}; choose one of them"


def positive_int() -> Rule:
    return lambda v: None if int(v) > 0 else f"must be a positive integer, got {v!r}"


def positive() -> Rule:
    return lambda v: None if float(v) > 0 else f"must be > 0, got {v!r}"


def non_negative() -> Rule:
    return lambda v: None if float(v) >= 0 else f"must be >= 0, got {v!r}"


def within(low: float, high: float, low_open: bool = False, high_open: bool = False, what: str = "") -> Rule:
    """``low <= v <= high`` (``low_open``/``high_open`` make a side strict)."""
    left, right = "(" if low_open else "[", ")" if high_open else "]"

    def rule(v):
        x = float(v)
        ok = (x > low if low_open else x >= low) and (x < high if high_open else x <= high)
        return None if ok else f"{what}must be in {left}{low:g}, {high:g}{right}, got {v!r}"

    return rule


def optional(rule: Rule) -> Rule:
    """``None`` passes (the family fills a default); anything else must pass ``rule``."""
    return lambda v: None if v is None else rule(v)


def closest_name(name: str, valid: Iterable[str]) -> str | None:
    """The valid name most like ``name`` (for "did you mean" messages), or None."""
    matches = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=0.5)
    return matches[0] if matches else None


def unknown_keys_message(unknown: Iterable[str], valid: Iterable[str], what: str = "config field") -> str:
    """``unknown config field(s) ['rnak'] (did you mean 'rank'?); valid fields are [...]``."""
    unknown, valid = sorted(unknown), sorted(valid)
    hints = [f"{u!r} -> {closest_name(u, valid)!r}" for u in unknown if closest_name(u, valid)]
    hint = f" (did you mean {', '.join(hints)}?)" if hints else ""
    return f"unknown {what}(s) {unknown}{hint}; valid names are {valid}"


def _without_late_defaults(data: dict, late: dict[str, Any]) -> dict:
    """``data`` less the late fields at their default, also inside a nested ``teacher`` config."""
    out = {k: v for k, v in data.items() if not (k in late and _same(v, late[k]))}
    if isinstance(out.get("teacher"), dict):
        out["teacher"] = _without_late_defaults(out["teacher"], late)
    return out


def _same(value: Any, default: Any) -> bool:
    """Equality that treats a list read from JSON/YAML like the tuple default it stands for."""
    if isinstance(default, tuple) and isinstance(value, list):
        value = tuple(value)
    return value == default


PRECISIONS = ("auto", "fp32", "tf32", "bf16")


def resolve_precision(precision: str, device_type: str) -> str:
    """The precision a run actually uses on a device type: "auto" is tf32 on CUDA, fp32 elsewhere;
    tf32 exists only on CUDA (fp32 elsewhere)."""
    if precision == "auto" or (precision == "tf32" and device_type != "cuda"):
        return "tf32" if device_type == "cuda" else "fp32"
    return precision


@dataclass(frozen=True)
class ConfigBase:
    """Base of every run configuration (see the module docstring)."""

    #: seeds torch's initialisation, the shuffling/negative-sampling generator and the quiz draw
    seed: int = 0
    #: rank of the answer among equal scores: "pessimistic" (after all ties, as the official
    #: MetaSD code), "optimistic", "realistic" (the mean)
    tie_policy: str = "pessimistic"
    #: Stop when validation MRR has not improved by at least ``min_delta`` for ``patience``
    #: evaluations in a row; 0 trains the whole ``max_epochs`` budget. Records state whether
    #: the plateau was reached (``converged``) and the stopping epoch.
    patience: int = 0
    #: smallest validation-MRR gain (absolute) that counts as an improvement for ``patience``
    min_delta: float = 0.0

    #: record test metrics at every evaluation too (``history[i]["test"]``), to measure what
    #: selecting on test would have picked (:mod:`kgdistill.study.official.selection`); selection stays on validation
    test_history: bool = False
    #: arithmetic of the training steps: "fp32"; "tf32" (CUDA matmuls in TF32); "bf16" (autocast
    #: for the score products; log-softmax, losses, optimizer and MetaSD's meta-gradient in fp32);
    #: "auto" = tf32 on CUDA, fp32 on CPU. Evaluation always runs in fp32 (tf32 on CUDA).
    precision: str = "auto"

    #: ``{field: rule}`` checked in order by :meth:`validate`; subclasses extend it
    #: (the rules of the fields every family has: data, loop, evaluation, convergence)
    FIELD_RULES: ClassVar[dict[str, Rule]] = {
        "dataset": lambda v: None if str(v).lower() in {k.lower() for k in ARCHIVES}
        else f"unknown dataset {v!r}; choose one of {sorted(ARCHIVES)}",
        "tie_policy": choice(TIE_POLICIES),
        **{name: positive_int() for name in ("batch_size", "max_epochs", "eval_every", "eval_batch_size")},
        "learning_rate": positive(),
        "patience": non_negative(),
        "min_delta": non_negative(),
        "test_history": choice((True, False)),
        "precision": choice(PRECISIONS),
    }
    #: Fields added after records existed, with their defaults: left out of the identity while at
    #: their default, so adding one never changes an existing record's hash. Subclasses extend it.
    LATE_FIELDS: ClassVar[dict[str, Any]] = {
        "patience": 0, "min_delta": 0.0, "test_history": False, "precision": "auto"
    }
    #: which paper family the config belongs to ("metasd" or "distile"), stored in records
    PAPER: ClassVar[str] = "base"

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # YAML/JSON give lists where a field holds a tuple
            if isinstance(f.default, tuple) and isinstance(getattr(self, f.name), list):
                object.__setattr__(self, f.name, tuple(getattr(self, f.name)))
        self.validate()

    # --- validation ------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field and how to fix it."""
        for name, rule in self.FIELD_RULES.items():
            problem = rule(getattr(self, name))
            if problem:
                raise ValueError(f"config field {name!r}: {problem}")
        self.check()

    def check(self) -> None:
        """Cross-field checks of the family (e.g. a KD run needs a teacher)."""

    # --- serialisation and identity ----------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def ignored_fields(self) -> tuple[str, ...]:
        """Fields this run's method ignores (left out of its identity)."""
        return ()

    def identity(self) -> dict:
        """The fields that define the run: everything but ignored fields and late fields at their default."""
        data = self.to_dict()
        for name in self.ignored_fields():
            data.pop(name, None)
        return _without_late_defaults(data, self.LATE_FIELDS)

    def config_hash(self) -> str:
        return stable_hash(self.identity())

    def run_name(self) -> str:
        raise NotImplementedError

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def teacher_config(self) -> "ConfigBase | None":
        """The config of the finished run this one learns from (KD, DistilE ``ds``), else None."""
        return None

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: dict):
        """Build from a mapping, rejecting unknown keys with the closest valid name."""
        names = cls.field_names()
        unknown = set(data) - set(names)
        if unknown:
            raise ValueError(unknown_keys_message(unknown, names, what=f"{cls.__name__} field"))
        return cls(**data)
