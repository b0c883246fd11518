"""Which DistilE runs the notebooks will ask for, known before any is trained.

Owns :class:`_RunPlanner` (a :class:`~kgdistill.study.distile.grid.DistilEStudy` whose ``_run`` notes
the config instead of training, so the experiments themselves stay the one list of their runs),
:func:`distile_planned_runs` (notebook 06) and :func:`table1_planned_runs` (Table 1's added DistilE row).
:mod:`kgdistill.study.plan` puts them in the profile's run plan; a section with a ``grid`` has no plan
(which teacher a student gets is decided by training).
"""
from __future__ import annotations

from ...core.datasets import load_dataset
from ...distile.config import DistilEConfig
from .grid import DISTILE_METRICS, DistilEStudy
from .in_table1 import TABLE1_SECTION, table1_distilled, table1_section, table1_seeds, table1_study_section


class _RunPlanner(DistilEStudy):
    """Walks the experiments without training: ``_run`` notes each config (and the experiment
    that asked for it) and answers with an empty record, so the experiments themselves stay the
    one list of the runs they need."""

    def __init__(self, section: dict):
        super().__init__(section, runs_dir=".")
        self.experiment = ""
        self.planned: dict[str, tuple[DistilEConfig, list[str]]] = {}

    def base_seed(self, config: DistilEConfig) -> int:
        """The seed of the section's own runs of ``config``'s dataset and backbone (0 unless set)."""
        paper = next((p for p, used in self.section["datasets"].items() if used.lower() == config.dataset.lower()),
                     None)
        return int(self.fields(paper, config.model).get("seed", 0)) if paper else 0

    def _run(self, config: DistilEConfig) -> dict:
        if config.method == "ds":
            self._run(config.teacher_config())
        users = self.planned.setdefault(config.run_name(), (config, []))[1]
        # a tie_seeds run of another seed than the section's: "Table 3 seed 1" (--match "Table 3" finds it)
        experiment = self.experiment
        if config.seed != self.base_seed(config):
            experiment += f" seed {config.seed}"
        if experiment not in users:
            users.append(experiment)
        empty = {"all": dict.fromkeys(DISTILE_METRICS, float("nan"))}
        return {"run_name": config.run_name(), "best_valid_mrr": 0.0, "history": [],
                "selected_model": "student" if config.method == "ds" else "model",
                "test": {"model": empty, "student": empty}}


def distile_planned_runs(section: dict) -> list[tuple[DistilEConfig, list[str]]]:
    """Every run of notebook 06's experiments for a profile's ``distile:`` section, with the
    experiments that use it (``"Table 3"``, ``"Table 4"``, ``"Table 6"``, ``"Figure 2"``,
    ``"Figure 3"``; ``"Table 3 seed 1"`` for a ``tie_seeds`` run of another seed), plain runs
    (teachers) first; [] when the section has a ``grid`` (which teacher a
    student gets is then decided by training). ``scripts/train_runs.py`` trains them ahead of the
    notebook, in several processes."""
    if any((section.get("grid") or {}).values()):
        return []
    planner = _RunPlanner(section)
    tables = {"WN18RR": "Table 3", "FB15k-237": "Table 4"}  # the DistilE paper's numbering
    for paper_dataset in section["datasets"]:
        planner.experiment = tables.get(paper_dataset, f"link prediction {paper_dataset}")
        planner.link_prediction(paper_dataset)
    for experiment, walk in (("Table 6", planner.ablation), ("Figure 2", planner.teacher_dimensions),
                             ("Figure 3", planner.curves)):
        planner.experiment = experiment
        walk()
    runs = list(planner.planned.values())
    return [r for r in runs if r[0].method == "plain"] + [r for r in runs if r[0].method != "plain"]


def table1_planned_runs(
    profile: dict, load=load_dataset, key: str = TABLE1_SECTION
) -> list[tuple[str, str, DistilEConfig]]:
    """The Table-1 row's DistilE runs known before any is trained, as ``(paper dataset, role, config)``
    with role ``"teacher"`` or ``"student"``, teachers first; the configs :func:`table1_rows` trains
    (it walks the same steps with a :class:`_RunPlanner`, which trains nothing).

    Only a section without a ``grid`` has them: with a grid, the student's teacher is the best
    of teacher runs by validation MRR, known only once they are trained. Then this returns [] and
    the row trains inside notebook 01. ``load(name)`` gives a dataset (its entity and relation
    counts size the models)."""
    if not profile.get(key):
        return []
    block = table1_section(profile, key)
    section = table1_study_section(profile, block)
    if any(section["grid"].values()):
        return []
    planner = _RunPlanner(section)
    teachers, students = [], []
    for ds in profile["tables"][block["table"]]["datasets"]:
        data = load(section["datasets"][ds])
        for _, dims, fields in table1_seeds(profile, block, ds, data):
            student, _ = table1_distilled(planner, block, ds, dims, fields)
            teachers.append((ds, "teacher", student.teacher_config()))
            students.append((ds, "student", student))
    return teachers + students
