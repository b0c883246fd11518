"""The study layer the notebooks share: profiles -> run configs -> records -> tables and figures.

A *profile* (``params/<name>.yaml``) holds every number a notebook uses. Its sections:

* ``runs_dir``, ``device``, ``threads``, ``env``, ``seeds``: where records live, what runs them;
* ``common``: :class:`~kgdistill.config.RunConfig` overrides for every run;
* ``datasets``: for each paper dataset (``FB15k-237``, ``WN18RR``) the benchmark actually trained
  (``data``; the smoke profile trains a small stand-in), its ``config`` overrides and per-recipe
  ``recipes`` overrides;
* ``recipes``: named RunConfig overrides, one per model of the paper (``teacher: <recipe>``
  makes a KD run distil from that recipe's finished baseline run);
* ``tables`` / ``figure1`` / ``footprint`` / ``dataset_stats``: which rows, datasets, ranks,
  buckets the notebooks show;
* ``distile`` (notebook 06) and ``distile_in_table1`` (DistilE as an added row of Table 1, sized
  beside MetaSD): read by :mod:`kgdistill.distile.experiments`; their runs are not RunConfigs and
  enter tables as :class:`NamedRunSpec`.

A run's config is ``RunConfig(**(common | datasets[d].config | recipes[r] | datasets[d].recipes[r]
| overrides), dataset=datasets[d].data, seed=seed)``, so a record's hash follows from the profile.

Published numbers come only from ``published.yaml`` (:func:`published`); every table built here
puts them in columns suffixed ``paper`` next to the measured value and the difference ``Δ``.
"""
from __future__ import annotations

import io
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd
import yaml

from .config import RunConfig
from .records import atomic_write_bytes, pick_device, provenance, read_json

METRICS = ("MRR", "H@1", "H@3", "H@10")
PROFILE_SECTIONS = (
    "name", "description", "runs_dir", "device", "threads", "env", "seeds", "common", "datasets", "recipes",
    "tables", "figure1", "footprint", "dataset_stats", "distile", "distile_in_table1",
)
PUBLISHED_FILE = Path(__file__).with_name("published.yaml")


# --- locations ----------------------------------------------------------------------------------
def repo_root() -> Path:
    """The repository holding ``params/``: ``$KGDISTILL_ROOT``, else the first parent of the
    working directory (notebooks run in ``notebooks/``) or of this package that has ``params/``."""
    env = os.environ.get("KGDISTILL_ROOT")
    if env:
        return Path(env).resolve()
    for start in (Path.cwd().resolve(), Path(__file__).resolve().parent):
        for folder in (start, *start.parents):
            if (folder / "params").is_dir() and (folder / "pyproject.toml").is_file():
                return folder
    raise FileNotFoundError(
        "cannot find the repository root (a folder with params/ and pyproject.toml) above "
        f"{Path.cwd()}; run from inside the repository or set KGDISTILL_ROOT"
    )


def use_shared_data(root: str | os.PathLike | None = None) -> None:
    """Point ``KGC_DATA_DIR`` at the project's copy of the archives, ``<root>/../shared/data``
    (``root``: the repository, default :func:`repo_root`), when the caller has not set it and the
    folder exists; make it absolute either way (notebook kernels run in ``notebooks/``). Left
    unset, the archives are downloaded."""
    from .datasets import DATA_DIR_ENV

    shared = Path(root or repo_root()).parent / "shared" / "data"
    if DATA_DIR_ENV not in os.environ and shared.is_dir():
        os.environ[DATA_DIR_ENV] = str(shared)
    if os.environ.get(DATA_DIR_ENV):
        os.environ[DATA_DIR_ENV] = str(Path(os.environ[DATA_DIR_ENV]).resolve())


def profile_path(name: str | os.PathLike) -> Path:
    """``params/<name>.yaml`` of the repository, or ``name`` itself when it is a path to a file."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path.resolve()
    candidate = repo_root() / "params" / f"{name}.yaml"
    if not candidate.is_file():
        known = sorted(p.stem for p in (repo_root() / "params").glob("*.yaml"))
        raise FileNotFoundError(f"profile {str(name)!r} not found at {candidate}; known profiles: {known}")
    return candidate


def results_dir(profile: dict | str) -> Path:
    """``results/<profile>/`` of the repository."""
    name = profile["name"] if isinstance(profile, dict) else str(profile)
    return repo_root() / "results" / name


# --- profiles and published numbers --------------------------------------------------------------
def load_profile(name: str | os.PathLike) -> dict:
    """Read and check a profile; returns the mapping with ``name`` set and ``runs_dir`` absolute.

    Every config it can generate is built once here, so a typo in a field name or value fails
    at load time with RunConfig's message (which names the field).
    """
    path = profile_path(name)
    with open(path) as handle:
        profile = yaml.safe_load(handle) or {}
    if not isinstance(profile, dict):
        raise ValueError(f"profile {path}: expected a mapping at the top level")
    profile.setdefault("name", path.stem)
    unknown = sorted(set(profile) - set(PROFILE_SECTIONS))
    if unknown:
        raise ValueError(f"profile {path}: unknown section(s) {unknown}; valid sections are {list(PROFILE_SECTIONS)}")
    for key in ("seeds", "common", "datasets", "recipes", "tables"):
        if key not in profile:
            raise ValueError(f"profile {path}: missing section {key!r}")
    runs = Path(profile.get("runs_dir") or f"results/{profile['name']}/runs")
    profile["runs_dir"] = str(runs if runs.is_absolute() else repo_root() / runs)
    profile["_path"] = str(path)
    for spec in all_specs(profile):  # validates every config
        spec.config
    if profile.get("distile_in_table1"):
        from .distile.experiments import check_table1_section

        check_table1_section(profile)
    return profile


@lru_cache(maxsize=1)
def _published_cached() -> dict:
    with open(PUBLISHED_FILE) as handle:
        return yaml.safe_load(handle)


def published(*keys: str) -> dict:
    """The papers' published numbers (``published.yaml``), optionally a sub-mapping by keys,
    e.g. ``published("metasd", "table1", "FB15k-237")``. Returns a deep copy."""
    import copy

    node = _published_cached()
    for key in keys:
        if key not in node:
            raise KeyError(f"published.yaml has no entry {'/'.join(keys)} (missing {key!r}); available: {sorted(node)}")
        node = node[key]
    return copy.deepcopy(node)


# --- configs --------------------------------------------------------------------------------------
def _dataset_block(profile: dict, paper_dataset: str) -> dict:
    blocks = profile["datasets"]
    if paper_dataset not in blocks:
        raise ValueError(f"profile {profile['name']}: no datasets.{paper_dataset} block; it has {sorted(blocks)}")
    return blocks[paper_dataset] or {}


def trained_on(profile: dict, paper_dataset: str) -> str:
    """The benchmark a profile trains for a paper dataset (a stand-in in the smoke profile)."""
    return _dataset_block(profile, paper_dataset).get("data", paper_dataset)


def config_for(profile: dict, paper_dataset: str, recipe: str, seed: int | None = None, **overrides) -> RunConfig:
    """The RunConfig of ``recipe`` on ``paper_dataset`` under ``profile`` (see the module docstring)."""
    recipes = profile["recipes"]
    if recipe not in recipes:
        raise ValueError(f"profile {profile['name']}: unknown recipe {recipe!r}; recipes are {sorted(recipes)}")
    block = _dataset_block(profile, paper_dataset)
    values: dict = {}
    for part in (profile.get("common"), block.get("config"), recipes[recipe], (block.get("recipes") or {}).get(recipe), overrides):
        values.update(part or {})
    teacher = values.pop("teacher", None)
    if teacher is not None:
        if isinstance(teacher, str):
            teacher_config = config_for(profile, paper_dataset, teacher, seed)
            if teacher_config.method != "baseline":
                raise ValueError(f"profile {profile['name']}: recipe {recipe!r} has teacher {teacher!r}, which is not a baseline")
            teacher = teacher_config.to_dict()
        values["teacher"] = teacher
    values["dataset"] = trained_on(profile, paper_dataset)
    values["seed"] = int(profile["seeds"][0] if seed is None else seed)
    try:
        return RunConfig.from_dict(values)
    except ValueError as err:
        raise ValueError(f"profile {profile['name']}, recipe {recipe!r} on {paper_dataset}: {err}") from err


@dataclass(frozen=True)
class RunSpec:
    """One cell group of a table: ``row`` on ``paper_dataset`` for one seed, read from ``model``
    (``None``: the record's selected model) of the run described by ``recipe`` (+ overrides)."""

    row: str
    paper_dataset: str
    recipe: str
    seed: int
    model: str | None = None
    overrides: tuple = ()
    profile: dict = field(default=None, compare=False, repr=False, hash=False)

    @property
    def config(self) -> RunConfig:
        return config_for(self.profile, self.paper_dataset, self.recipe, self.seed, **dict(self.overrides))

    @property
    def run_name(self) -> str:
        return self.config.run_name()


@dataclass(frozen=True)
class NamedRunSpec:
    """A table row read from a run that no :class:`~kgdistill.config.RunConfig` describes (e.g. a
    DistilE run, :mod:`kgdistill.distile`): its record is found by ``run_name``. Tables, run
    frames and curves treat it like a :class:`RunSpec`."""

    row: str
    paper_dataset: str
    seed: int
    run_name: str
    model: str | None = None


def _rows(table: dict) -> list[tuple[str, str, str | None]]:
    out = []
    for label, row in (table.get("rows") or {}).items():
        if isinstance(row, str):
            out.append((label, row, None))
        elif isinstance(row, dict) and "recipe" in row:
            out.append((label, row["recipe"], row.get("model")))
        else:
            raise ValueError(f"table row {label!r}: expected a recipe name or {{recipe: ..., model: ...}}, got {row!r}")
    return out


def table_specs(profile: dict, table: str) -> list[RunSpec]:
    """Every (row, dataset, seed) of ``profile.tables[table]``."""
    tables = profile["tables"]
    if table not in tables:
        raise ValueError(f"profile {profile['name']}: no tables.{table}; it has {sorted(tables)}")
    spec = tables[table]
    return [
        RunSpec(label, ds, recipe, int(seed), model, profile=profile)
        for ds in spec["datasets"]
        for label, recipe, model in _rows(spec)
        for seed in profile["seeds"]
    ]


def figure1_specs(profile: dict) -> list[RunSpec]:
    """The size/accuracy curves (``figure1.curves`` at every ``figure1.ranks``) and the students."""
    fig = profile.get("figure1") or {}
    if not fig:
        return []
    ds = fig["dataset"]
    specs = [
        RunSpec(f"{recipe} r{rank}", ds, recipe, int(seed), None, (("rank", int(rank)),), profile=profile)
        for recipe in fig.get("curves", [])
        for rank in fig.get("ranks", [])
        for seed in profile["seeds"]
    ]
    specs += [RunSpec(recipe, ds, recipe, int(seed), None, profile=profile) for recipe in fig.get("students", []) for seed in profile["seeds"]]
    return specs


def footprint_specs(profile: dict) -> list[RunSpec]:
    fp = profile.get("footprint") or {}
    if not fp:
        return []
    return [RunSpec(fp["recipe"], fp["dataset"], fp["recipe"], int(profile["seeds"][0]), None, profile=profile)]


def all_specs(profile: dict) -> list[RunSpec]:
    """Every run the profile's notebooks need (tables, figure 1, footprint)."""
    specs = [s for table in profile["tables"] for s in table_specs(profile, table)]
    return specs + figure1_specs(profile) + footprint_specs(profile)


# --- running ---------------------------------------------------------------------------------------
def setup(profile: dict) -> None:
    """Apply the profile's process settings (torch threads) in this process."""
    import torch

    threads = profile.get("threads")
    if threads:
        torch.set_num_threads(int(threads))


def run_all(
    specs: Iterable[RunSpec | RunConfig],
    runs_dir: str | os.PathLike,
    show_progress: bool = False,
    data_dir: str | os.PathLike | None = None,
    device: str | None = "auto",
    retrain_since: float | None = None,
) -> dict[str, dict]:
    """Train whatever is missing and return ``{run name: record}`` for all given runs.

    Baselines run before distillation runs (KD teachers exist before their students), each
    distinct config once. ``retrain_since`` (a POSIX time) retrains every run whose record is
    older than it — the runner's ``--retrain``: runs shared by several notebooks train once.
    """
    from .datasets import load_dataset
    from .runner import RECORD, run, run_dir_for

    configs: dict[str, RunConfig] = {}
    for item in specs:
        config = item.config if isinstance(item, RunSpec) else item
        configs.setdefault(config.run_name(), config)
    ordered = sorted(configs.values(), key=lambda c: c.method != "baseline")
    datasets: dict = {}
    records: dict[str, dict] = {}
    for config in ordered:
        path = run_dir_for(config, runs_dir) / RECORD
        force = retrain_since is not None and path.exists() and path.stat().st_mtime < retrain_since
        needs_data = force or not path.exists()
        dataset = None
        if needs_data:
            if config.dataset not in datasets:
                datasets[config.dataset] = load_dataset(config.dataset, data_dir)
            dataset = datasets[config.dataset]
        records[config.run_name()] = run(
            config, runs_dir, data_dir=data_dir, device=device, show_progress=show_progress, force=force, dataset=dataset
        )
    return records


def record_for(spec: RunSpec | NamedRunSpec, records: dict[str, dict]) -> dict:
    name = spec.run_name
    if name not in records:
        raise KeyError(f"no record for run {name} (row {spec.row!r}); pass its spec to run_all first")
    return records[name]


def model_name(spec: RunSpec | NamedRunSpec, record: dict) -> str:
    return spec.model or record["selected_model"]


def model_dim(record: dict, model: str) -> int:
    """Rank of ``model`` in a record: the student's for a separate student, else the config's.
    DistilE records (config ``dim``, no ``rank``) give the model's ``dim`` (complex components
    for ComplEx/RotatE), the teacher's for ``model == "teacher"``."""
    config = record["config"]
    if "rank" not in config and "dim" in config:
        if model == "teacher" and config.get("teacher"):
            return int(config["teacher"]["dim"])
        return int(config["dim"])
    if model == "student" and "student_rank" in record:
        return int(record["student_rank"])
    if model == "teacher" and "teacher_rank" in record:
        return int(record["teacher_rank"])
    return int(record["config"]["rank"])


# --- tables ------------------------------------------------------------------------------------------
def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    values = [float(v) for v in values]
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def results_table(
    specs: Sequence[RunSpec],
    records: dict[str, dict],
    paper: dict | None = None,
    subset: str = "all",
    metrics: Sequence[str] = METRICS,
    size: bool = True,
    dim: bool = True,
    quoted: dict | None = None,
) -> pd.DataFrame:
    """Measured metrics (mean over seeds, ``±`` std when more than one seed) beside the paper's.

    ``specs`` must share one paper dataset. ``paper`` maps row label -> published metrics (and
    ``size``/``dim``); ``quoted`` maps row labels that the paper quotes from elsewhere (e.g.
    TransE from LibKGE) to their source: they appear with the published numbers only.
    Columns per metric: ``<m>`` (measured), ``<m> ±`` (std, several seeds only), ``<m> paper``,
    ``<m> Δ`` (measured − paper). ``size`` is the non-zero parameter count of the model read.
    """
    paper = paper or {}
    quoted = quoted or {}
    labels: list[str] = []
    for spec in specs:
        if spec.row not in labels:
            labels.append(spec.row)
    n_seeds = max((sum(1 for s in specs if s.row == label) for label in labels), default=1)
    rows = []
    for label in list(quoted) + labels:
        published_row = paper.get(label, {}) or {}
        group = [s for s in specs if s.row == label]
        row: dict = {"row": label}
        if label in quoted and not group:
            row["source"] = f"quoted ({quoted[label]}, via paper)"
        else:
            row["source"] = "measured"
        values: dict[str, list[float]] = {m: [] for m in metrics}
        sizes, dims = [], []
        for spec in group:
            record = record_for(spec, records)
            model = model_name(spec, record)
            result = record["test"][model][subset]
            for m in metrics:
                values[m].append(result[m])
            sizes.append(record["parameter_counts"][model]["nonzero"])
            dims.append(model_dim(record, model))
        for m in metrics:
            mean, std = _mean_std(values[m])
            row[m] = mean
            if n_seeds > 1:
                row[f"{m} ±"] = std
            ref = published_row.get(m)
            row[f"{m} paper"] = math.nan if ref is None else float(ref)
            row[f"{m} Δ"] = mean - float(ref) if ref is not None and values[m] else math.nan
        if size:
            row["size"] = _mean_std(sizes)[0] if sizes else math.nan
            ref = published_row.get("size")
            row["size paper"] = math.nan if ref is None else float(ref)
        if dim:
            row["dim"] = _mean_std(dims)[0] if dims else math.nan
            ref = published_row.get("dim")
            row["dim paper"] = math.nan if ref is None else float(ref)
        row["seeds"] = len(group)
        rows.append(row)
    frame = pd.DataFrame(rows).set_index("row")
    frame.index.name = None
    return frame


def formatted(frame: pd.DataFrame, precision: int = 4) -> pd.DataFrame:
    """``frame`` as strings: metrics with ``precision`` decimals, differences (``Δ``) signed,
    counts (size, dim, seeds, triples, relations, bytes, integer columns) as integers with
    thousands separators, missing values as ``-``."""

    def number(x, decimals: int, signed: bool = False) -> str:
        if x is None or (isinstance(x, float) and math.isnan(x)):
            return "-"
        if not isinstance(x, (int, float)):
            return str(x)
        if decimals == 0:
            return f"{x:,.0f}"
        return f"{x:+.{decimals}f}" if signed else f"{x:.{decimals}f}"

    counts = ("size", "dim", "seeds", "triples", "relations", "bytes", "count", "parameters", "disk bytes", "memory bytes")
    out = pd.DataFrame(index=frame.index)
    for column in frame.columns:
        name = str(column)
        values = frame[column]
        if name.startswith(counts) or name in (
            "entities", "entities_in_train", "train", "valid", "test", "valid_unseen_entity", "test_unseen_entity",
        ) or pd.api.types.is_integer_dtype(values):
            out[column] = [number(x, 0) for x in values]
        elif name.endswith("Δ"):
            out[column] = [number(x, precision, signed=True) for x in values]
        elif pd.api.types.is_numeric_dtype(values):
            out[column] = [number(x, precision) for x in values]
        else:
            out[column] = ["-" if x is None or (isinstance(x, float) and math.isnan(x)) else str(x) for x in values]
    return out


def format_table(frame: pd.DataFrame, precision: int = 4) -> str:
    """Fixed-precision text of a table (see :func:`formatted`). Deterministic: nbval compares it."""
    text = formatted(frame, precision)
    return text.to_string(justify="right") if len(text.columns) else frame.to_string()


def bucket_table(
    record: dict, model: str, relation_counts: dict[str, int], edges: Sequence[int], metrics: Sequence[str] = ("MRR",)
) -> pd.DataFrame:
    """Test metrics per relation-frequency bucket ``[edges[i], edges[i+1])`` (train triples per
    relation), each the triple-weighted mean of the per-relation metrics (exact: a relation's
    tail and head directions have the same number of triples)."""
    per_relation = record["test"][model]["per_relation"]
    rows = []
    bounds = list(edges) + [math.inf]
    for low, high in zip(bounds[:-1], bounds[1:]):
        chosen = [r for r in per_relation if low <= relation_counts[r] < high]
        triples = sum(per_relation[r]["triples"] for r in chosen)
        row = {"bucket": f"[{low}, {high})" if high != math.inf else f">= {low}", "relations": len(chosen), "triples": triples}
        for m in metrics:
            row[m] = (
                sum(per_relation[r][m] * per_relation[r]["triples"] for r in chosen) / triples if triples else math.nan
            )
        rows.append(row)
    return pd.DataFrame(rows).set_index("bucket")


def bucket_frame(
    specs: Sequence[RunSpec], records: dict[str, dict], relation_counts: dict[str, int], edges: Sequence[int], metric: str = "MRR"
) -> pd.DataFrame:
    """``metric`` per relation-frequency bucket (rows) for every table row (columns), mean over
    seeds, with each bucket's relation and test-triple counts."""
    columns: dict[str, list[pd.Series]] = {}
    base = None
    for spec in specs:
        record = record_for(spec, records)
        frame = bucket_table(record, model_name(spec, record), relation_counts, edges, (metric,))
        base = frame[["relations", "triples"]] if base is None else base
        columns.setdefault(spec.row, []).append(frame[metric])
    out = base.copy()
    for label, series in columns.items():
        out[label] = pd.concat(series, axis=1).mean(axis=1)
    return out


def size_accuracy_frame(specs: Sequence[RunSpec], records: dict[str, dict], metric: str = "MRR") -> pd.DataFrame:
    """One row per (recipe, rank) of Figure 1: non-zero size, dimension and test ``metric``
    (mean over seeds)."""
    rows: dict[tuple, dict] = {}
    for spec in specs:
        record = record_for(spec, records)
        model = model_name(spec, record)
        key = (spec.recipe, spec.row)
        entry = rows.setdefault(key, {"recipe": spec.recipe, "row": spec.row, "size": [], "dim": [], metric: []})
        entry["size"].append(record["parameter_counts"][model]["nonzero"])
        entry["dim"].append(model_dim(record, model))
        entry[metric].append(record["test"][model]["all"][metric])
    frame = pd.DataFrame(
        [
            {"row": e["row"], "recipe": e["recipe"], "size": _mean_std(e["size"])[0], "dim": _mean_std(e["dim"])[0],
             metric: _mean_std(e[metric])[0], "seeds": len(e[metric])}
            for e in rows.values()
        ]
    ).set_index("row")
    frame.index.name = None
    return frame


def runs_frame(specs: Sequence[RunSpec], records: dict[str, dict]) -> pd.DataFrame:
    """One line per distinct (run, model) behind ``specs``: the model read, the selected epoch
    (chosen on the selected model's validation MRR), this model's validation MRR at that epoch
    (deterministic), and the mean seconds per training epoch (timing)."""
    rows, seen = [], set()
    for spec in specs:
        record = record_for(spec, records)
        key = (spec.run_name, spec.model)
        if key in seen:
            continue
        seen.add(key)
        model = model_name(spec, record)
        selected = [h for h in record["history"] if h["epoch"] == record["selected_epoch"] and "valid" in h]
        valid = selected[0]["valid"][model]["MRR"] if selected else math.nan
        rows.append(
            {
                "row": spec.row,
                "dataset": spec.paper_dataset,
                "seed": spec.seed,
                "run": spec.run_name,
                "model": model,
                "selected_epoch": record["selected_epoch"],
                "max_epochs": record["config"]["max_epochs"],
                "valid MRR": valid,
                "s/epoch": record["seconds_per_epoch"],
            }
        )
    return pd.DataFrame(rows).set_index("row").rename_axis(None)


def valid_curves(specs: Sequence[RunSpec], records: dict[str, dict], metric: str = "MRR") -> pd.DataFrame:
    """Validation ``metric`` by epoch (rows) of each spec's model (columns ``row`` or
    ``row/seed`` when there are several seeds), from the records' histories."""
    seeds = {s.seed for s in specs}
    series = {}
    for spec in specs:
        record = record_for(spec, records)
        model = model_name(spec, record)
        points = {h["epoch"]: h["valid"][model][metric] for h in record["history"] if "valid" in h}
        series[spec.row if len(seeds) == 1 else f"{spec.row}/s{spec.seed}"] = pd.Series(points)
    frame = pd.DataFrame(series)
    frame.index.name = "epoch"
    return frame


# --- provenance -------------------------------------------------------------------------------------
def stamp(records: Iterable[dict] | dict | None, profile: dict | str) -> str:
    """One line naming the profile, device(s), torch version(s), git commit(s) and date range of
    the records (or of this process when there are none)."""
    if isinstance(records, dict):
        records = list(records.values())
    provs = [r["provenance"] for r in (records or []) if r and "provenance" in r]
    name = profile["name"] if isinstance(profile, dict) else profile
    if not provs:
        device = (profile.get("device") if isinstance(profile, dict) else None) or "auto"
        provs = [provenance(pick_device(device))]
        origin = "no runs; this environment"
    else:
        origin = f"{len(provs)} run record(s)"

    def values(key):
        return sorted({p.get(key, "?") for p in provs})

    dates = values("date")
    date = dates[0] if len(dates) == 1 else f"{dates[0]} .. {dates[-1]}"
    return (
        f"profile {name} | device {', '.join(values('device'))} | torch {', '.join(values('torch'))} | "
        f"commit {', '.join(values('git_commit'))} | {date} | {origin}"
    )


# --- outputs -------------------------------------------------------------------------------------------
def save_table(frame: pd.DataFrame, name: str, profile: dict | str, caption: str = "", note: str = "") -> dict[str, Path]:
    """Write ``results/<profile>/tables/<name>.{csv,md,tex}`` atomically; returns the paths.

    ``caption`` heads the Markdown/LaTeX versions and should carry the :func:`stamp`; ``note``
    is appended below the Markdown table.
    """
    folder = results_dir(profile) / "tables"
    paths = {ext: folder / f"{name}.{ext}" for ext in ("csv", "md", "tex")}
    atomic_write_bytes(paths["csv"], frame.to_csv(float_format="%.6g").encode())
    shown = formatted(frame)
    md = shown.to_markdown(stralign="right", disable_numparse=True)
    text = (f"{caption}\n\n" if caption else "") + md + (f"\n\n{note}" if note else "") + "\n"
    atomic_write_bytes(paths["md"], text.encode())
    latex = shown.to_latex(escape=True, caption=caption or None, label=f"tab:{name}")
    atomic_write_bytes(paths["tex"], latex.encode())
    return paths


def save_figure(fig, name: str, profile: dict | str, footer: str | None = None) -> dict[str, Path]:
    """Write ``results/<profile>/figures/<name>.{png,pdf}`` atomically; ``footer`` (the stamp)
    is drawn under the axes so the file states its provenance."""
    if footer:
        fig.text(0.01, 0.005, footer, fontsize=6, color="0.35", ha="left", va="bottom")
    folder = results_dir(profile) / "figures"
    paths = {}
    for ext, metadata in (("png", {"Software": None}), ("pdf", {"CreationDate": None, "Producer": None})):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=ext, dpi=150, bbox_inches="tight", metadata=metadata)
        paths[ext] = folder / f"{name}.{ext}"
        atomic_write_bytes(paths[ext], buffer.getvalue())
    return paths


# --- footprint of the compressed model -------------------------------------------------------------
def sparse_available() -> bool:
    """Whether :mod:`kgdistill.sparse` (``export_sparse``/``load_sparse``) is installed."""
    import importlib.util

    return importlib.util.find_spec("kgdistill.sparse") is not None


def ensure_weights(spec: RunSpec | RunConfig, runs_dir: str | os.PathLike, data_dir=None, device: str | None = "auto",
                   show_progress: bool = False) -> Path:
    """Path of the run's ``best.pt``; when only the record exists (checkpoints are not committed),
    the run is trained again to recreate it (same numbers on CPU; a new record and provenance)."""
    from .runner import run, run_dir_for

    config = spec.config if isinstance(spec, RunSpec) else spec
    weights = run_dir_for(config, runs_dir) / "best.pt"
    if not weights.exists():
        run(config, runs_dir, data_dir=data_dir, device=device, show_progress=show_progress, force=True)
    return weights


def footprint(record: dict, run_dir: str | os.PathLike, dataset, queries: int = 1000, repeats: int = 3) -> pd.DataFrame:
    """Size and ranking speed of a pruned-student run (MetaSD) in three forms, on CPU:

    * ``source (dense)``: the unpruned source model;
    * ``student (sparse file, dense kernels)``: the student written by
      :func:`kgdistill.sparse.export_sparse` and rebuilt by :func:`~kgdistill.sparse.load_sparse`
      (bit-identical scores; ``test MRR`` must equal the record's);
    * ``student (sparse kernels)``: :class:`~kgdistill.sparse.SparseScorer` (sparse × dense products).

    Columns: ``parameters`` (non-zero for the students), ``disk bytes`` (``torch.save`` of the dense
    tables / the sparse artifact), ``memory bytes`` (float32 tables / CSR storage), ``test MRR``
    (full filtered test evaluation), ``seconds`` (best of ``repeats`` passes ranking the first
    ``queries`` test queries against all entities) and ``queries/s``.
    """
    import torch

    from . import sparse
    from .evaluation import evaluate
    from .models import build_model
    from .models import load_module_state

    run_dir = Path(run_dir)
    weights = run_dir / "best.pt"
    if not weights.exists():
        raise FileNotFoundError(f"{weights} is missing (checkpoints are not committed); call study.ensure_weights first")
    config = RunConfig.from_dict(record["config"])
    state = torch.load(weights, map_location="cpu", weights_only=False)["models"]
    source = build_model(config.model, dataset.n_entities, dataset.n_relations, config.rank, config.init_scale)
    load_module_state(source, state["teacher"])
    source.eval()
    artifact = run_dir / "sparse" / "student.pt"
    with warnings.catch_warnings():  # torch's "sparse CSR is in beta" notices
        warnings.filterwarnings("ignore", message=".*[Ss]parse.*", category=UserWarning)
        exported = sparse.export_sparse(source, artifact)
        student = sparse.load_sparse(artifact)
        scorer = sparse.SparseScorer(artifact)
    q = dataset.queries("test")[:queries]

    def best_time(fn) -> float:
        best = math.inf
        with torch.no_grad():
            fn(q)
            for _ in range(repeats):
                start = time.perf_counter()
                fn(q)
                best = min(best, time.perf_counter() - start)
        return best

    buffer = io.BytesIO()
    torch.save({"entity": source.entity.detach(), "relation": source.relation.detach()}, buffer)
    forms = {
        "source (dense)": (lambda x: source.score_tails(x), source.parameter_counts()["dense"], len(buffer.getvalue()), exported["dense_bytes"]),
        "student (sparse file, dense kernels)": (lambda x: student.score_tails(x, masked=True), exported["parameters"], exported["bytes"], exported["dense_bytes"]),
        "student (sparse kernels)": (scorer, exported["parameters"], exported["bytes"], scorer.storage_bytes()),
    }
    rows = []
    for name, (fn, parameters, disk, memory) in forms.items():
        with torch.no_grad():
            mrr = evaluate(fn, dataset, "test", config.tie_policy, config.eval_batch_size, device="cpu")["MRR"]
        rows.append({"model": name, "parameters": parameters, "disk bytes": disk, "memory bytes": memory, "test MRR": mrr,
                     "seconds": best_time(fn)})
    frame = pd.DataFrame(rows).set_index("model").rename_axis(None)
    frame["queries/s"] = len(q) / frame["seconds"]
    return frame


def read_record(run_dir: str | os.PathLike) -> dict:
    return read_json(Path(run_dir) / "record.json")


# --- the notebooks' entry point ------------------------------------------------------------------------
class Study:
    """A profile plus the notebook parameters (where runs live, progress bars, data folder).

    ``Study("smoke")`` loads ``params/smoke.yaml``, applies its thread setting, and offers the
    steps every notebook repeats: specs of a table, training/reusing the runs, provenance,
    writing tables and figures under ``results/<profile>/``.
    """

    def __init__(
        self,
        profile: str | os.PathLike,
        runs_dir: str | os.PathLike | None = None,
        data_dir: str | os.PathLike | None = None,
        show_progress: bool = False,
        retrain_since: float | None = None,
    ):
        self.profile = load_profile(profile)
        self.name = self.profile["name"]
        self.runs_dir = Path(runs_dir).resolve() if runs_dir else Path(self.profile["runs_dir"])
        self.data_dir = data_dir
        self.show_progress = bool(show_progress)
        self.retrain_since = retrain_since
        self.device = self.profile.get("device", "auto")
        self._datasets: dict = {}
        setup(self.profile)

    def describe(self) -> str:
        """What the profile trains: stand-in datasets and seeds (deterministic text)."""
        lines = [f"profile: {self.name} ({Path(self.profile['_path']).name})"]
        if self.profile.get("description"):
            lines.append(" ".join(str(self.profile["description"]).split()))
        for ds in self.profile["datasets"]:
            lines.append(f"  {ds}: trained on {trained_on(self.profile, ds)}")
        lines.append(f"  seeds: {list(self.profile['seeds'])}")
        return "\n".join(lines)

    def section(self, key: str) -> dict:
        if key not in self.profile:
            raise KeyError(f"profile {self.name} has no section {key!r}")
        return self.profile[key]

    def specs(self, table: str) -> list[RunSpec]:
        return table_specs(self.profile, table)

    def figure1_specs(self) -> list[RunSpec]:
        return figure1_specs(self.profile)

    def footprint_specs(self) -> list[RunSpec]:
        return footprint_specs(self.profile)

    def run(self, specs: Iterable[RunSpec | RunConfig]) -> dict[str, dict]:
        return run_all(specs, self.runs_dir, self.show_progress, self.data_dir, self.device, self.retrain_since)

    def dataset(self, name: str):
        """A benchmark by name, loaded once per Study."""
        from .datasets import canonical_name, load_dataset

        key = canonical_name(name)
        if key not in self._datasets:
            self._datasets[key] = load_dataset(key, self.data_dir)
        return self._datasets[key]

    def trained_on(self, paper_dataset: str) -> str:
        return trained_on(self.profile, paper_dataset)

    def title(self, paper_dataset: str) -> str:
        """``FB15k-237`` or ``FB15k-237 (trained on UMLS as a stand-in)``."""
        actual = self.trained_on(paper_dataset)
        return paper_dataset if actual == paper_dataset else f"{paper_dataset} (trained on {actual} as a stand-in)"

    def table(self, table: str, records: dict[str, dict], subset: str = "all", paper_key: str | None = None,
              extra: Sequence[RunSpec | NamedRunSpec] = (), **kwargs) -> dict[str, pd.DataFrame]:
        """``{paper dataset: results_table}`` for ``profile.tables[table]`` with the published
        MetaSD numbers of ``paper_key`` (default: the table's own name). ``extra`` specs (e.g. the
        DistilE row of :func:`kgdistill.distile.experiments.table1_rows`; their records must be in
        ``records``) become rows after the profile's, with published columns empty unless the
        paper has a row of the same label."""
        spec = self.profile["tables"][table]
        paper = published("metasd", paper_key or table)
        quoted = paper.get("quoted", {}) if spec.get("quoted", False) else {}
        out = {}
        for ds in spec["datasets"]:
            specs = [s for s in [*self.specs(table), *extra] if s.paper_dataset == ds]
            out[ds] = results_table(specs, records, paper.get(ds, {}), subset=spec.get("subset", subset), quoted=quoted, **kwargs)
        return out

    def stamp(self, records) -> str:
        return stamp(records, self.profile)

    def save_table(self, frame: pd.DataFrame, name: str, records=None, caption: str = "", note: str = "") -> dict[str, Path]:
        full = (caption + "\n\n" if caption else "") + self.stamp(records)
        return save_table(frame, name, self.profile, caption=full, note=note)

    def save_figure(self, fig, name: str, records=None) -> dict[str, Path]:
        return save_figure(fig, name, self.profile, footer=self.stamp(records))
