"""Profiles: where a study's files are, what the papers published, and every run a profile asks for.

Owns the locations (``params/<profile>.yaml``, ``results/<profile>/``), the published numbers
(:func:`published`, from ``published.yaml``), loading and checking a profile
(:func:`load_profile`: an unknown key anywhere fails with the key, the file and the closest valid
name), the run configs it generates (:func:`config_for`, :func:`trained_on`) and the table rows
that read them (:class:`RunSpec`, :class:`NamedRunSpec`, :func:`table_specs`, :func:`all_specs`).

A profile's sections:

* ``runs_dir``, ``device``, ``threads``, ``env``, ``seeds``: where records live (relative to the
  repository root: :func:`kgdistill.core.environment.repo_path`), what runs them;
* ``subset_of``: the study profile whose runs this one trains a part of (``gpu``: ``paper``); such
  a profile has fewer tables and no notebook sections;
* ``slurm``: what each run's job asks a Slurm cluster for (:mod:`kgdistill.study.launch`);
* ``common``: :class:`~kgdistill.metasd.config.RunConfig` overrides for every run;
* ``datasets``: for each paper dataset (``FB15k-237``, ``WN18RR``) the benchmark actually trained
  (``data``; the smoke profile trains a small stand-in), its ``config`` overrides and per-recipe
  ``recipes`` overrides;
* ``recipes``: named RunConfig overrides, one per model of the paper (``teacher: <recipe>``
  makes a KD run distil from that recipe's finished baseline run);
* ``tables`` / ``figure1`` / ``footprint`` / ``dataset_stats``: which rows, datasets, ranks,
  buckets the notebooks show;
* sections that a notebook's module owns and registers (:func:`register_section`: its schema and
  a load-time check), so that this module knows none of them: ``distile`` (notebook 06,
  :mod:`kgdistill.study.distile.grid`), ``distile_in_table1`` (DistilE as an added row of Table 1,
  :mod:`kgdistill.study.distile.in_table1`), ``equal_size`` (notebook 08,
  :mod:`kgdistill.study.equal_size`), ``official_code`` (notebook 07, :mod:`kgdistill.study.official`).
  Importing :mod:`kgdistill.study` registers them.

A run's config is ``RunConfig(**(common | datasets[d].config | recipes[r] | datasets[d].recipes[r]
| overrides), dataset=datasets[d].data, seed=seed)``, so a record's hash follows from the profile.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

import yaml

from ..core.environment import repo_path, repo_root
from ..metasd.config import RunConfig
from ..protocol.configbase import ConfigBase, unknown_keys_message
from ..protocol.registry import FAMILIES

PUBLISHED_FILE = Path(__file__).resolve().parent.parent / "published.yaml"

# --- the keys a profile may hold ------------------------------------------------------------------
#: A schema node: ``None`` (any value), the name of a registered config class (``RUN``,
#: ``"DistilEConfig"``: a mapping of that config's fields) or a mapping of known keys, ``"*"``
#: standing for freely named entries (datasets, recipes, tables, models).
RUN = "RunConfig"
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
}
REQUIRED_SECTIONS = ("seeds", "common", "datasets", "recipes", "tables")


@dataclass(frozen=True)
class Section:
    """A profile section that a notebook's module owns: its keys (a schema node) and ``check``,
    called with the loaded profile when the section is present (raise ``ValueError`` naming the
    key and the fix)."""

    name: str
    schema: object
    check: Callable[[dict], None] | None = None


#: the registered notebook sections, by name (:func:`register_section`)
SECTIONS: dict[str, Section] = {}


def register_section(name: str, schema: object, check: Callable[[dict], None] | None = None) -> Section:
    """Let profiles hold section ``name`` (its keys checked against ``schema``, then ``check``)."""
    SECTIONS[name] = Section(name, schema, check)
    SCHEMA[name] = schema
    return SECTIONS[name]


def _config_class(kind: str) -> type[ConfigBase]:
    classes = {family.config_class.__name__: family.config_class for family in FAMILIES.values()}
    if kind not in classes:
        raise KeyError(f"schema names config class {kind!r}; registered: {sorted(classes)}")
    return classes[kind]


def _fields(kind: str) -> list[str]:
    return _config_class(kind).field_names()


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
    # relative to the repository root, like every folder a user names (repo_path)
    profile["runs_dir"] = str(repo_path(profile.get("runs_dir") or f"results/{profile['name']}/runs"))
    profile["_path"] = str(path)
    for spec in all_specs(profile):  # validates every config
        spec.config
    for section in SECTIONS.values():
        if profile.get(section.name) and section.check is not None:
            section.check(profile)
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
def dataset_block(profile: dict, paper_dataset: str) -> dict:
    blocks = profile["datasets"]
    if paper_dataset not in blocks:
        raise ValueError(f"profile {profile['name']}: no datasets.{paper_dataset} block; it has {sorted(blocks)}")
    return blocks[paper_dataset] or {}


def trained_on(profile: dict, paper_dataset: str) -> str:
    """The benchmark a profile trains for a paper dataset (a stand-in in the smoke profile)."""
    return dataset_block(profile, paper_dataset).get("data", paper_dataset)


def title(profile: dict, paper_dataset: str) -> str:
    """``FB15k-237`` or ``FB15k-237 (trained on UMLS as a stand-in)``."""
    actual = trained_on(profile, paper_dataset)
    return paper_dataset if actual == paper_dataset else f"{paper_dataset} (trained on {actual} as a stand-in)"


def config_for(profile: dict, paper_dataset: str, recipe: str, seed: int | None = None, **overrides) -> RunConfig:
    """The RunConfig of ``recipe`` on ``paper_dataset`` under ``profile`` (see the module docstring)."""
    recipes = profile["recipes"]
    if recipe not in recipes:
        raise ValueError(f"profile {profile['name']}: unknown recipe {recipe!r}; recipes are {sorted(recipes)}")
    block = dataset_block(profile, paper_dataset)
    values: dict = {}
    for part in (profile.get("common"), block.get("config"), recipes[recipe], (block.get("recipes") or {}).get(recipe),
                 overrides):
        values.update(part or {})
    teacher = values.pop("teacher", None)
    if teacher is not None:
        if isinstance(teacher, str):
            teacher_config = config_for(profile, paper_dataset, teacher, seed)
            if teacher_config.method != "baseline":
                raise ValueError(
                    f"profile {profile['name']}: recipe {recipe!r} has teacher {teacher!r}, which is not a baseline"
                )
            teacher = teacher_config.to_dict()
        values["teacher"] = teacher
    values["dataset"] = trained_on(profile, paper_dataset)
    values["seed"] = int(profile["seeds"][0] if seed is None else seed)
    try:
        return RunConfig.from_dict(values)
    except ValueError as err:
        raise ValueError(f"profile {profile['name']}, recipe {recipe!r} on {paper_dataset}: {err}") from err


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
    """A table row read from a run that no :class:`~kgdistill.metasd.config.RunConfig` describes (e.g. a
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
    specs += [RunSpec(recipe, ds, recipe, int(seed), None, profile=profile)
              for recipe in fig.get("students", []) for seed in profile["seeds"]]
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
