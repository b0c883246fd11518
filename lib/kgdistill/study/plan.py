"""The run plan of a profile: every run its notebooks read, known before any is trained.

:func:`planned_runs` lists, teachers first, the runs of Tables 1-4, Figure 1 and the footprint
(``all_specs``), the teacher and student of Table 1's added DistilE row
(:func:`kgdistill.study.distile.planning.table1_planned_runs`) and notebook 06's DistilE runs
(:func:`kgdistill.study.distile.planning.planned_runs`) and notebook 08's equal-size runs
(:func:`kgdistill.study.equal_size.section_runs`) and notebook 07's runs
(:func:`kgdistill.study.official.official_specs`, rows ``notebook 07 <dataset>: <recipe label>``). DistilE runs
picked by a grid search (a section with a ``grid``) depend on earlier results: they are not in the plan and train
inside their notebooks. :mod:`kgdistill.study.queue` trains the plan (``scripts/train_runs.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Union

from ..core.datasets import KGDataset, load_dataset
from ..distile.config import DistilEConfig
from ..metasd.config import RunConfig
from .distile.planning import distile_planned_runs, table1_planned_runs
from .equal_size import EQUAL_SIZE_SECTION, section_runs, sizes_from_stats
from .official import official_specs
from .profile import all_specs, published

Config = Union[RunConfig, DistilEConfig]

#: methods whose run trains one model from the data alone; they may be teachers of other runs,
#: so they are planned (and trained) first
STANDALONE_METHODS = ("baseline", "plain")
#: the group labels of the DistilE runs (``PlannedRun.group``); MetaSD-paper runs carry their recipe
DISTILE_IN_TABLE1 = "DistilE in Table 1"
DISTILE_NOTEBOOK = "DistilE notebook 06"
#: the group label of notebook 08's runs (``--match "equal size"`` selects them)
EQUAL_SIZE = "equal size (notebook 08)"
#: the prefix of notebook 07's rows (``--match "notebook 07"`` selects its runs)
OFFICIAL_ROW = "notebook 07"


@dataclass(frozen=True)
class PlannedRun:
    """One run of the plan: its config, the paper dataset it stands for (the smoke profile trains
    stand-ins), its group (the MetaSD recipe, or :data:`DISTILE_IN_TABLE1` /
    :data:`DISTILE_NOTEBOOK`) and the table rows / figure curves that read it, sorted."""

    config: Config
    paper_dataset: str
    group: str
    rows: tuple[str, ...]

    @property
    def name(self) -> str:
        """The run's folder name (its config hash included)."""
        return self.config.run_name()

    @property
    def standalone(self) -> bool:
        """Trains from the data alone (a possible teacher), see :data:`STANDALONE_METHODS`."""
        return self.config.method in STANDALONE_METHODS

    def matches(self, patterns: Iterable[str]) -> bool:
        """Whether one of ``patterns`` is part of its name, group, paper dataset or a row."""
        texts = (self.name, self.group, self.paper_dataset, *self.rows)
        return any(pattern in text for pattern in patterns for text in texts)


def planned_runs(profile: dict, load: Callable[[str], KGDataset] = load_dataset) -> list[PlannedRun]:
    """Every run of ``profile`` (a loaded profile) known before training, standalone runs
    (teachers) first, each once. ``load(name)`` gives a dataset: its entity and relation counts
    size the Table-1 DistilE row."""
    entries: dict[str, dict] = {}  # run name -> fields; insertion order = first appearance
    for spec in all_specs(profile):
        config = spec.config
        entry = entries.setdefault(config.run_name(),
                                   {"config": config, "rows": set(), "paper_dataset": spec.paper_dataset})
        entry["rows"].add(spec.row)
        entry["group"] = spec.recipe
    # DistilE runs: a later mention of a run replaces an earlier one (keeping its place)
    distile_row = (profile.get("distile_in_table1") or {}).get("row", "DistilE")
    for paper_dataset, role, config in table1_planned_runs(profile, load):
        entries[config.run_name()] = {"config": config, "paper_dataset": paper_dataset, "group": DISTILE_IN_TABLE1,
                                      "rows": {distile_row if role == "student" else f"DistilE {role}"}}
    if profile.get("distile"):
        section = profile["distile"]
        paper_name = {used.lower(): paper for paper, used in section["datasets"].items()}
        teacher_dims = {section.get("teacher_dim"), *(section.get("teacher_dims") or ())}
        for config, used in distile_planned_runs(section):
            entries[config.run_name()] = {"config": config, "paper_dataset": paper_name[config.dataset.lower()],
                                          "group": DISTILE_NOTEBOOK, "rows": {_distile_row(config, used, teacher_dims)}}
    if profile.get(EQUAL_SIZE_SECTION):  # a run another section already plans keeps its group and rows
        taken = set(entries)
        sizes = sizes_from_stats(published("datasets", "stats"))
        for run in section_runs(profile[EQUAL_SIZE_SECTION], sizes):
            name = run.config.run_name()
            if name not in taken:
                entry = entries.setdefault(name, {"config": run.config, "paper_dataset": run.dataset,
                                                  "group": EQUAL_SIZE, "rows": set()})
                entry["rows"].add(run.label)
    for spec in official_specs(profile):  # notebook 07; --match "notebook 07" selects them
        config = spec.config
        entry = entries.setdefault(config.run_name(), {"config": config, "rows": set(),
                                                       "paper_dataset": spec.paper_dataset, "group": spec.recipe})
        entry["rows"].add(f"{OFFICIAL_ROW} {spec.paper_dataset}: {spec.row}")
    runs = [PlannedRun(e["config"], e["paper_dataset"], e["group"], tuple(sorted(e["rows"]))) for e in entries.values()]
    # teachers first: a KD or DistilE student then finds its teacher trained (or in training)
    return sorted(runs, key=lambda run: not run.standalone)


def _distile_row(config: DistilEConfig, used: list[str], teacher_dims=None) -> str:
    """How notebook 06 uses a run, e.g. ``"TransE d8 student of d64 -S1 (Table 6)"``; a plain run is
    a ``teacher`` at one of ``teacher_dims`` (all plain runs without them), else the ``no-DS`` student."""
    if config.method == "plain":
        role = "teacher" if teacher_dims is None or config.dim in teacher_dims else "no-DS"
    else:
        role = f"student of d{config.teacher['dim']}"
    if config.method == "ds" and config.stage1_epochs in (0, config.max_epochs):  # Table 6 ablations
        role += " -S1" if config.stage1_epochs == 0 else " -S2"
    return f"{config.model} d{config.dim} {role} ({', '.join(used)})"


def matching(runs: Iterable[PlannedRun], patterns: Iterable[str] | None) -> list[PlannedRun]:
    """The runs that match one of ``patterns`` (all of them when there is none)."""
    patterns = list(patterns or [])
    return [run for run in runs if not patterns or run.matches(patterns)]
