"""The DistilE study grid driven by a profile's ``distile:`` section (params/<profile>.yaml).

The section (see params/*.yaml for the documented values) holds:

* ``datasets``: paper dataset -> dataset actually used (smoke: UMLS for WN18RR, Kinship for FB15k-237),
* ``models``, ``teacher_dim``, ``student_dims``, ``teacher_dims`` (Figure 2),
* ``config``: :class:`DistilEConfig` overrides shared by every run; ``per_model``: overrides per backbone,
* ``grid``: lists of values tried per field (e.g. ``learning_rate``, ``alpha``); every combination is
  trained and the one with the best *validation* MRR is reported (``alpha`` also sets ``beta``,
  as the paper searches {α, β} in one set). Plain runs ignore the distillation fields of the grid.
* ``ablation``, ``figure2``, ``figure3``, ``timing``: what those experiments run on.

Every method returns plain rows (dicts) of measured numbers; :func:`compare` puts them beside the
paper's (``kgdistill.study.published("distile", ...)``, i.e. ``kgdistill/published.yaml``).

A profile's ``distile_in_table1:`` section adds DistilE as a row of the MetaSD paper's Table 1
(notebook 01; not a row of that paper): :func:`dims_beside_metasd` sizes a DistilE teacher like
the MetaSD source and a DistilE student like the pruned MetaSD student, :func:`table1_rows`
trains (or reuses) them. Its keys:

* ``row``: the table row's label; ``table`` (default ``table1``): whose datasets and seeds;
* ``beside`` (default ``MetaSD``): the recipe whose source / pruned student sizes are matched;
* ``model`` (default ``ComplEx``): the DistilE backbone of teacher and student;
* ``config``: :class:`DistilEConfig` overrides of teacher and student (the teacher, a ``plain``
  run, ignores the distillation fields); ``per_dataset``: overrides per paper dataset;
* ``grid``: as in ``distile:`` (best on validation MRR; ``alpha`` also sets ``beta``).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from ..config import RunConfig
from ..datasets import KGDataset, load_dataset
from ..models import build_model
from ..pruning import kept_count
from ..records import pick_device
from .config import DS_FIELDS, DistilEConfig
from .kge import build_kge
from .timing import inference_table
from ..runner import RECORD, run, run_dir_for


METRICS = ("MRR", "H@10", "H@3", "H@1")
#: the paper's dimensions, matched by position with a profile's teacher_dim / student_dims
PAPER_TEACHER_DIM, PAPER_STUDENT_DIMS = 64, (32, 16, 8)


class DistilEStudy:
    """Runs (or reuses) the configurations of one profile section in one runs folder."""

    def __init__(self, section: dict, runs_dir: str | Path, data_dir: str | Path | None = None,
                 device: str = "auto", show_progress: bool = False, retrain_since: float | None = None):
        self.section, self.runs_dir, self.data_dir = section, Path(runs_dir), data_dir
        self.device, self.show_progress, self.retrain_since = device, show_progress, retrain_since
        self._datasets: dict[str, KGDataset] = {}
        #: every record obtained, by run name (for provenance stamps)
        self.records: dict[str, dict] = {}

    @classmethod
    def from_study(cls, study) -> "DistilEStudy":
        """From a :class:`kgdistill.study.Study` (its profile's ``distile`` section, runs folder, device)."""
        return cls(study.section("distile"), study.runs_dir, study.data_dir, study.device, study.show_progress,
                   study.retrain_since)

    # --- plumbing --------------------------------------------------------------------------
    def dataset(self, paper_dataset: str) -> KGDataset:
        name = self.section["datasets"][paper_dataset]
        if name not in self._datasets:
            self._datasets[name] = load_dataset(name, self.data_dir)
        return self._datasets[name]

    def _run(self, config: DistilEConfig) -> dict:
        if config.method == "ds":  # the teacher first, so that it too obeys retrain_since
            self._run(config.teacher_config())
        path = run_dir_for(config, self.runs_dir) / RECORD
        force = self.retrain_since is not None and path.exists() and path.stat().st_mtime < self.retrain_since
        force = force and config.run_name() not in self.records  # retrain once per study
        record = run(config, self.runs_dir, data_dir=self.data_dir, device=self.device,
                             show_progress=self.show_progress, dataset=self.dataset_for(config), force=force)
        self.records[config.run_name()] = record
        return record

    def dataset_for(self, config: DistilEConfig) -> KGDataset:
        for paper, name in self.section["datasets"].items():
            if name.lower() == config.dataset.lower():
                return self.dataset(paper)
        return load_dataset(config.dataset, self.data_dir)

    def _candidates(self, paper_dataset: str, model: str, dim: int, method: str, **extra) -> list[DistilEConfig]:
        base = dict(self.section.get("config", {}))
        base.update(self.section.get("per_model", {}).get(model, {}))
        base.update(extra)
        grid = dict(self.section.get("grid", {}))
        if method != "ds":
            grid = {k: v for k, v in grid.items() if k not in DS_FIELDS}
        names = sorted(grid)
        configs = []
        for values in itertools.product(*(grid[n] for n in names)) if names else [()]:
            fields = {**base, **dict(zip(names, values))}
            if method == "ds" and "alpha" in grid and "beta" not in grid:
                fields["beta"] = fields["alpha"]
            if method != "ds":
                fields = {k: v for k, v in fields.items() if k not in DS_FIELDS}
            configs.append(DistilEConfig(dataset=self.section["datasets"][paper_dataset], model=model, dim=dim,
                                         method=method, **fields))
        return configs

    def best(self, configs: list[DistilEConfig]) -> tuple[DistilEConfig, dict]:
        """Train every candidate; return the one with the best validation MRR (first on ties)."""
        scored = [(c, self._run(c)) for c in configs]
        return max(scored, key=lambda pair: pair[1]["best_valid_mrr"])

    # --- runs ------------------------------------------------------------------------------
    def plain(self, paper_dataset: str, model: str, dim: int, **extra) -> tuple[DistilEConfig, dict]:
        """Teacher or no-DS student: the backbone on its hard loss, best of the grid."""
        return self.best(self._candidates(paper_dataset, model, dim, "plain", **extra))

    def distilled(self, paper_dataset: str, model: str, dim: int, teacher_dim: int | None = None,
                  ablation: str = "DS", teacher_extra: dict | None = None, **extra) -> tuple[DistilEConfig, dict]:
        """DS student (or its ablation) distilled from the best plain teacher of ``teacher_dim``.

        ``extra`` overrides the student's fields, ``teacher_extra`` the teacher's (e.g. its seed)."""
        teacher, _ = self.plain(paper_dataset, model, teacher_dim or self.section["teacher_dim"], **(teacher_extra or {}))
        configs = self._candidates(paper_dataset, model, dim, "ds", teacher=teacher.to_dict(), **extra)
        return self.best([c.ablation(ablation) for c in configs])

    # --- experiments -----------------------------------------------------------------------
    def link_prediction(self, paper_dataset: str) -> list[dict]:
        """Tables 3/4 rows: {model, dim, method (Tea./no-DS/DS), MRR, H@10, H@3, H@1, run}."""
        rows = []
        for model in self.section["models"]:
            _, record = self.plain(paper_dataset, model, self.section["teacher_dim"])
            rows.append(_row(model, self.section["teacher_dim"], "Tea.", record))
            for dim in self.section["student_dims"]:
                rows.append(_row(model, dim, "no-DS", self.plain(paper_dataset, model, dim)[1]))
                rows.append(_row(model, dim, "DS", self.distilled(paper_dataset, model, dim)[1]))
        return rows

    def ablation(self) -> list[dict]:
        """Table 6 rows on the ablation dataset: DS / −S1 / −S2 per model and student dimension."""
        spec = self.section["ablation"]
        rows = []
        for model in spec.get("models", self.section["models"]):
            for dim in self.section["student_dims"]:
                for name in ("DS", "-S1", "-S2"):
                    rows.append(_row(model, dim, name, self.distilled(spec["dataset"], model, dim, ablation=name)[1]))
        return rows

    def teacher_dimensions(self) -> list[dict]:
        """Figure 2 rows: student test MRR for each teacher dimension × student dimension."""
        spec = self.section["figure2"]
        rows = []
        for teacher_dim in self.section["teacher_dims"]:
            for dim in self.section["student_dims"]:
                _, record = self.distilled(spec["dataset"], spec["model"], dim, teacher_dim=teacher_dim)
                rows.append({"teacher_dim": teacher_dim, "student_dim": dim,
                             "MRR": record["test"]["student"]["all"]["MRR"]})
        return rows

    def curves(self) -> dict[str, list[dict]]:
        """Figure 3: per-evaluation validation MRR of a student with ('DS') and without ('no-DS') teacher."""
        spec = self.section["figure3"]
        extra = {"eval_every": spec.get("eval_every", 1)}
        _, plain = self.plain(spec["dataset"], spec["model"], spec["dim"], **extra)
        config, ds = self.distilled(spec["dataset"], spec["model"], spec["dim"], **extra)
        out = {}
        for name, record, model in (("no-DS", plain, "model"), ("DS", ds, "student")):
            out[name] = [{"epoch": h["epoch"], "stage": h["stage"], "MRR": h["valid"][model]["MRR"]}
                         for h in record["history"] if "valid" in h]
        out["switch_epoch"] = config.stage1_epochs
        return out

    def timing(self) -> list[dict]:
        """Table 5 rows per model and dimension: parameters, inference seconds, speed-up vs the teacher.

        Models are freshly initialised: the time of scoring every entity does not depend on the
        weights' values, only on the dimension (and the machine).
        """
        spec = self.section["timing"]
        ds = self.dataset(spec["dataset"])
        dims = [self.section["teacher_dim"], *self.section["student_dims"]]
        rows = []
        for model in spec.get("models", self.section["models"]):
            rows += inference_table(ds, model, dims, batch_size=spec.get("batch_size", 1024),
                                    repeats=spec.get("repeats", 3), device=pick_device(spec.get("device", "cpu")))
        return rows


class _RunPlanner(DistilEStudy):
    """Walks the experiments without training: ``_run`` notes each config (and the experiment
    that asked for it) and answers with an empty record, so the experiments themselves stay the
    one list of the runs they need."""

    def __init__(self, section: dict):
        super().__init__(section, runs_dir=".")
        self.experiment = ""
        self.planned: dict[str, tuple[DistilEConfig, list[str]]] = {}

    def _run(self, config: DistilEConfig) -> dict:
        if config.method == "ds":
            self._run(config.teacher_config())
        users = self.planned.setdefault(config.run_name(), (config, []))[1]
        if self.experiment not in users:
            users.append(self.experiment)
        empty = {"all": dict.fromkeys(METRICS, float("nan"))}
        return {"run_name": config.run_name(), "best_valid_mrr": 0.0, "history": [],
                "selected_model": "student" if config.method == "ds" else "model",
                "test": {"model": empty, "student": empty}}


def planned_runs(section: dict) -> list[tuple[DistilEConfig, list[str]]]:
    """Every run of notebook 06's experiments for a profile's ``distile:`` section, with the
    experiments that use it (``"Table 3"``, ``"Table 4"``, ``"Table 6"``, ``"Figure 2"``,
    ``"Figure 3"``), plain runs (teachers) first; [] when the section has a ``grid`` (which teacher a
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


def compare(rows: list[dict], paper: dict, metrics: tuple[str, ...] = METRICS, student_dims=None,
            teacher_dim: int | None = None) -> pd.DataFrame:
    """Measured rows beside the paper's: columns ``<m>`` and ``<m> paper`` per metric.

    ``paper`` is a published table's ``rows`` mapping (``"<dim>/<method>" -> {model: metrics}``,
    teacher row ``"64/Tea."``); the profile's dimensions are matched to the paper's by position
    (teacher_dim -> 64, student_dims -> 32/16/8), shown in the column ``paper dim``.
    """
    dim_map = {teacher_dim: PAPER_TEACHER_DIM} if teacher_dim is not None else {}
    dim_map.update(dict(zip(student_dims or (), PAPER_STUDENT_DIMS)))
    out = []
    for row in rows:
        paper_dim = dim_map.get(row["dim"], row["dim"])
        published_row = (paper.get(f"{paper_dim}/{row['method']}") or {}).get(row["model"], {})
        entry = {"model": row["model"], "dim": row["dim"], "paper dim": paper_dim, "method": row["method"]}
        for m in metrics:
            entry[m] = row[m]
            entry[f"{m} paper"] = published_row.get(m, float("nan"))
        out.append(entry)
    return pd.DataFrame(out).set_index(["model", "dim", "method"])


def _row(model: str, dim: int, method: str, record: dict) -> dict:
    metrics = record["test"][record["selected_model"]]["all"]
    return {"model": model, "dim": dim, "method": method, **{m: metrics[m] for m in METRICS},
            "run": record["run_name"]}


# --- DistilE as a row of the MetaSD paper's Table 1 (profile section ``distile_in_table1``) -----------
TABLE1_SECTION = "distile_in_table1"
TABLE1_DEFAULTS = {"table": "table1", "beside": "MetaSD", "model": "ComplEx"}


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
    from ..study import config_for, trained_on

    block = table1_section(profile, key)
    table = profile["tables"].get(block["table"])
    if table is None:
        raise ValueError(f"profile {profile['name']}: {key}.table {block['table']!r} is not one of tables {sorted(profile['tables'])}")
    unknown = sorted(set(block.get("per_dataset") or {}) - set(table["datasets"]))
    if unknown:
        raise ValueError(f"profile {profile['name']}: {key}.per_dataset has {unknown}, not datasets of {block['table']}")
    for ds in table["datasets"]:
        config_for(profile, ds, block["beside"])  # names a bad recipe
        fields = {**(block.get("config") or {}), **((block.get("per_dataset") or {}).get(ds) or {})}
        fields.update({k: v[0] for k, v in (block.get("grid") or {}).items()})
        try:
            DistilEConfig(dataset=trained_on(profile, ds), model=block["model"], dim=1, **fields)
        except (TypeError, ValueError) as err:
            raise ValueError(f"profile {profile['name']}, section {key} on {ds}: {err}") from err


@dataclass
class Table1Rows:
    """What :func:`table1_rows` returns: the row's specs (one per dataset and seed), the records
    of every DistilE run behind them (teachers included, for provenance) and the sizing per
    dataset (:func:`dims_beside_metasd` plus the teachers' mean test MRR)."""

    specs: list
    records: dict[str, dict]
    sizes: pd.DataFrame


def _table1_study_section(profile: dict, block: dict) -> dict:
    """The ``distile:``-style section a :class:`DistilEStudy` runs the Table-1 row from."""
    from ..study import trained_on

    datasets = profile["tables"][block["table"]]["datasets"]
    return {"datasets": {ds: trained_on(profile, ds) for ds in datasets},
            "config": dict(block.get("config") or {}), "grid": dict(block.get("grid") or {})}


def _table1_seeds(profile: dict, block: dict, paper_dataset: str, data: KGDataset):
    """Per seed of the profile: ``(seed, dims, fields)`` - the sizes beside the ``beside`` recipe
    (:func:`dims_beside_metasd`) and the DistilE field overrides of teacher and student."""
    from ..study import config_for

    overrides = dict((block.get("per_dataset") or {}).get(paper_dataset) or {})
    for seed in map(int, profile["seeds"]):
        metasd = config_for(profile, paper_dataset, block["beside"], seed)
        yield seed, dims_beside_metasd(metasd, data.n_entities, data.n_relations, block["model"]), {**overrides, "seed": seed}


def _table1_distilled(runner: DistilEStudy, block: dict, paper_dataset: str, dims: dict, fields: dict):
    """The row's student for one dataset and seed (and, through it, its teacher) from ``runner``."""
    return runner.distilled(paper_dataset, block["model"], dims["student_dim"], teacher_dim=dims["teacher_dim"],
                            teacher_extra=fields, **fields)


def table1_planned_runs(profile: dict, load=load_dataset, key: str = TABLE1_SECTION) -> list[tuple[str, str, DistilEConfig]]:
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
    section = _table1_study_section(profile, block)
    if any(section["grid"].values()):
        return []
    planner = _RunPlanner(section)
    teachers, students = [], []
    for ds in profile["tables"][block["table"]]["datasets"]:
        data = load(section["datasets"][ds])
        for _, dims, fields in _table1_seeds(profile, block, ds, data):
            student, _ = _table1_distilled(planner, block, ds, dims, fields)
            teachers.append((ds, "teacher", student.teacher_config()))
            students.append((ds, "student", student))
    return teachers + students


def table1_rows(study, key: str = TABLE1_SECTION) -> Table1Rows:
    """Train (or reuse) DistilE beside MetaSD for every dataset and seed of the section's table.

    ``study`` is a :class:`kgdistill.study.Study`. Per paper dataset and seed: the ``beside``
    recipe's RunConfig gives the sizes (:func:`dims_beside_metasd`), a plain ``model`` teacher
    of ``teacher_dim`` is trained with that seed, then a two-stage DistilE student of
    ``student_dim`` (the ``grid``'s best on validation MRR, as in :class:`DistilEStudy`).
    """
    from ..study import NamedRunSpec

    profile = study.profile
    block = table1_section(profile, key)
    datasets = profile["tables"][block["table"]]["datasets"]
    section = _table1_study_section(profile, block)
    runner = DistilEStudy(section, study.runs_dir, study.data_dir, study.device, study.show_progress, study.retrain_since)
    specs, sizes = [], []
    for ds in datasets:
        data = study.dataset(section["datasets"][ds])
        runner._datasets[section["datasets"][ds]] = data
        dims, teacher_mrr = None, []
        for seed, dims, fields in _table1_seeds(profile, block, ds, data):
            config, _ = _table1_distilled(runner, block, ds, dims, fields)
            teacher = runner.records[config.teacher_config().run_name()]
            teacher_mrr.append(teacher["test"][teacher["selected_model"]]["all"]["MRR"])
            specs.append(NamedRunSpec(block["row"], ds, seed, config.run_name()))
        sizes.append({
            "": ds, "trained on": section["datasets"][ds], "MetaSD source P": dims["metasd_source"],
            "teacher dim": dims["teacher_dim"], "teacher size": dims["teacher_size"],
            "MetaSD student nonzero": dims["metasd_student"], "student dim": dims["student_dim"],
            "student size": dims["student_size"], "teacher test MRR": sum(teacher_mrr) / len(teacher_mrr),
        })
    frame = pd.DataFrame(sizes).set_index("").rename_axis(None)
    return Table1Rows(specs, dict(runner.records), frame)
