"""The compressed MetaSD student's footprint: its sparse export measured against the dense source.

Owns getting a finished run's weights back (:func:`ensure_weights`: checkpoints are not
committed, so a run with only its record is trained again), measuring the three forms of the
model (:func:`footprint`: dense source, sparse file with dense kernels, sparse kernels; sizes,
test MRR, ranking speed) and notebook 05's footprint section (:class:`Footprint`). The sparse
format itself is :mod:`kgdistill.compression.sparse`.

The runs folder is only read here (it may be a read-only shared one): the sparse export, a
derived file, goes under the study's results folder, ``<results_dir>/derived/<run name>/sparse/``
(:meth:`Footprint.export_dir`), and the measurement beside it, ``footprint.json``
(:mod:`kgdistill.study.measured`). Measuring needs the run's ``best.pt``, which is not committed:
:meth:`Footprint.measure` reads the saved measurement back unless asked to measure again
(``retime``), and without weights or a fitting measurement it skips the footprint in one line
(:attr:`Footprint.origin`) instead of training for most of an hour, unless told to train
(``--retrain``; ``scripts/derive_footprint.py`` trains only the footprint run's weights). When
the saved sparse export is there, reading back re-checks it: its test MRR, computed from the
file, is compared with the saved one.
"""
from __future__ import annotations

import io
import logging
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..core.records import BEST, machine_description, read_json
from ..core.records import pick_device as torch_device
from ..metasd.config import RunConfig
from ..protocol.configbase import ConfigBase
from .measured import read_measurement, save_measurement
from .measured import shown_path as _shown
from .tables import convergence_mark, format_table

log = logging.getLogger("kgdistill")


def ensure_weights(spec, runs_dir: str | os.PathLike, data_dir=None, device: str | None = "auto",
                   show_progress: bool = False, required_env: dict[str, str] | None = None) -> Path:
    """Path of the run's ``best.pt`` (``spec``: a :class:`~kgdistill.study.profile.RunSpec` or a
    config); when only the record exists (checkpoints are not committed), the run is trained
    again in ``<runs_dir>/.retrain`` on ``device`` and only its weights are installed (same numbers
    on CPU; the committed record stays as it is: :func:`kgdistill.protocol.runner.best_weights`), which
    ``required_env`` (a profile's ``env``) must be in force for (:func:`kgdistill.protocol.runner.run`)."""
    from ..core.records import pick_device
    from ..protocol.runner import best_weights

    config = spec if isinstance(spec, ConfigBase) else spec.config
    weights, _ = best_weights(config, runs_dir, device=pick_device(device), data_dir=data_dir,
                              show_progress=show_progress, required_env=required_env)
    return weights


def read_record(run_dir: str | os.PathLike) -> dict:
    """The ``record.json`` of a run folder."""
    return read_json(Path(run_dir) / "record.json")


def footprint(record: dict, run_dir: str | os.PathLike, dataset, export_dir: str | os.PathLike, queries: int = 1000,
              repeats: int = 3) -> pd.DataFrame:
    """Size and ranking speed of a pruned-student run (MetaSD) in three forms, on CPU; the run's
    folder ``run_dir`` is only read, the sparse export is written to ``export_dir``:

    * ``source (dense)``: the unpruned source model;
    * ``student (sparse file, dense kernels)``: the student written by
      :func:`kgdistill.compression.sparse.export_sparse` and rebuilt by
      :func:`~kgdistill.compression.sparse.load_sparse` (bit-identical scores; ``test MRR`` must equal the record's);
    * ``student (sparse kernels)``: :class:`~kgdistill.compression.sparse.SparseScorer` (sparse × dense products).

    Columns: ``parameters`` (non-zero for the students), ``disk bytes`` (``torch.save`` of the dense
    tables / the sparse artifact), ``memory bytes`` (float32 tables / CSR storage), ``test MRR``
    (full filtered test evaluation), ``seconds`` (best of ``repeats`` passes ranking the first
    ``queries`` test queries against all entities), ``queries/s`` and ``converged`` (the run's
    :func:`~kgdistill.study.tables.convergence_mark`, the same on every row: ``"no †"`` when it stopped
    at its epoch budget, and the table's text and saved files then end with the budget footnote).
    """
    import torch

    from ..compression import sparse
    from ..core.evaluation import evaluate
    from ..core.timer import timed
    from ..protocol.runner import load_best

    run_dir = Path(run_dir)
    config = RunConfig.from_dict(record["config"])
    # the source model (the pruned student is the source seen through its installed mask)
    source, _ = load_best(config, run_dir.parent, dataset, "cpu", model="teacher", retrain_missing=False)
    artifact = Path(export_dir) / "student.pt"
    with warnings.catch_warnings():  # torch's "sparse CSR is in beta" notices
        warnings.filterwarnings("ignore", message=".*[Ss]parse.*", category=UserWarning)
        exported = sparse.export_sparse(source, artifact)
        student = sparse.load_sparse(artifact)
        scorer = sparse.SparseScorer(artifact)
    q = dataset.queries("test")[:queries]

    def best_time(fn) -> float:
        with torch.no_grad():
            return min(timed(lambda: fn(q), "cpu", repeats=repeats, warmup=1), default=math.inf)

    buffer = io.BytesIO()
    torch.save({"entity": source.entity.detach(), "relation": source.relation.detach()}, buffer)
    forms = {
        "source (dense)": (lambda x: source.score_tails(x), source.parameter_counts()["dense"],
                           len(buffer.getvalue()), exported["dense_bytes"]),
        "student (sparse file, dense kernels)": (lambda x: student.score_tails(x, masked=True), exported["parameters"],
                                                 exported["bytes"], exported["dense_bytes"]),
        "student (sparse kernels)": (scorer, exported["parameters"], exported["bytes"], scorer.storage_bytes()),
    }
    rows = []
    for name, (fn, parameters, disk, memory) in forms.items():
        with torch.no_grad():
            mrr = evaluate(fn, dataset, "test", config.tie_policy, config.eval_batch_size, device="cpu")["MRR"]
        rows.append({"model": name, "parameters": parameters, "disk bytes": disk, "memory bytes": memory,
                     "test MRR": mrr, "seconds": best_time(fn)})
    frame = pd.DataFrame(rows).set_index("model").rename_axis(None)
    frame["queries/s"] = len(q) / frame["seconds"]
    frame["converged"] = convergence_mark([record])
    return frame


@dataclass
class Footprint:
    """Notebook 05's footprint section: the run of the profile's ``footprint`` section (``spec``,
    its ``record``, trained or reused), then :meth:`measure` (read back, or measured on the paper
    dataset's benchmark from the run's weights) and :meth:`summary`, the deterministic part."""

    study: object  # the kgdistill.study.Study it belongs to
    spec: object
    record: dict
    frame: pd.DataFrame | None = None
    #: one line: where :attr:`frame` came from (measured, read back) or why there is none
    origin: str | None = None

    @classmethod
    def of(cls, study) -> "Footprint":
        """The footprint run of ``study``'s profile, trained or reused."""
        spec = study.footprint_specs()[0]
        return cls(study, spec, study.run([spec])[spec.run_name])

    @property
    def section(self) -> dict:
        return self.study.section("footprint")

    @property
    def export_dir(self) -> Path:
        """Where the sparse export goes: ``<results_dir>/derived/<run name>/sparse`` (a derived
        file belongs with the tables and figures, never in the runs folder, which may be read-only)."""
        return Path(self.study.root) / "derived" / self.spec.run_name / "sparse"

    @property
    def measurement_file(self) -> Path:
        """The saved measurement: ``<results_dir>/derived/<run name>/footprint.json``."""
        return self.export_dir.parent / "footprint.json"

    def about(self) -> dict:
        """What a saved measurement must have been made for to be read back: this run, this record
        (its provenance) and the section's query count and repeats."""
        prov = self.record.get("provenance", {})
        return {"run": self.spec.run_name, "record": {k: prov.get(k) for k in ("git_commit", "date")},
                "queries": self.section["queries"], "repeats": self.section["repeats"]}

    def describe(self) -> str:
        """Which run, on what, and its student's non-zero parameter count (deterministic)."""
        nonzero = self.record["parameter_counts"]["student"]["nonzero"]
        return (f"{self.spec.row} on {self.study.title(self.section['dataset'])} - student non-zero parameters: "
                f"{nonzero:,}")

    def measure(self, retime: bool = True, train: bool | None = None) -> pd.DataFrame | None:
        """The footprint (:func:`footprint`): read back from :attr:`measurement_file` unless
        ``retime`` or nothing saved fits (:meth:`about`); else measured from the run's ``best.pt``
        (export, sizes, MRR, timings) and saved. Without ``best.pt`` (not committed), the weights
        are trained again only when ``train`` (default: the study retrains, ``--retrain``); else
        None, and :attr:`origin` says so in one line."""
        S, fp = self.study, self.section
        saved = self.measurement_file
        found = None if retime else read_measurement(saved, self.about())
        if found is not None:
            log.info("footprint of %s read back from %s", self.spec.run_name, _shown(saved))
            self.frame = found.frame
            self.origin = self._origin(saved, found.machine, self._check_export())
            return self.frame
        from ..protocol.runner import run_dir_for

        weights = run_dir_for(self.spec.config, S.runs_dir) / BEST
        if not weights.exists() and not (S.retrain_since is not None if train is None else train):
            self.frame = None
            self.origin = (f"footprint skipped: run {self.spec.run_name} has no {BEST} (checkpoints are not committed) "
                           f"and no measurement for its record is saved in {_shown(saved)}; "
                           f"scripts/derive_footprint.py --profile {S.name} trains its weights again and measures it")
            log.info("%s", self.origin)
            return None
        weights = ensure_weights(self.spec, S.runs_dir, S.data_dir, S.device, required_env=S.required_env)
        self.record = read_record(weights.parent)
        dataset = S.dataset(S.trained_on(fp["dataset"]))
        log.info("footprint of %s: measuring (export, test MRR, %d passes)", self.spec.run_name, fp["repeats"])
        self.frame = footprint(self.record, weights.parent, dataset, self.export_dir, queries=fp["queries"],
                               repeats=fp["repeats"])
        machine = machine_description(torch_device("cpu"))
        save_measurement(saved, self.frame, self.about(), machine=machine)
        # the student's MRR was just computed from the export it wrote: the same clause as when read back
        self.origin = self._origin(saved, machine, self._export_clause(self.frame["test MRR"].iloc[1], True))
        return self.frame

    def _origin(self, saved: Path, machine: str, check: str) -> str:
        """The line :attr:`origin` has for a footprint, the same whether measured now or read back
        (an unchanged measurement leaves the executed notebook unchanged; the console says which)."""
        return (f"footprint: {_shown(saved)} (measured on {machine}){check}; "
                "retime=True (scripts/reproduce.py --retime) measures it again")

    @staticmethod
    def _export_clause(mrr: float, same: bool, saved: float | None = None) -> str:
        verdict = "the same" if same else f"NOT the saved {saved:.6f}"
        return f"; its sparse export scores test MRR {mrr:.6f}, {verdict}"

    def _check_export(self) -> str:
        """When the sparse export is saved beside a measurement read back: its test MRR, computed
        from the file, against the measurement's (a clause for :attr:`origin`; empty without it)."""
        artifact = self.export_dir / "student.pt"
        if not artifact.is_file():
            return ""
        import torch

        from ..compression import sparse
        from ..core.evaluation import evaluate

        config = RunConfig.from_dict(self.record["config"])
        dataset = self.study.dataset(self.study.trained_on(self.section["dataset"]))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*[Ss]parse.*", category=UserWarning)
            student = sparse.load_sparse(artifact)
        with torch.no_grad():
            mrr = evaluate(lambda x: student.score_tails(x, masked=True), dataset, "test", config.tie_policy,
                           config.eval_batch_size, device="cpu")["MRR"]
        saved = self.frame["test MRR"].iloc[1]
        return self._export_clause(mrr, math.isclose(mrr, saved, rel_tol=0, abs_tol=1e-9), saved)

    def summary(self) -> str:
        """Sizes and the exported student's test MRR against the record's (no timings), with the
        run's ``converged`` mark (and the budget footnote when it hit its epoch budget); the one
        line of :attr:`origin` when there is no footprint."""
        if self.frame is None and self.origin is None:
            self.measure()
        frame = self.frame
        if frame is None:
            return self.origin
        delta = frame["test MRR"].iloc[1] - self.record["test"]["student"]["all"]["MRR"]
        keeps = frame["parameters"].iloc[1] / frame["parameters"].iloc[0]
        return "\n".join([
            format_table(frame[["parameters", "test MRR", "converged"]].iloc[:2]),
            f"exported student's test MRR minus the recorded student MRR: {delta:+.4f}",
            f"student keeps {keeps:.4f} of the source's parameters",
        ])

