"""DistilE as an added row of the MetaSD paper's Table 1 (profile section ``distile_in_table1``).

Owns the sizing (:func:`dims_beside_metasd`: a DistilE teacher as large as the MetaSD source, a
student as large as its pruned student) and the row itself (:func:`table1_rows`: teachers and
students trained or reused per dataset and seed, as :class:`~kgdistill.study.profile.NamedRunSpec` rows
for notebook 01). The section's defaults and its load-time check live in :mod:`kgdistill.study.profile`
(:func:`~kgdistill.study.profile.table1_section`); the runs known ahead of training are listed by
:func:`kgdistill.study.distile.planning.table1_planned_runs`. The section's keys:

* ``row``: the table row's label; ``table`` (default ``table1``): whose datasets and seeds;
* ``beside`` (default ``MetaSD``): the recipe whose source / pruned student sizes are matched;
* ``model`` (default ``ComplEx``): the DistilE backbone of teacher and student;
* ``config``: :class:`DistilEConfig` overrides of teacher and student (the teacher, a ``plain``
  run, ignores the distillation fields); ``per_dataset``: overrides per paper dataset;
* ``grid``: as in ``distile:`` (best on validation MRR; ``alpha`` also sets ``beta``).
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from ...core.datasets import KGDataset
from ...core.models import build_model
from ...core.pruning import kept_count
from ...distile.config import DistilEConfig
from ...distile.kge import build_kge
from ...metasd.config import RunConfig
from ..profile import NamedRunSpec, config_for, register_section, trained_on
from ..tables import convergence_mark
from .grid import DistilEStudy

#: the profile section of Table 1's added DistilE row, its keys and defaults
TABLE1_SECTION = "distile_in_table1"
TABLE1_DEFAULTS = {"table": "table1", "beside": "MetaSD", "model": "ComplEx"}
_CONFIG = DistilEConfig.__name__
TABLE1_SCHEMA = {"row": None, "table": None, "beside": None, "model": None, "config": _CONFIG,
                 "per_dataset": {"*": _CONFIG}, "grid": _CONFIG}


def table1_section(profile: dict, key: str = TABLE1_SECTION) -> dict:
    """The profile's ``distile_in_table1`` section with its defaults filled in."""
    if not profile.get(key):
        raise KeyError(f"profile {profile.get('name')} has no section {key!r}")
    block = {**TABLE1_DEFAULTS, **profile[key]}
    if "row" not in block:
        raise ValueError(f"profile {profile.get('name')}: section {key} needs a 'row' label")
    return block


def check_table1_section(profile: dict, key: str = TABLE1_SECTION) -> None:
    """Fail at profile load time, naming the field, when the section cannot make valid configs."""
    block = table1_section(profile, key)
    table = profile["tables"].get(block["table"])
    if table is None:
        raise ValueError(f"profile {profile['name']}: {key}.table {block['table']!r} is not one of tables "
                         f"{sorted(profile['tables'])}")
    unknown = sorted(set(block.get("per_dataset") or {}) - set(table["datasets"]))
    if unknown:
        raise ValueError(
            f"profile {profile['name']}: {key}.per_dataset has {unknown}, not datasets of {block['table']}"
        )
    for ds in table["datasets"]:
        config_for(profile, ds, block["beside"])  # names a bad recipe
        fields = {**(block.get("config") or {}), **((block.get("per_dataset") or {}).get(ds) or {})}
        fields.update({k: v[0] for k, v in (block.get("grid") or {}).items()})
        try:
            DistilEConfig(dataset=trained_on(profile, ds), model=block["model"], dim=1, **fields)
        except (TypeError, ValueError) as err:
            raise ValueError(f"profile {profile['name']}, section {key} on {ds}: {err}") from err


register_section(TABLE1_SECTION, TABLE1_SCHEMA, check_table1_section)


def _dense(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def metasd_sizes(config: RunConfig, n_entities: int, n_relations: int) -> dict[str, int]:
    """Sizes of a MetaSD run's models: ``source``, the dense parameters P of its kbc model
    (``config.model`` at ``config.rank``: N entity rows and 2R relation rows, reciprocals
    included; ComplEx: (N + 2R)·2·rank), and ``student``, the ⌈(1 − γ)·P⌉ non-zero weights its
    pruned student keeps. Built on the meta device: no memory, whatever the rank."""
    with torch.device("meta"):
        source = build_model(config.model, n_entities, n_relations, config.rank)
    dense = _dense(source)
    return {"source": dense, "student": kept_count(dense, config.gamma)}


def kge_dense_size(model: str, n_entities: int, n_relations: int, dim: int) -> int:
    """Dense parameters of a DistilE backbone (:mod:`.kge` layout: R relation rows, no
    reciprocals; ComplEx: (N + R)·2·dim)."""
    with torch.device("meta"):
        return _dense(build_kge(model, n_entities, n_relations, dim))


def dim_within(model: str, n_entities: int, n_relations: int, budget: int) -> int:
    """Largest ``dim`` whose DistilE ``model`` has at most ``budget`` dense parameters."""
    per_dim = kge_dense_size(model, n_entities, n_relations, 1)
    if per_dim > budget:
        raise ValueError(
            f"a {model} of dim 1 on {n_entities} entities / {n_relations} relations has {per_dim} parameters, "
            f"more than the budget {budget}; raise the MetaSD rank or lower gamma in the profile"
        )
    dim = max(1, budget // per_dim)  # every backbone's size is linear in dim; the loops only guard it
    while dim > 1 and kge_dense_size(model, n_entities, n_relations, dim) > budget:
        dim -= 1
    while kge_dense_size(model, n_entities, n_relations, dim + 1) <= budget:
        dim += 1
    return dim


def dims_beside_metasd(config: RunConfig, n_entities: int, n_relations: int, model: str = "ComplEx") -> dict[str, int]:
    """DistilE teacher and student dims sized like a MetaSD run (``config``) on a dataset.

    Returns ``metasd_source`` (P, dense), ``teacher_dim`` (the largest DistilE ``model`` dim with
    at most P parameters) and ``teacher_size``; ``metasd_student`` (⌈(1 − γ)·P⌉ non-zero) and
    ``student_dim`` / ``student_size`` likewise within it. E.g. UMLS (N = 135, R = 46) at rank 32:
    P = 14,528 -> teacher dim 40 (14,480); 1,453 kept -> student dim 4 (1,448).
    """
    sizes = metasd_sizes(config, n_entities, n_relations)
    teacher = dim_within(model, n_entities, n_relations, sizes["source"])
    student = dim_within(model, n_entities, n_relations, sizes["student"])
    return {
        "metasd_source": sizes["source"], "teacher_dim": teacher,
        "teacher_size": kge_dense_size(model, n_entities, n_relations, teacher),
        "metasd_student": sizes["student"], "student_dim": student,
        "student_size": kge_dense_size(model, n_entities, n_relations, student),
    }


@dataclass
class Table1Rows:
    """What :func:`table1_rows` returns: the row's specs (one per dataset and seed), the records
    of every DistilE run behind them (teachers included, for provenance) and the sizing per
    dataset (:func:`dims_beside_metasd` plus the teachers' mean test MRR)."""

    specs: list
    records: dict[str, dict]
    sizes: pd.DataFrame


def table1_study_section(profile: dict, block: dict) -> dict:
    """The ``distile:``-style section a :class:`DistilEStudy` runs the Table-1 row from."""
    datasets = profile["tables"][block["table"]]["datasets"]
    return {"datasets": {ds: trained_on(profile, ds) for ds in datasets},
            "config": dict(block.get("config") or {}), "grid": dict(block.get("grid") or {})}


def table1_seeds(profile: dict, block: dict, paper_dataset: str, data: KGDataset):
    """Per seed of the profile: ``(seed, dims, fields)`` - the sizes beside the ``beside`` recipe
    (:func:`dims_beside_metasd`) and the DistilE field overrides of teacher and student."""
    overrides = dict((block.get("per_dataset") or {}).get(paper_dataset) or {})
    for seed in map(int, profile["seeds"]):
        metasd = config_for(profile, paper_dataset, block["beside"], seed)
        yield (seed, dims_beside_metasd(metasd, data.n_entities, data.n_relations, block["model"]),
               {**overrides, "seed": seed})


def table1_distilled(runner: DistilEStudy, block: dict, paper_dataset: str, dims: dict, fields: dict):
    """The row's student for one dataset and seed (and, through it, its teacher) from ``runner``."""
    return runner.distilled(paper_dataset, block["model"], dims["student_dim"], teacher_dim=dims["teacher_dim"],
                            teacher_extra=fields, **fields)


def table1_rows(study, key: str = TABLE1_SECTION) -> Table1Rows:
    """Train (or reuse) DistilE beside MetaSD for every dataset and seed of the section's table.

    ``study`` is a :class:`kgdistill.study.Study`. Per paper dataset and seed: the ``beside``
    recipe's RunConfig gives the sizes (:func:`dims_beside_metasd`), a plain ``model`` teacher
    of ``teacher_dim`` is trained with that seed, then a two-stage DistilE student of
    ``student_dim`` (the ``grid``'s best on validation MRR, as in :class:`DistilEStudy`).
    """
    profile = study.profile
    block = table1_section(profile, key)
    datasets = profile["tables"][block["table"]]["datasets"]
    section = table1_study_section(profile, block)
    runner = DistilEStudy(section, study.runs_dir, study.data_dir, study.device, study.show_progress,
                          study.retrain_since, required_env=study.required_env)
    specs, sizes = [], []
    for ds in datasets:
        data = study.dataset(section["datasets"][ds])
        runner._datasets[section["datasets"][ds]] = data
        dims, teacher_mrr, teachers = None, [], []
        for seed, dims, fields in table1_seeds(profile, block, ds, data):
            config, _ = table1_distilled(runner, block, ds, dims, fields)
            teacher = runner.records[config.teacher_config().run_name()]
            teacher_mrr.append(teacher["test"][teacher["selected_model"]]["all"]["MRR"])
            teachers.append(teacher)
            specs.append(NamedRunSpec(block["row"], ds, seed, config.run_name()))
        sizes.append({
            "": ds, "trained on": section["datasets"][ds], "MetaSD source P": dims["metasd_source"],
            "teacher dim": dims["teacher_dim"], "teacher size": dims["teacher_size"],
            "MetaSD student nonzero": dims["metasd_student"], "student dim": dims["student_dim"],
            "student size": dims["student_size"], "teacher test MRR": sum(teacher_mrr) / len(teacher_mrr),
            "teacher converged": convergence_mark(teachers),  # † on a teacher that hit its epoch budget
        })
    frame = pd.DataFrame(sizes).set_index("").rename_axis(None)
    return Table1Rows(specs, dict(runner.records), frame)
