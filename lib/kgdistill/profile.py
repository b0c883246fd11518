"""Profiles: where a study's files are, what the papers published, and every run a profile asks for.

Owns the locations (``params/<profile>.yaml``, ``results/<profile>/``), the published numbers
(:func:`published`, from ``published.yaml``), loading and checking a profile
(:func:`load_profile`: an unknown key anywhere fails with the key, the file and the closest valid
name), the run configs it generates (:func:`config_for`, :func:`trained_on`) and the table rows
that read them (:class:`RunSpec`, :class:`NamedRunSpec`, :func:`table_specs`, :func:`all_specs`).

A profile's sections:

* ``runs_dir``, ``device``, ``threads``, ``env``, ``seeds``: where records live, what runs them;
* ``subset_of``: the study profile whose runs this one trains a part of (``gpu``: ``paper``); such
  a profile has fewer tables and no notebook sections;
* ``slurm``: what each run's job asks a Slurm cluster for (:mod:`kgdistill.launch`);
* ``common``: :class:`~kgdistill.config.RunConfig` overrides for every run;
* ``datasets``: for each paper dataset (``FB15k-237``, ``WN18RR``) the benchmark actually trained
  (``data``; the smoke profile trains a small stand-in), its ``config`` overrides and per-recipe
  ``recipes`` overrides;
* ``recipes``: named RunConfig overrides, one per model of the paper (``teacher: <recipe>``
  makes a KD run distil from that recipe's finished baseline run);
* ``tables`` / ``figure1`` / ``footprint`` / ``dataset_stats``: which rows, datasets, ranks,
  buckets the notebooks show;
* ``distile`` (notebook 06, :mod:`kgdistill.distile.grid`) and ``distile_in_table1``
  (DistilE as an added row of Table 1, :mod:`kgdistill.distile.in_table1`): their runs are
  DistilEConfigs and enter tables as :class:`NamedRunSpec`;
* ``equal_size`` (notebook 08, :mod:`kgdistill.equal_size`): compression at equal size, its own
  benchmarks, source ranks, seeds and RunConfig overrides (``config``, ``per_dataset``, ``per_row``).
* ``official_code`` (notebook 07, :mod:`kgdistill.official`): recipes x datasets (and small graphs),
  runs listed by :func:`official_specs`, checked at load time by :func:`kgdistill.official.check_section`.

A run's config is ``RunConfig(**(common | datasets[d].config | recipes[r] | datasets[d].recipes[r]
| overrides), dataset=datasets[d].data, seed=seed)``, so a record's hash follows from the profile.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from .config import RunConfig
from .configbase import unknown_keys_message
from .distile.config import DistilEConfig
from .environment import repo_root
from .official import SCHEMA_NODE as OFFICIAL_SCHEMA
from .official import SECTION as OFFICIAL_SECTION
from .official import check_section as check_official_section
from .official import section as official_section
from .equal_size import SECTION as EQUAL_SIZE, SECTION_SCHEMA as EQUAL_SIZE_SCHEMA, check_section, sizes_from_stats

PUBLISHED_FILE = Path(__file__).with_name("published.yaml")
TABLE1_SECTION = "distile_in_table1"
TABLE1_DEFAULTS = {"table": "table1", "beside": "MetaSD", "model": "ComplEx"}

# --- the keys a profile may hold ------------------------------------------------------------------
#: A schema node: ``None`` (any value), ``RUN`` / ``DISTILE`` (a mapping of that config's
#: fields) or a mapping of known keys, ``"*"`` standing for freely named entries (datasets,
#: recipes, tables, models).
RUN, DISTILE = "RunConfig", "DistilEConfig"
SCHEMA: dict = {
    "name": None, "description": None, "runs_dir": None, "device": None, "threads": None, "env": None, "seeds": None,
    "subset_of": None,
    "slurm": {"partition": None, "gpus_per_node": None, "cpus_per_task": None, "mem_gb": None, "timeout_min": None,
              "account": None, "constraint": None, "additional": None},
    "common": RUN,
    "datasets": {"*": {"data": None, "config": RUN, "recipes": {"*": RUN}}},
    "recipes": {"*": RUN},
    "tables": {"*": {"datasets": None, "quoted": None, "subset": None, "buckets": None,
                     "rows": {"*": {"recipe": None, "model": None}}}},
    "figure1": {"dataset": None, "curves": None, "ranks": None, "students": None},
    "footprint": {"dataset": None, "recipe": None, "queries": None, "repeats": None},
    "dataset_stats": {"datasets": None, "frequency_plots": None, "long_tail": {"dataset": None, "threshold": None}},
    "distile": {
        "datasets": None, "models": None, "teacher_dim": None, "student_dims": None, "teacher_dims": None,
        "config": DISTILE, "per_dataset": {"*": DISTILE}, "per_model": {"*": DISTILE},
        "per_dataset_model": {"*": {"*": DISTILE}}, "grid": DISTILE,
        "ablation": {"dataset": None, "models": None},
        "figure2": {"dataset": None, "model": None},
        "figure3": {"dataset": None, "model": None, "dim": None, "eval_every": None},
        "timing": {"dataset": None, "models": None, "batch_size": None, "repeats": None, "device": None, "triples": None},
        "train_missing": None,
    },
    TABLE1_SECTION: {"row": None, "table": None, "beside": None, "model": None, "config": DISTILE,
                     "per_dataset": {"*": DISTILE}, "grid": DISTILE},
    EQUAL_SIZE: EQUAL_SIZE_SCHEMA,
    OFFICIAL_SECTION: OFFICIAL_SCHEMA,
}
PROFILE_SECTIONS = tuple(SCHEMA)
REQUIRED_SECTIONS = ("seeds", "common", "datasets", "recipes", "tables")


def _fields(kind: str) -> list[str]:
    return (RunConfig if kind == RUN else DistilEConfig).field_names()


def check_keys(node, schema, where: str, path) -> None:
    """Raise ``ValueError`` naming the file, the place, the unknown key and the closest valid
    name when ``node`` has a key ``schema`` does not know (see :data:`SCHEMA`)."""
    if schema is None or not isinstance(node, dict):
        return  # anything goes here; a value of the wrong type fails where it is used
    if isinstance(schema, str):
        valid, what, children = _fields(schema), f"{schema} field", {}
    else:
        valid, what, children = [k for k in schema if k != "*"], "key", schema
    if "*" not in children:
        unknown = set(map(str, node)) - set(valid)
        if unknown:
            place = f"in {where}" if where else "at the top level"
            raise ValueError(f"profile {path}: {place}: {unknown_keys_message(unknown, valid, what=what)}")
    for key, value in node.items():
        sub = children.get(key, children.get("*"))
        check_keys(value, sub, f"{where}.{key}" if where else str(key), path)


# --- locations ----------------------------------------------------------------------------------
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

    Every key is checked against :data:`SCHEMA` and the config classes' fields, and every config
    the profile can generate is built once, so a typo in a key or a bad value fails at load time
    naming the key (and the closest valid name) or the field.
    """
    path = profile_path(name)
    with open(path) as handle:
        profile = yaml.safe_load(handle) or {}
    if not isinstance(profile, dict):
        raise ValueError(f"profile {path}: expected a mapping at the top level")
    check_keys(profile, SCHEMA, "", path)
    profile.setdefault("name", path.stem)
    for key in REQUIRED_SECTIONS:
        if key not in profile:
            raise ValueError(f"profile {path}: missing section {key!r}")
    runs = Path(profile.get("runs_dir") or f"results/{profile['name']}/runs")
    profile["runs_dir"] = str(runs if runs.is_absolute() else repo_root() / runs)
    profile["_path"] = str(path)
    for spec in all_specs(profile):  # validates every config
        spec.config
    if profile.get(TABLE1_SECTION):
        check_table1_section(profile)
    if profile.get(EQUAL_SIZE):
        check_section(profile[EQUAL_SIZE], sizes_from_stats(published("datasets", "stats")), f"profile {path}: {EQUAL_SIZE}")
    if profile.get(OFFICIAL_SECTION):
        check_official_section(profile["name"], official_section(profile), official_specs(profile))
    return profile


@lru_cache(maxsize=1)
def _published_cached() -> dict:
    with open(PUBLISHED_FILE) as handle:
        return yaml.safe_load(handle)


def published(*keys: str) -> dict:
    """The papers' published numbers (``published.yaml``), optionally a sub-mapping by keys,
    e.g. ``published("metasd", "table1", "FB15k-237")``. Returns a deep copy."""
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


def title(profile: dict, paper_dataset: str) -> str:
    """``FB15k-237`` or ``FB15k-237 (trained on UMLS as a stand-in)``."""
    actual = trained_on(profile, paper_dataset)
    return paper_dataset if actual == paper_dataset else f"{paper_dataset} (trained on {actual} as a stand-in)"


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


# --- DistilE as a row of Table 1: the section and its check ---------------------------------------
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


# --- run specs: the rows of tables and figures ------------------------------------------------------
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
    """The run whose pruned student notebook 05 exports (``footprint``), first seed."""
    fp = profile.get("footprint") or {}
    if not fp:
        return []
    return [RunSpec(fp["recipe"], fp["dataset"], fp["recipe"], int(profile["seeds"][0]), None, profile=profile)]


def all_specs(profile: dict) -> list[RunSpec]:
    """Every run the profile's notebooks need (tables, figure 1, footprint)."""
    specs = [s for table in profile["tables"] for s in table_specs(profile, table)]
    return specs + figure1_specs(profile) + footprint_specs(profile)


def official_specs(profile: dict) -> list[RunSpec]:
    """The runs of notebook 07 (section ``official_code``, :mod:`kgdistill.official`): each of its
    ``recipes`` (row = the section's label) on each of its ``datasets`` for the section's ``seeds``
    (default: the profile's), then on each ``small_graphs`` entry: trained on its ``data``, with
    the ``base`` dataset block's settings (default: the profile's first dataset) and its ``config``
    overriding everything else (recipe included). Empty without the section."""
    if not profile.get(OFFICIAL_SECTION):
        return []
    block = official_section(profile)
    seeds = block.get("seeds") or profile["seeds"]
    recipes = block["recipes"].items()
    specs = [RunSpec(label, ds, recipe, int(seed), profile=profile)
             for ds in block.get("datasets") or [] for label, recipe in recipes for seed in seeds]
    for name, graph in block["small_graphs"].items():
        if name in profile["datasets"] or "data" not in graph:
            raise ValueError(f"profile {profile['name']}: {OFFICIAL_SECTION}.small_graphs.{name} needs 'data' and a "
                             f"name that is not a datasets entry ({sorted(profile['datasets'])})")
        base = _dataset_block(profile, graph.get("base") or next(iter(profile["datasets"])))
        extended = {**profile, "datasets": {**profile["datasets"], name: {**base, "data": graph["data"]}}}
        overrides = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in (graph.get("config") or {}).items())
        specs += [RunSpec(label, name, recipe, int(seed), None, overrides, profile=extended)
                  for label, recipe in recipes for seed in graph.get("seeds") or seeds]
    return specs
