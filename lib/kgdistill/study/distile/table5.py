"""Notebook 06's Table 5: parameters and inference time per backbone and dimension, beside the paper's.

Owns :class:`Table5`, the part of :class:`~kgdistill.study.distile.grid.DistilEStudy` that times
link prediction (:func:`kgdistill.distile.timing.inference_table`) on the section's ``timing``
spec and puts it beside the published Table 5:

* ``timing.dataset``: the paper dataset whose benchmark (or stand-in) is timed;
* ``timing.models`` (default: the section's ``models``);
* ``timing.batch_size`` (default 1024): queries scored per batch;
* ``timing.repeats`` (default 3): passes per model; the table shows their median (``seconds``) and
  range (``seconds min`` / ``seconds max``), and the speed-ups are ratios of medians;
* ``timing.device`` (default ``cpu``): where to time (``auto``: CUDA when present);
* ``timing.triples`` (default: all): time only the first ``triples`` of train ∪ valid ∪ test (a
  CPU profile's shortcut: the speed-ups are ratios within one run);
* ``timing.threads`` (default: the process's torch threads): torch's CPU threads while timing, so
  that the times do not depend on how the notebook was started (two threads on a core another
  process keeps busy can take several times as long as one).

The machine (:func:`kgdistill.core.records.machine_description`) is named in
:meth:`Table5.timing_caption`: times depend on it. So the timings are measured once and saved
(:meth:`Table5.timing_table` with ``saved``: a :mod:`kgdistill.study.measured` file), then read
back by later runs unless asked to measure again (``retime``) or the saved ones were timed with
another ``timing`` spec; parameters are always counted afresh.
"""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import torch

from ...core.records import machine_description, pick_device
from ...distile.kge import build_kge
from ...distile.timing import all_triples, inference_table
from ..measured import read_measurement, save_measurement
from ..measured import shown_path as _shown
from ..profile import published
from .rows import paper_dims

log = logging.getLogger("kgdistill")


def _origin(saved: str | Path, machine: str) -> str:
    """Where Table 5's timings are kept: the same line whether timed now or read back (an unchanged
    measurement leaves the executed notebook unchanged; the console says which it was)."""
    return (f"Table 5's timings: {_shown(saved)} (timed on {machine}); scripts/reproduce.py --retime "
            "(notebook parameter retime=True) times them again")


class Table5:
    """Table 5 of a DistilE study (a mixin: needs ``section`` and ``dataset(paper_dataset)``)."""

    section: dict

    def timing(self) -> list[dict]:
        """Table 5 rows per model and dimension: parameters, median inference seconds and their range
        over ``timing.repeats`` passes, speed-up (of medians) vs the teacher dimension.

        Models are freshly initialised: the time of scoring every entity does not depend on the
        weights' values, only on the dimension (and the machine).
        """
        spec = self.section["timing"]
        ds = self.dataset(spec["dataset"])
        dims = [self.section["teacher_dim"], *self.section["student_dims"]]
        triples = self.timed_triples()
        rows = []
        before = torch.get_num_threads()
        torch.set_num_threads(self.timing_threads())
        try:
            for model in spec.get("models", self.section["models"]):
                rows += inference_table(ds, model, dims, triples=triples, batch_size=spec.get("batch_size", 1024),
                                        repeats=self.timing_repeats(), device=self.timing_device())
        finally:
            torch.set_num_threads(before)
        return rows

    def timing_threads(self) -> int:
        """``timing.threads``, else the process's torch threads."""
        threads = self.section["timing"].get("threads", torch.get_num_threads())
        if not isinstance(threads, int) or threads < 1:
            raise ValueError(f"distile.timing.threads: expected a positive integer, got {threads!r}")
        return threads

    def timing_repeats(self) -> int:
        """``timing.repeats`` (default 3), a positive integer."""
        repeats = self.section["timing"].get("repeats", 3)
        if not isinstance(repeats, int) or repeats < 1:
            raise ValueError(f"distile.timing.repeats: expected a positive integer, got {repeats!r}")
        return repeats

    def timing_device(self) -> torch.device:
        return pick_device(self.section["timing"].get("device", "cpu"))

    def timed_triples(self) -> torch.Tensor:
        """The (n, 3) triples Table 5 ranks: train ∪ valid ∪ test of the timing dataset, or their
        first ``timing.triples`` (a CPU profile's shortcut: the speed-ups are ratios of one run)."""
        spec = self.section["timing"]
        triples = all_triples(self.dataset(spec["dataset"]))
        limit = spec.get("triples")
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ValueError(
                f"distile.timing.triples: expected a positive integer (or leave it out for all), got {limit!r}"
            )
        return triples[:limit] if limit else triples

    def _timing_machine(self, device: torch.device) -> str:
        before = torch.get_num_threads()
        torch.set_num_threads(self.timing_threads())  # the machine as it was timed
        try:
            return machine_description(device)
        finally:
            torch.set_num_threads(before)

    def timing_caption(self) -> str:
        """What Table 5's times are: how many triples of which benchmark, on which machine, how
        many passes; the machine makes it vary between computers (not for nbval). Timings read
        back (:meth:`timing_rows`) keep the caption they were saved with."""
        if self._saved_caption:
            return self._saved_caption
        spec = self.section["timing"]
        repeats = self.timing_repeats()
        machine = self._timing_machine(self.timing_device())
        return (f"{len(self.timed_triples()):,} triples of {self.section['datasets'][spec['dataset']]} ranked "
                f"(batch {spec.get('batch_size', 1024)}) on {machine}; "
                f"seconds: median of {repeats} pass{'es' if repeats != 1 else ''} per model, "
                "min-max their range; speed-up: ratio of medians")

    #: where the timings of the last :meth:`timing_table` came from (a sentence; None before)
    timing_origin: str | None = None
    _saved_caption: str | None = None

    def timing_about(self) -> dict:
        """What a saved measurement must have been timed for to be read back: the section's
        ``timing`` spec, models and dimensions (another spec: measured again)."""
        spec = self.section["timing"]
        return {"timing": spec, "models": list(spec.get("models", self.section["models"])),
                "dims": [self.section["teacher_dim"], *self.section["student_dims"]]}

    def counted_parameters(self) -> list[dict]:
        """Rows ``{model, dim, params}`` of the timed models, counted without timing them."""
        ds = self.dataset(self.section["timing"]["dataset"])
        return [{"model": model, "dim": dim,
                 "params": build_kge(model, ds.n_entities, ds.n_relations, dim).parameter_counts()["dense"]}
                for model in self.timing_about()["models"] for dim in self.timing_about()["dims"]]

    def timing_rows(self, saved: str | Path | None = None, retime: bool = True) -> list[dict]:
        """:meth:`timing` rows, or with ``saved`` (a measurement file) and not ``retime``, the rows
        saved there when they were timed for this spec (:meth:`timing_about`; parameters counted
        afresh). Measured rows are written to ``saved``; :attr:`timing_origin` says which it was."""
        found = read_measurement(saved, self.timing_about()) if saved and not retime else None
        if found is not None:
            measured = found.frame.reset_index()
            counted = pd.DataFrame(self.counted_parameters())
            rows = counted.merge(measured.drop(columns="params", errors="ignore"), on=["model", "dim"], how="left")
            self._saved_caption = found.notes.get("caption")
            self.timing_origin = _origin(saved, found.machine)
            log.info("Table 5's timings read back from %s", saved)
            return rows.to_dict(orient="records")
        log.info("Table 5: timing the models of each dimension")
        rows = self.timing()
        self._saved_caption = None
        self.timing_origin = "Table 5's timings: measured now, not saved"
        if saved:
            machine = self._timing_machine(self.timing_device())
            self.timing_origin = _origin(saved, machine)
            save_measurement(saved, pd.DataFrame(rows).set_index(["model", "dim"]), self.timing_about(),
                             machine=machine, notes={"caption": self.timing_caption()})
        return rows

    def timing_table(self, saved: str | Path | None = None, retime: bool = True) -> pd.DataFrame:
        """Table 5 (:meth:`timing_rows`: measured, or read back from ``saved`` unless ``retime``) indexed
        by (model, dim), with the paper dimension (``paper dim``) and the paper's ``params paper``,
        ``seconds paper (GPU)`` and ``speedup paper`` of that dimension."""
        timing = pd.DataFrame(self.timing_rows(saved, retime))
        paper = published("distile", "table5", "rows")
        dims = paper_dims(self.section["teacher_dim"], self.section["student_dims"])
        timing["paper dim"] = timing["dim"].map({dim: str(p) for dim, p in dims.items()})
        cells = [paper[d][m] for d, m in zip(timing["paper dim"], timing["model"])]
        timing["params paper"] = [round(c["params_k"] * 1000) for c in cells]
        timing["speedup paper"] = [c["speedup"] for c in cells]
        timing["seconds paper (GPU)"] = [c["inference_s"] for c in cells]
        return timing.set_index(["model", "dim"])
