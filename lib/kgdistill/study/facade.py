"""The notebooks' facade: ``S = Study(profile)``, then one call per step a notebook takes.

:class:`Study` holds a profile plus the notebook parameters (runs folder, data folder, progress
bars, ``retrain_since``) and offers: :meth:`Study.results` (a section's specs, records trained or
reused, runs frame and tables, in one call), :meth:`Study.table`, :meth:`Study.footprint`,
:meth:`Study.long_tail`, :meth:`Study.distile`, provenance stamps and saving tables and figures
under ``results/<profile>/``. The work is done elsewhere: :mod:`kgdistill.study.profile` (profiles,
configs, specs, published numbers), :mod:`kgdistill.study.tables` (records -> DataFrames),
:mod:`kgdistill.study.outputs` (stamps, files), :mod:`kgdistill.study.footprint`, :mod:`kgdistill.protocol.runner`
(training). The names the notebooks use from those modules are re-exported here
(``study.published``, ``study.format_table``, ``study.runs_frame``, notebook 06's ``study.ds_verdict``, ...).

Everything a Study writes goes under one root, ``results_dir`` (default ``results/<profile>/``):
``tables/``, ``figures/`` and, when a root is chosen, the records in ``runs/`` (``runs_dir``
moves only the records, so it needs a chosen root). Training refuses to start when the profile's
``env`` (CPU-kernel pins, e.g. the smoke profile's) is not in force in this process
(:func:`kgdistill.core.environment.check_numeric_env`): a notebook run by hand without them would
otherwise write records whose numbers differ in the last digits from the committed ones.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Hashable, Iterable, Mapping, Sequence

import pandas as pd

from ..core.environment import forward_library_log, profile_env, repo_path, show_library_log
from ..metasd.config import RunConfig
from .distile.claims import ds_verdict
from .distile.curves import curves_figure, curves_summary
from .distile.figures import dimension_grid_figure
from .footprint import Footprint, ensure_weights, footprint, read_record
from .outputs import output_root, save_figure, save_table, save_tables, stamp
from .parameters import check_injected_parameters
from .profile import (
    NamedRunSpec,
    RunSpec,
    all_specs,
    config_for,
    figure1_specs,
    footprint_specs,
    load_profile,
    profile_path,
    published,
    results_dir,
    table_specs,
    title,
    trained_on,
)
from .queue import run_all, setup
from .tables import (
    METRICS,
    bucket_frame,
    bucket_table,
    format_table,
    formatted,
    long_tail_comparison,
    model_dim,
    model_name,
    record_for,
    results_table,
    runs_frame,
    size_accuracy_frame,
    stats_mismatches,
    threshold_search,
    valid_curves,
)

__all__ = [
    "METRICS", "Footprint", "LongTail", "NamedRunSpec", "Results", "RunSpec", "Study",
    "all_specs", "bucket_frame", "bucket_table", "config_for", "ensure_weights", "figure1_specs", "footprint",
    "footprint_specs", "format_table", "formatted", "load_profile", "model_dim", "model_name", "profile_path",
    "published", "read_record", "record_for", "results_dir", "results_table", "run_all", "runs_frame", "save_figure",
    "save_table", "save_tables", "setup", "size_accuracy_frame", "stamp", "table_specs", "trained_on", "valid_curves",
    "curves_figure", "curves_summary", "dimension_grid_figure", "ds_verdict",
]


# --- what one call returns -------------------------------------------------------------------------
@dataclass
class Results:
    """A section's runs and tables (:meth:`Study.results`): ``specs`` (one per row, dataset and
    seed), ``records`` (``{run name: record}``, trained or reused), ``runs`` (:func:`runs_frame`),
    ``tables`` (``{paper dataset: results table}``; Figure 1: ``{"figure1": points}``) and
    ``added``, the DistilE row of :func:`kgdistill.study.distile.in_table1.table1_rows` when the profile
    adds it to this table (its specs and records are part of the above)."""

    section: str
    specs: list
    records: dict[str, dict]
    runs: pd.DataFrame
    tables: dict[str, pd.DataFrame]
    added: object = None

    def describe(self) -> str:
        """How many models from how many runs, and each one's selected epoch and validation MRR
        (deterministic: nbval compares it)."""
        return (f"{len(self.runs)} model(s) read from {len(self.records)} run(s)\n"
                + format_table(self.runs.drop(columns=["run", "s/epoch"])))

    def timings(self) -> str:
        """Run names and seconds per epoch (machine-dependent: print in an ignored cell)."""
        return format_table(self.runs[["run", "s/epoch"]], precision=2)


@dataclass
class LongTail:
    """The long-tail split of notebook 00 against the paper's Sec. 4.2 (:meth:`Study.long_tail`)."""

    dataset: str
    threshold: int
    paper: dict
    frame: pd.DataFrame
    counts: list[int] = field(repr=False)

    def heading(self) -> str:
        return f"{self.dataset}, threshold {self.threshold} training triples (paper: {self.paper['threshold']})"

    def threshold_search(self) -> str:
        """Which thresholds would give the paper's relation count (:func:`threshold_search`)."""
        return threshold_search(self.counts, self.paper["relations"], self.threshold)


# --- the notebooks' entry point ------------------------------------------------------------------------
class Study:
    """A profile plus the notebook parameters (where outputs and runs live, progress bars, data folder, retime).

    ``Study("smoke")`` (a profile name or a path to a profile file) loads ``params/smoke.yaml``,
    applies its thread setting, and offers the steps every notebook repeats: a section's results,
    provenance, writing tables and figures under :attr:`root`.

    ``results_dir``: the root of everything written (default ``results/<profile>/``; when given,
    records default to ``<results_dir>/runs``). ``runs_dir``: read and train records there
    instead (needs ``results_dir``). Relative folders (``results_dir``, ``runs_dir``,
    ``data_dir``) are relative to the repository root, not to the working directory (a kernel's is
    ``notebooks/``): :func:`kgdistill.core.environment.repo_path`. Built in a kernel that papermill
    started, it first refuses a ``-p`` name the notebook does not declare
    (:func:`kgdistill.study.parameters.check_injected_parameters`). ``enforce_env=False`` trains
    even when the profile's ``env`` is not in force - for in-process tests only: the records then
    state the numeric environment they were made under (``provenance.numeric_env``), and their
    numbers may differ from records made under the profile's pins. ``retime``: time again what
    is timed (:mod:`kgdistill.study.measured`: otherwise the saved timings are read back).
    """

    def __init__(
        self,
        profile: str | os.PathLike,
        runs_dir: str | os.PathLike | None = None,
        data_dir: str | os.PathLike | None = None,
        show_progress: bool = False,
        retrain_since: float | None = None,
        results_dir: str | os.PathLike | None = None,
        enforce_env: bool = True,
        retime: bool = False,
    ):
        check_injected_parameters()  # papermill -p result_dir X (a typo) stops here, before anything runs
        if runs_dir and not results_dir:
            raise ValueError(
                f"runs_dir={str(runs_dir)!r} moves only the run records; choose where tables and figures go too: "
                f"results_dir=<folder> (papermill -p results_dir ..., scripts/reproduce.py --results-dir ...). "
                f"With results_dir alone, the records go to <results_dir>/runs."
            )
        self.profile = load_profile(profile)
        self.name = self.profile["name"]
        #: the root of every output: tables/, figures/ (and runs/ when a root is chosen)
        # a relative folder is relative to the repository root, not to the kernel's notebooks/ (repo_path)
        self.root = Path(output_root(self.profile, repo_path(results_dir)))
        if runs_dir:
            self.runs_dir = repo_path(runs_dir)
        else:
            self.runs_dir = self.root / "runs" if results_dir else Path(self.profile["runs_dir"])
        self.enforce_env = bool(enforce_env)
        if show_progress:  # with the bars, the library's messages (e.g. "resuming from epoch 5")
            show_library_log()
        forward_library_log()  # to scripts/reproduce.py's console, when it runs this notebook
        self.data_dir = repo_path(data_dir)
        self.show_progress = bool(show_progress)
        self.retrain_since = retrain_since
        #: measure timings again (DistilE Table 5, the footprint) instead of reading back the saved ones
        self.retime = bool(retime)
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

    @property
    def required_env(self) -> dict[str, str]:
        """The profile's ``env`` that training requires in force (empty with ``enforce_env=False``)."""
        return profile_env(self.profile) if self.enforce_env else {}

    def run(self, specs: Iterable[RunSpec | RunConfig]) -> dict[str, dict]:
        """``{run name: record}`` of the specs' runs, trained when missing (:func:`run_all`)."""
        return run_all(specs, self.runs_dir, self.show_progress, self.data_dir, self.device, self.retrain_since,
                       required_env=self.required_env)

    def dataset(self, name: str):
        """A benchmark by name, loaded once per Study."""
        from ..core.datasets import canonical_name, load_dataset

        key = canonical_name(name)
        if key not in self._datasets:
            self._datasets[key] = load_dataset(key, self.data_dir)
        return self._datasets[key]

    def trained_on(self, paper_dataset: str) -> str:
        return trained_on(self.profile, paper_dataset)

    def title(self, paper_dataset: str) -> str:
        """``FB15k-237`` or ``FB15k-237 (trained on UMLS as a stand-in)``."""
        return title(self.profile, paper_dataset)

    # --- one call per notebook section ---------------------------------------------------------------
    def results(self, section: str) -> Results:
        """Everything a notebook reads for ``section`` (a key of the profile's ``tables``, or
        ``"figure1"``): its specs, their records (trained or reused), the runs frame and the
        tables. Table 1 gets the profile's added DistilE row (``distile_in_table1``) when it has one."""
        if section == "figure1":
            specs = self.figure1_specs()
            records = self.run(specs)
            return Results(section, specs, records, runs_frame(specs, records),
                           {"figure1": size_accuracy_frame(specs, records)})
        specs = self.specs(section)
        records = self.run(specs)
        added = None
        block = self.profile.get("distile_in_table1")
        if block and block.get("table", "table1") == section:
            from .distile.in_table1 import table1_rows

            added = table1_rows(self)
            specs = specs + added.specs
            records = {**records, **added.records}
        tables = self.table(section, records, extra=added.specs if added else ())
        return Results(section, specs, records, runs_frame(specs, records), tables, added)

    def table(self, table: str, records: dict[str, dict], subset: str = "all", paper_key: str | None = None,
              extra: Sequence[RunSpec | NamedRunSpec] = (), **kwargs) -> dict[str, pd.DataFrame]:
        """``{paper dataset: results_table}`` for ``profile.tables[table]`` with the published
        MetaSD numbers of ``paper_key`` (default: the table's own name). ``extra`` specs (e.g. the
        DistilE row of :func:`kgdistill.study.distile.in_table1.table1_rows`; their records must be in
        ``records``) become rows after the profile's, with published columns empty unless the
        paper has a row of the same label."""
        spec = self.profile["tables"][table]
        paper = published("metasd", paper_key or table)
        quoted = paper.get("quoted", {}) if spec.get("quoted", False) else {}
        out = {}
        for ds in spec["datasets"]:
            specs = [s for s in [*self.specs(table), *extra] if s.paper_dataset == ds]
            out[ds] = results_table(specs, records, paper.get(ds, {}), subset=spec.get("subset", subset), quoted=quoted,
                                    **kwargs)
        return out

    def buckets(self, results: Results) -> dict[str, pd.DataFrame]:
        """Per paper dataset of a results' table: test MRR by relation-frequency bucket (the table's
        ``buckets`` edges; :func:`bucket_frame`), relations counted on the benchmark trained."""
        spec = self.profile["tables"][results.section]
        out = {}
        for ds in spec["datasets"]:
            data = self.dataset(self.trained_on(ds))
            counts = dict(zip(data.relations, data.relation_counts().tolist()))
            specs = [s for s in results.specs if s.paper_dataset == ds]
            out[ds] = bucket_frame(specs, results.records, counts, spec["buckets"])
        return out

    def footprint(self) -> Footprint:
        """The footprint run (``footprint`` section), trained or reused; ``.measure()`` exports and times it."""
        return Footprint.of(self)

    def long_tail(self) -> LongTail:
        """The long-tail split of ``dataset_stats.long_tail`` against the paper's Sec. 4.2."""
        from ..core.datasets import long_tail_split

        lt = self.section("dataset_stats")["long_tail"]
        paper = published("metasd", "long_tail")
        dataset = self.dataset(lt["dataset"])
        frame = long_tail_comparison(long_tail_split(dataset, lt["threshold"]).summary(), paper)
        return LongTail(lt["dataset"], lt["threshold"], paper, frame, dataset.relation_counts().tolist())

    def dataset_stats(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Statistics of every ``dataset_stats.datasets`` benchmark, and the rows that differ from
        the known counts (``published("datasets", "stats")``; empty when all match)."""
        stats = pd.DataFrame({name: self.dataset(name).stats() for name in self.section("dataset_stats")["datasets"]}).T
        return stats, stats_mismatches(stats, pd.DataFrame(published("datasets", "stats")).T)

    def distile(self):
        """Notebook 06's :class:`~kgdistill.study.distile.grid.DistilEStudy` on the profile's ``distile`` section."""
        from .distile.grid import DistilEStudy

        return DistilEStudy.from_study(self)

    def equal_size(self):
        """Notebook 08's :class:`~kgdistill.study.equal_size_study.EqualSize` on the profile's ``equal_size``
        section: its runs trained or reused, then measurements, tables, comparisons and the figure."""
        from .equal_size_study import EqualSize

        return EqualSize.of(self)

    def official_code(self):
        """Notebook 07's :class:`~kgdistill.study.official.OfficialResults` on the ``official_code``
        section: its runs trained when missing (or, with ``train_missing: false``, only the records
        that exist), the tables beside the published MetaSD row of Table 1, the selection rules."""
        from .official import OfficialResults, official_specs, section

        block = section(self.profile)
        specs = official_specs(self.profile)
        if block.get("train_missing", True):
            records = self.run(specs)
        else:
            from ..protocol.runner import existing_record, run_dir_for

            found = {s.run_name: existing_record(run_dir_for(s.config, self.runs_dir)) for s in specs}
            records = {name: record for name, record in found.items() if record is not None}
        table1 = published("metasd", "table1")
        titles = {ds: self.title(ds) for ds in block.get("datasets") or []}
        titles.update({name: f"{name} (small graph, trained on {graph['data']})"
                       for name, graph in block["small_graphs"].items()})
        papers = {ds: (table1.get(ds) or {}).get("MetaSD") for ds in block.get("datasets") or []}
        return OfficialResults(block, specs, records, titles, papers, self.name)

    # --- provenance and files --------------------------------------------------------------------------
    def derived_file(self, name: str) -> Path:
        """``<root>/derived/<name>``: a file computed once and read back by later runs (a saved
        timing, :mod:`kgdistill.study.measured`), beside ``tables/`` and ``figures/``."""
        return self.root / "derived" / name

    def stamp(self, records) -> str:
        """The provenance line of an output, from its run records (:func:`.outputs.stamp`). An output
        made from no record (notebook 00's statistics, long-tail split and frequency plot, computed
        from the archives) names the profile and torch only: this process's commit and the clock's
        date would change on every run and every commit while the output does not (``git log``
        dates the committed file)."""
        listed = list(records.values()) if isinstance(records, Mapping) else list(records or [])
        if not any(r and "provenance" in r for r in listed):
            import torch

            return f"profile {self.name} | torch {torch.__version__} | no run records"
        return stamp(records, self.profile)

    def save_table(self, frame: pd.DataFrame, name: str, records=None, caption: str = "", note: str = "",
                   ) -> dict[str, Path]:
        """``<root>/tables/<name>.{csv,md,tex}``, the caption followed by the provenance stamp."""
        full = (caption + "\n\n" if caption else "") + self.stamp(records)
        return save_table(frame, name, self.profile, caption=full, note=note, root=self.root)

    def save_tables(self, frames: pd.DataFrame | Mapping[Hashable, pd.DataFrame], name: str | Callable, records=None,
                    caption: str | Callable = "", titles: Mapping | Callable | None = None, note: str = "",
                    show: bool = True) -> dict[Hashable, dict[str, Path]]:
        """:meth:`save_table` for each ``{key: frame}`` (or one frame), printing each one's files; ``name``,
        ``caption``: templates of ``{key}``, ``{title}`` or functions of the key (:func:`.outputs.save_tables`)."""
        return save_tables(frames, name, self.profile, caption, titles, footer=self.stamp(records), note=note,
                           root=self.root, show=show)

    def save_figure(self, fig, name: str, records=None) -> dict[str, Path]:
        """``<root>/figures/<name>.{png,pdf}`` with the provenance stamp as footer."""
        return save_figure(fig, name, self.profile, footer=self.stamp(records), root=self.root)
