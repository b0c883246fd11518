"""The DistilE study grid: the runs of a profile's ``distile:`` section and notebook 06's tables.

Owns :class:`DistilEStudy`, which runs (or reuses) DistilE configurations in a runs folder, keeps
the best of a ``grid`` on validation MRR, and walks the experiments of the DistilE paper (Tables
3-6, Figures 2-3), each returning plain rows of measured numbers; and :func:`compare` /
:meth:`DistilEStudy.link_prediction_table` & co., which put them beside the paper's
(``published("distile", ...)``, matching the profile's dimensions to the paper's by position).

The section (see params/*.yaml for the documented values) holds:

* ``datasets``: paper dataset -> dataset actually used (smoke: UMLS for WN18RR, Kinship for FB15k-237),
* ``models``, ``teacher_dim``, ``student_dims``, ``teacher_dims`` (Figure 2),
* ``config``: :class:`DistilEConfig` overrides shared by every run; ``per_dataset``: overrides per paper
  dataset; ``per_model``: overrides per backbone; ``per_dataset_model``: per paper dataset, then backbone
  (:meth:`DistilEStudy.fields`: applied in that order, later wins), so one dataset can run at its own
  settings while the other keeps its configs (and its records' run names),
* ``grid``: lists of values tried per field (e.g. ``learning_rate``, ``alpha``); every combination is
  trained and the one with the best *validation* MRR is reported (``alpha`` also sets ``beta``,
  as the paper searches {α, β} in one set). Plain runs ignore the distillation fields of the grid.
* ``tie_seeds``: more seeds for the pairs whose seed-0 DS − no-DS difference is a tie
  (``{dataset, seeds, pairs: {backbone: [student dims]}, within}``; :mod:`.seeds` documents the keys):
  those pairs' no-DS and DS students train once per seed, every DS student from the seed-0 teacher,
  and their lines show the mean over seeds (:func:`.rows.compare`) and the paired interval
  (:func:`.claims.ds_gains`),
* ``ablation``, ``figure2``, ``figure3``: what those experiments run on; ``timing``: Table 5's
  timing (:mod:`.table5` documents its keys).
* ``train_missing`` (default true): false reads the records that exist instead of training the
  others (hours on a CPU; ``scripts/train_runs.py`` trains them): their rows hold NaN metrics and
  ``converged`` :data:`NOT_TRAINED`, and :meth:`DistilEStudy.describe` counts them.
"""
from __future__ import annotations

import itertools
import math
from pathlib import Path

import pandas as pd

from ...core.datasets import KGDataset, load_dataset
from ...core.records import existing_record
from ...distile.config import DS_FIELDS, DistilEConfig
from ...protocol.runner import RECORD, run, run_dir_for
from ..profile import published, register_section
from ..tables import budget_hit, marked_label
from .claims import ds_gains
from .rows import (  # noqa: F401  (PAPER_* re-exported: callers import the table names from here)
    DISTILE_METRICS,
    LINK_TABLES,
    NOT_TRAINED,
    PAPER_STUDENT_DIMS,
    PAPER_TEACHER_DIM,
    compare,
    paper_dims,
    record_metric,
    run_row,
)
from .seeds import TIE_SEEDS, TIE_SEEDS_SCHEMA, check_tie_seeds, pair_seeds, tie_check, tie_spec
from .table5 import Table5

#: the profile section notebook 06 reads (registered with kgdistill.study.profile below)
DISTILE_SECTION = "distile"
_CONFIG = DistilEConfig.__name__
DISTILE_SCHEMA = {
    "datasets": None, "models": None, "teacher_dim": None, "student_dims": None, "teacher_dims": None,
    "config": _CONFIG, "per_dataset": {"*": _CONFIG}, "per_model": {"*": _CONFIG},
    "per_dataset_model": {"*": {"*": _CONFIG}}, "grid": _CONFIG,
    "ablation": {"dataset": None, "models": None},
    "figure2": {"dataset": None, "model": None},
    "figure3": {"dataset": None, "model": None, "dim": None, "eval_every": None},
    "timing": {"dataset": None, "models": None, "batch_size": None, "repeats": None, "device": None, "triples": None,
               "threads": None},
    TIE_SEEDS: TIE_SEEDS_SCHEMA,
    "train_missing": None,
}
register_section(DISTILE_SECTION, DISTILE_SCHEMA,
                 lambda profile: check_tie_seeds(profile[DISTILE_SECTION],
                                                 f"profile {profile.get('_path', profile['name'])}: distile"))


class DistilEStudy(Table5):
    """Runs (or reuses) the configurations of one profile section in one runs folder."""

    #: the DistilE paper's link-prediction table of each dataset (3: WN18RR, 4: FB15k-237)
    LINK_TABLES = LINK_TABLES

    def __init__(self, section: dict, runs_dir: str | Path, data_dir: str | Path | None = None,
                 device: str = "auto", show_progress: bool = False, retrain_since: float | None = None,
                 name: str = "", required_env: dict[str, str] | None = None):
        self.section, self.runs_dir, self.data_dir = section, Path(runs_dir), data_dir
        #: the profile's name (for :meth:`describe`)
        self.name = name
        self.device, self.show_progress, self.retrain_since = device, show_progress, retrain_since
        #: a profile's ``env``: training refuses to start unless it is in force (:func:`kgdistill.protocol.runner.run`)
        self.required_env = required_env
        self._datasets: dict[str, KGDataset] = {}
        #: every record obtained, by run name (for provenance stamps)
        self.records: dict[str, dict] = {}
        #: run names asked for but without a record (``train_missing: false``), in order
        self.not_trained: list[str] = []

    @classmethod
    def from_study(cls, study) -> "DistilEStudy":
        """From a :class:`kgdistill.study.Study` (its profile's ``distile`` section, runs folder, device)."""
        return cls(study.section("distile"), study.runs_dir, study.data_dir, study.device, study.show_progress,
                   study.retrain_since, study.name, required_env=study.required_env)

    # --- plumbing --------------------------------------------------------------------------
    def dataset(self, paper_dataset: str) -> KGDataset:
        name = self.section["datasets"][paper_dataset]
        if name not in self._datasets:
            self._datasets[name] = load_dataset(name, self.data_dir)
        return self._datasets[name]

    def _run(self, config: DistilEConfig) -> dict | None:
        """The run's record: trained or reused; None when it has none and the section says
        ``train_missing: false`` (the run is then listed in :attr:`not_trained`)."""
        if not self.section.get("train_missing", True):
            record = existing_record(run_dir_for(config, self.runs_dir))
            if record is None:
                if config.run_name() not in self.not_trained:
                    self.not_trained.append(config.run_name())
            else:
                self.records[config.run_name()] = record
            return record
        if config.method == "ds":  # the teacher first, so that it too obeys retrain_since
            self._run(config.teacher_config())
        path = run_dir_for(config, self.runs_dir) / RECORD
        force = self.retrain_since is not None and path.exists() and path.stat().st_mtime < self.retrain_since
        force = force and config.run_name() not in self.records  # retrain once per study
        record = run(config, self.runs_dir, data_dir=self.data_dir, device=self.device,
                             show_progress=self.show_progress, dataset=self.dataset_for(config), force=force,
                             required_env=self.required_env)
        self.records[config.run_name()] = record
        return record

    def dataset_for(self, config: DistilEConfig) -> KGDataset:
        for paper, name in self.section["datasets"].items():
            if name.lower() == config.dataset.lower():
                return self.dataset(paper)
        return load_dataset(config.dataset, self.data_dir)

    def fields(self, paper_dataset: str, model: str) -> dict:
        """The section's config overrides for one paper dataset and backbone: ``config``, then
        ``per_dataset.<dataset>``, ``per_model.<model>``, ``per_dataset_model.<dataset>.<model>``."""
        sec = self.section
        for key in ("per_dataset", "per_dataset_model"):
            unknown = sorted(set(sec.get(key) or {}) - set(sec["datasets"]))
            if unknown:  # a typo would otherwise silently leave that dataset at the shared settings
                raise ValueError(f"distile.{key} names {unknown}, not paper datasets of distile.datasets "
                                 f"{sorted(sec['datasets'])}")
        layers = (sec.get("config"), (sec.get("per_dataset") or {}).get(paper_dataset),
                  (sec.get("per_model") or {}).get(model),
                  ((sec.get("per_dataset_model") or {}).get(paper_dataset) or {}).get(model))
        return {k: v for layer in layers for k, v in (layer or {}).items()}

    def _candidates(self, paper_dataset: str, model: str, dim: int, method: str, **extra) -> list[DistilEConfig]:
        base = {**self.fields(paper_dataset, model), **extra}
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

    def best(self, configs: list[DistilEConfig]) -> tuple[DistilEConfig | None, dict | None]:
        """Train every candidate; return the one with the best validation MRR (first on ties).

        Without some candidate's record (``train_missing: false``) the record is None, and so is
        the config when there were several candidates (the best cannot be known yet)."""
        scored = [(c, self._run(c)) for c in configs]
        if any(record is None for _, record in scored):
            return (configs[0] if len(configs) == 1 else None), None
        return max(scored, key=lambda pair: pair[1]["best_valid_mrr"])

    # --- runs ------------------------------------------------------------------------------
    def plain(self, paper_dataset: str, model: str, dim: int, **extra) -> tuple[DistilEConfig, dict]:
        """Teacher or no-DS student: the backbone on its hard loss, best of the grid."""
        return self.best(self._candidates(paper_dataset, model, dim, "plain", **extra))

    def distilled(self, paper_dataset: str, model: str, dim: int, teacher_dim: int | None = None,
                  ablation: str = "DS", teacher_extra: dict | None = None,
                  **extra) -> tuple[DistilEConfig | None, dict | None]:
        """DS student (or its ablation) distilled from the best plain teacher of ``teacher_dim``.

        ``extra`` overrides the student's fields, ``teacher_extra`` the teacher's (e.g. its seed).
        (None, None) when the teacher is not known yet (:meth:`best`)."""
        teacher, _ = self.plain(paper_dataset, model, teacher_dim or self.section["teacher_dim"],
                                **(teacher_extra or {}))
        if teacher is None:
            return None, None
        configs = self._candidates(paper_dataset, model, dim, "ds", teacher=teacher.to_dict(), **extra)
        return self.best([c.ablation(ablation) for c in configs])

    # --- experiments -----------------------------------------------------------------------
    def pair_runs(self, paper_dataset: str, model: str, dim: int) -> dict[int, tuple[dict | None, dict | None]]:
        """``{seed: (no-DS record, DS record)}`` of a (model, student dim) pair: the seeds of
        ``tie_seeds`` when it lists the pair (:func:`.seeds.pair_seeds`; every DS student distils from
        the section's own teacher run), else the section's own runs under their seed. None: no record."""
        seeds = pair_seeds(self.section, paper_dataset, model, dim)
        if seeds is None:
            seed = self.fields(paper_dataset, model).get("seed", 0)
            return {seed: (self.plain(paper_dataset, model, dim)[1], self.distilled(paper_dataset, model, dim)[1])}
        return {seed: (self.plain(paper_dataset, model, dim, seed=seed)[1],
                       self.distilled(paper_dataset, model, dim, seed=seed)[1]) for seed in seeds}

    def link_prediction(self, paper_dataset: str) -> list[dict]:
        """Tables 3/4 rows: {model, dim, method (Tea./no-DS/DS), MRR, H@10, H@3, H@1, run, converged};
        a pair of ``tie_seeds`` has one no-DS and one DS row per seed (with its ``seed``)."""
        rows = []
        for model in self.section["models"]:
            _, record = self.plain(paper_dataset, model, self.section["teacher_dim"])
            rows.append(run_row(model, self.section["teacher_dim"], "Tea.", record))
            for dim in self.section["student_dims"]:
                several = pair_seeds(self.section, paper_dataset, model, dim) is not None
                for seed, (plain, ds) in self.pair_runs(paper_dataset, model, dim).items():
                    rows.append(run_row(model, dim, "no-DS", plain, seed if several else None))
                    rows.append(run_row(model, dim, "DS", ds, seed if several else None))
        return rows

    def ablation(self) -> list[dict]:
        """Table 6 rows on the ablation dataset: DS / −S1 / −S2 per model and student dimension."""
        spec = self.section["ablation"]
        rows = []
        for model in spec.get("models", self.section["models"]):
            for dim in self.section["student_dims"]:
                for name in ("DS", "-S1", "-S2"):
                    rows.append(run_row(model, dim, name,
                                        self.distilled(spec["dataset"], model, dim, ablation=name)[1]))
        return rows

    def teacher_dimensions(self) -> list[dict]:
        """Figure 2 rows: student test MRR for each teacher dimension × student dimension."""
        spec = self.section["figure2"]
        rows = []
        for teacher_dim in self.section["teacher_dims"]:
            for dim in self.section["student_dims"]:
                _, record = self.distilled(spec["dataset"], spec["model"], dim, teacher_dim=teacher_dim)
                rows.append({"teacher_dim": teacher_dim, "student_dim": dim,
                             "MRR": record["test"]["student"]["all"]["MRR"] if record else float("nan"),
                             "budget_hit": bool(record) and budget_hit(record)})
        return rows

    def curves(self, paper_dataset: str | None = None, model: str | None = None,
               dim: int | None = None) -> dict[str, list[dict]]:
        """Per-evaluation validation MRR of a student with ('DS') and without ('no-DS') teacher (an
        empty list for a run without a record) and ``switch_epoch``, the last epoch of stage 1.
        Default: Figure 3's student (the ``figure3`` spec, its own ``eval_every``); else the
        Table 3/4 runs of ``model`` at ``dim`` on ``paper_dataset``."""
        extra = {}
        if paper_dataset is None:
            spec = self.section["figure3"]
            paper_dataset, model, dim = spec["dataset"], spec["model"], spec["dim"]
            extra = {"eval_every": spec.get("eval_every", 1)}
        _, plain = self.plain(paper_dataset, model, dim, **extra)
        config, ds = self.distilled(paper_dataset, model, dim, **extra)
        out = {}
        for name, record, scorer in (("no-DS", plain, "model"), ("DS", ds, "student")):
            out[name] = [{"epoch": h["epoch"], "stage": h["stage"], "MRR": h["valid"][scorer]["MRR"]}
                         for h in (record or {}).get("history", []) if "valid" in h]
        out["switch_epoch"] = config.stage1_epochs if config else None
        return out

    # --- notebook 06: the experiments beside the paper -----------------------------------------
    def describe(self) -> str:
        """The profile's DistilE settings: stand-in datasets, dimensions, run settings (deterministic)."""
        sec = self.section
        lines = [f"profile: {self.name}"]
        lines += [f"  {paper_ds}: trained on {used}" for paper_ds, used in sec["datasets"].items()]
        lines.append(f"  teacher dim {sec['teacher_dim']}, student dims {sec['student_dims']}, "
                     f"Figure 2 teacher dims {sec['teacher_dims']}")
        lines.append(f"  run settings: {sec['config']}, per model: {sec.get('per_model') or {}}, "
                     f"grid: {sec.get('grid') or {}}")
        for key in ("per_dataset", "per_dataset_model"):  # shown only where a profile uses them
            if sec.get(key):
                lines.append(f"  {key.replace('_', ' ')}: {sec[key]}")
        spec = tie_spec(sec)
        if spec:
            pairs = "; ".join(f"{model} {dims}" for model, dims in spec["pairs"].items())
            lines.append(f"  tie_seeds: seeds {spec['seeds']} on {spec['dataset']} for {pairs} (the pairs whose seed-0 "
                         f"DS − no-DS test MRR lay within ±{spec['within']:g}; DS students of every seed distil "
                         "from the seed-0 teacher)")
        if not sec.get("train_missing", True):
            lines.append("  train_missing: false - the notebook reads the records that exist; rows of runs without "
                         f"one say '{NOT_TRAINED}' (scripts/train_runs.py --profile {self.name} "
                         "--match \"Table 3\" ... trains them)")
        return "\n".join(lines)

    def missing_runs(self) -> str:
        """The runs asked for so far that have no record (call after the experiments), one line."""
        if not self.not_trained:
            return "every run asked for has a record"
        return f"{len(self.not_trained)} runs not trained yet: " + ", ".join(self.not_trained)

    def trained_on(self, paper_dataset: str) -> str:
        """The benchmark trained for a paper dataset (a stand-in in the smoke profile)."""
        return self.section["datasets"][paper_dataset]

    def paper_dims(self) -> dict[int, int]:
        """``{profile dim: paper dim}`` of the teacher and student dimensions (:func:`paper_dims`)."""
        return paper_dims(self.section["teacher_dim"], self.section["student_dims"])

    def link_prediction_table(self, paper_dataset: str) -> pd.DataFrame:
        """Table 3 (WN18RR) or 4 (FB15k-237, :data:`LINK_TABLES`): :meth:`link_prediction` beside the paper."""
        paper = published("distile", f"table{LINK_TABLES[paper_dataset]}", "rows")
        return compare(self.link_prediction(paper_dataset), paper, student_dims=self.section["student_dims"],
                       teacher_dim=self.section["teacher_dim"])

    def ds_gains(self, paper_dataset: str, table: pd.DataFrame) -> pd.DataFrame:
        """DS minus no-DS per model and student dim of ``table``, ``paper_dataset``'s
        :meth:`link_prediction_table`: the mean paired difference over the pair's seeds (with its
        spread and 95% interval where there are several) and what stage 2 did (:func:`ds_gains`)."""
        differences, records = {}, {}
        for model in self.section["models"]:
            for dim in self.section["student_dims"]:
                runs = self.pair_runs(paper_dataset, model, dim)
                differences[(model, dim)] = {
                    seed: record_metric(ds) - record_metric(plain) if plain and ds else math.nan
                    for seed, (plain, ds) in runs.items()}
                records[(model, dim)] = [ds for _, ds in runs.values() if ds is not None]
        return ds_gains(table, ds_records=records, differences=differences)

    def tie_check(self, paper_dataset: str) -> str:
        """Which pairs' seed-0 DS − no-DS test MRR (the section's own runs) lies within
        ``tie_seeds.within``, and whether that is the profile's list (:func:`.seeds.tie_check`; "" without
        ``tie_seeds``)."""
        if tie_spec(self.section) is None:
            return ""
        seed0 = {}
        for model in self.section["models"]:
            for dim in self.section["student_dims"]:
                plain, ds = self.plain(paper_dataset, model, dim)[1], self.distilled(paper_dataset, model, dim)[1]
                seed0[(model, dim)] = record_metric(ds) - record_metric(plain) if plain and ds else math.nan
        return tie_check(self.section, paper_dataset, seed0)

    def ablation_table(self) -> pd.DataFrame:
        """Table 6 (:meth:`ablation`) beside the paper (MRR and H@10, as published)."""
        return compare(self.ablation(), published("distile", "table6", "rows"), metrics=("MRR", "H@10"),
                       student_dims=self.section["student_dims"])

    def teacher_dimension_grid(self) -> pd.DataFrame:
        """Figure 2 (:meth:`teacher_dimensions`): student test MRR, teacher dims (rows) by student
        dims (columns, largest first). A teacher dim whose row holds a student that hit its epoch
        budget is labelled with a dagger (``"64 †"``; :func:`kgdistill.study.tables.marked_label`).
        ``attrs`` name what it shows (``model``, ``dataset``, ``trained_on``): the figure's title."""
        rows = pd.DataFrame(self.teacher_dimensions())
        grid = rows.pivot(index="teacher_dim", columns="student_dim", values="MRR")
        hit = rows.groupby("teacher_dim")["budget_hit"].any()
        grid.index = [marked_label(str(d), [{}] if hit[d] else [{"stop_reason": "plateau"}]) for d in grid.index]
        grid.index.name = "teacher_dim"
        grid = grid[sorted(grid.columns, reverse=True)]
        spec = self.section["figure2"]
        grid.attrs.update(model=spec["model"], dataset=spec["dataset"], trained_on=self.trained_on(spec["dataset"]))
        return grid

    def curves_frame(self, paper_dataset: str | None = None, model: str | None = None,
                     dim: int | None = None) -> tuple[pd.DataFrame, int | None]:
        """:meth:`curves` as a frame: validation MRR by epoch (rows) of the ``no-DS`` and ``DS``
        students (columns; NaN where a run has no evaluation or no record), and the switch epoch."""
        curves = self.curves(paper_dataset, model, dim)
        frame = pd.DataFrame({name: pd.Series({p["epoch"]: p["MRR"] for p in curves[name]}, dtype=float)
                              for name in ("no-DS", "DS")})
        frame.index.name = "epoch"
        return frame.sort_index(), curves["switch_epoch"]

    def pair_curves(self, paper_dataset: str, dim: int | None = None) -> dict[str, tuple[pd.DataFrame, int | None]]:
        """``{model: curves_frame}`` of the Table 3/4 no-DS and DS students of ``dim`` (default: the
        smallest student dim), for the models whose two runs both have a record."""
        dim = dim or min(self.section["student_dims"])
        panels = {model: self.curves_frame(paper_dataset, model, dim) for model in self.section["models"]}
        return {model: (frame, switch) for model, (frame, switch) in panels.items()
                if frame["no-DS"].notna().any() and frame["DS"].notna().any()}

