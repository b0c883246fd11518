"""The family registry: what the runner needs to know about each family of runs, by config class.

A *family* is one paper's kind of run: ``metasd`` (:class:`~kgdistill.metasd.config.RunConfig`:
baselines, KD, DML, MetaSD, its ablations, prune + fine-tune) and ``distile``
(:class:`~kgdistill.distile.config.DistilEConfig`). Each method package registers its
:class:`Family` when it is imported (``import kgdistill`` imports both), so the protocol layer
never imports a method: the runner asks :func:`family_of` instead of testing config types.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..core.datasets import KGDataset
from ..core.models import load_module_state
from .configbase import ConfigBase
from .loop import TrainerBase

#: ``(config, dataset, device, teacher_state) -> trainer`` (seed torch before calling)
TrainerFactory = Callable[[ConfigBase, KGDataset, torch.device, "dict | None"], TrainerBase]
#: ``(config, dataset, model name, dim or None) -> a freshly initialised module`` of that model of the run
ModelBuilder = Callable[[ConfigBase, KGDataset, str, "int | None"], torch.nn.Module]
#: ``(config, dataset, teacher record or None) -> (test subsets, extra record fields)``
RecordOutputs = Callable[[ConfigBase, KGDataset, "dict | None"], "tuple[dict, dict]"]


@dataclass(frozen=True)
class Family:
    """One family of runs.

    ``name`` is what a record states as ``family``; ``run_prefix`` how its run names start
    (records older than the ``family`` field are recognised by it); ``make_trainer`` builds the
    trainer of a config's method; ``build_model`` one model of a run (``"teacher"``, ``"student"``,
    ... at a rank or dim read from its record) before its weights are loaded; ``record_outputs``
    the test subsets (``{"all": None, name: test-triple mask}``) and extra record fields.
    """

    name: str
    config_class: type[ConfigBase]
    run_prefix: str
    make_trainer: TrainerFactory
    build_model: ModelBuilder
    record_outputs: RecordOutputs


FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add ``family`` (once per name; registering the same class again replaces it)."""
    FAMILIES[family.name] = family
    return family


def family_of(config: ConfigBase) -> Family:
    """The family whose config class ``config`` is an instance of."""
    for family in FAMILIES.values():
        if isinstance(config, family.config_class):
            return family
    known = ", ".join(f.config_class.__name__ for f in FAMILIES.values()) or "none (import kgdistill first)"
    raise TypeError(f"no run family for {type(config).__name__}; registered config classes: {known}")


def family_named(name: str) -> Family:
    """The family a record names (``record["family"]``)."""
    if name not in FAMILIES:
        raise KeyError(f"unknown run family {name!r}; registered: {sorted(FAMILIES)} (import kgdistill first)")
    return FAMILIES[name]


def family_of_record(record: dict) -> Family:
    """The family of a record: its ``family`` field, else (older records) its run name's prefix."""
    if record.get("family"):
        return family_named(record["family"])
    for family in FAMILIES.values():
        if family.run_prefix and record["run_name"].startswith(family.run_prefix):
            return family
    return family_named("metasd")


def model_from_state(config: ConfigBase, dataset: KGDataset, state: dict, model: str, dim: int | None = None,
                     ) -> torch.nn.Module:
    """Model ``model`` of the run ``config`` (at ``dim``: a record's rank or dim of it, default the
    config's) with the trained weights ``state`` loaded (pruning masks included)."""
    module = family_of(config).build_model(config, dataset, model, dim)
    load_module_state(module, state)
    return module
