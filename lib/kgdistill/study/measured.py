"""Measurements kept beside the tables: timed once, read back by every later run of the notebooks.

A timing (DistilE Table 5, notebook 05's footprint) depends on the machine and its load, not on
the records: measuring it again on every run of the study would rewrite committed tables whose
substance did not change. So a measurement is saved as JSON under ``<results_dir>/derived/``
(exact floats, what it was measured for and on which machine) and the notebooks read it back;
they measure only when asked (notebook parameter ``retime``, ``scripts/reproduce.py --retime``)
or when nothing saved fits what they would measure (``about`` differs: another timing spec,
another record). The tables are then rendered from the same numbers, so an unchanged measurement
gives unchanged files.

Owns :class:`Measurement`, :func:`save_measurement`, :func:`read_measurement` and
:func:`shown_path` (a saved file named the same in every clone).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..core.environment import repo_root
from ..core.records import atomic_write_json, machine_description, pick_device


@dataclass
class Measurement:
    """A saved measurement: its ``frame`` (index restored), ``about`` (what it was measured for:
    compared with the caller's before reading back), ``machine``, ``notes`` (e.g. a caption; not
    compared) and ``path``."""

    frame: pd.DataFrame
    about: dict
    machine: str
    notes: dict
    path: Path


def _plain(value):
    """``value`` as JSON has it (tuples as lists, numpy scalars as Python numbers), for comparing ``about``s."""
    return json.loads(json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


def save_measurement(path: str | os.PathLike, frame: pd.DataFrame, about: dict, device: str = "cpu",
                     machine: str | None = None, notes: dict | None = None) -> Path:
    """Write ``frame`` (its index levels become columns) with ``about``, ``notes`` and the machine
    (:func:`kgdistill.core.records.machine_description` of ``device`` unless given) to ``path``."""
    names = [n if n is not None else "index" for n in frame.index.names]
    flat = frame.copy()
    flat.index = flat.index.set_names(names)
    rows = [{str(k): v.item() if hasattr(v, "item") else v for k, v in row.items()}  # exact floats
            for row in flat.reset_index().to_dict(orient="records")]
    payload = {"about": _plain(about), "index": names, "columns": list(map(str, frame.columns)),
               "machine": machine or machine_description(pick_device(device)), "notes": _plain(notes or {}),
               "rows": rows}
    atomic_write_json(path, payload)
    return Path(path)


def read_measurement(path: str | os.PathLike, about: dict | None = None) -> Measurement | None:
    """The measurement saved at ``path``; None when there is none, or when ``about`` is given and
    differs from the saved one (it was measured for something else)."""
    path = Path(path)
    if not path.is_file():
        return None
    with open(path) as handle:
        payload = json.load(handle)
    if about is not None and payload.get("about") != _plain(about):
        return None
    frame = pd.DataFrame(payload["rows"], columns=[*payload["index"], *payload["columns"]])
    frame = frame.set_index(payload["index"])
    if payload["index"] == ["index"]:
        frame = frame.rename_axis(None)
    return Measurement(frame, payload["about"], payload.get("machine", "?"), payload.get("notes", {}), path)


def shown_path(path: str | os.PathLike) -> str:
    """``path`` relative to the repository root when inside it (the same text in every clone), else as given."""
    try:
        return str(Path(path).resolve().relative_to(repo_root().resolve()))
    except ValueError:
        return str(path)
