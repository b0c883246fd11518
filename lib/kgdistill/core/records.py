"""Run records: the files of a run folder, atomic writes, config hashing, environment provenance."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import platform
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from .moved import current_module

#: the files of a run folder ``<runs_dir>/<run name>/``
RECORD = "record.json"          # the finished run (committed)
CHECKPOINT = "checkpoint.pt"    # resumable state at the last evaluation (never committed)
BEST = "best.pt"                # weights at the selected epoch (never committed)
CONFIG = "config.json"          # the config, written when training starts


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the user's usual mode
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_orphan_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete ``.<name>.*.tmp`` files an :func:`atomic_write_bytes` killed between write and
    rename left in ``folder``; returns them. Their target is intact (the rename never happened)."""
    folder = Path(folder)
    removed = [p for p in folder.glob(".*.tmp") if p.is_file()] if folder.is_dir() else []
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True, default=_jsonable) + "\n").encode())


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` that never leaves a half-written file behind (a killed run keeps the last good one)."""
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


class _MovedModules:
    """A ``pickle_module`` for :func:`torch.load` whose unpickler finds classes pickled under the
    module paths of the flat layout (``kgdistill.config.RunConfig``) at their current place."""

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            return super().find_class(current_module(module), name)

    load = staticmethod(pickle.load)
    __name__ = "pickle"


def load_torch(path: str | os.PathLike | Any, map_location: Any = "cpu") -> Any:
    """``torch.load`` of a checkpoint, best weights or export of this library (trusted files:
    ``weights_only=False``), also when it was written before the modules moved into subpackages."""
    return torch.load(path, map_location=map_location, weights_only=False, pickle_module=_MovedModules)


def record_dims(record: dict) -> dict[str, int]:
    """``{model name: rank or dim}`` of a record. Records state ``dims`` since the runner was
    introduced; for older ones they follow from the config and the ranks the record states."""
    if "dims" in record:
        return {k: int(v) for k, v in record["dims"].items()}
    config = record["config"]
    models = list(record.get("test") or record.get("parameter_counts") or [record["selected_model"]])
    if record["run_name"].startswith("distile-"):
        teacher = config.get("teacher") or {}
        return {m: int(teacher["dim"] if m == "teacher" and teacher else config["dim"]) for m in models}
    ranks = {"student": record.get("student_rank"), "teacher": record.get("teacher_rank")}
    if config.get("method") == "kd" and config.get("teacher") and ranks["teacher"] is None:
        ranks["teacher"] = config["teacher"]["rank"]
    return {m: int(ranks.get(m) or config["rank"]) for m in models}


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as handle:
        return json.load(handle)


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def stable_hash(obj: Any, length: int = 12) -> str:
    """Hash of a JSON-serialisable object that does not depend on key order."""
    text = json.dumps(obj, sort_keys=True, default=_jsonable)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


#: the commit a whole run of the study states (set by scripts/reproduce.py, read by :func:`git_commit`)
COMMIT_ENV = "KGDISTILL_GIT_COMMIT"


def git_commit(cwd: str | os.PathLike | None = None) -> str:
    """Current commit of the repository holding this package (with ``-dirty`` if modified), or 'unknown'.

    ``$KGDISTILL_GIT_COMMIT``, when set, is the answer instead: scripts/reproduce.py looks once, as
    it starts, and exports what it saw to every notebook, so that the records a run trains state the
    tree its code came from; the tables and notebooks that the run's own earlier notebooks write
    (outputs, not code) would otherwise make every later record ``-dirty``.
    """
    fixed = os.environ.get(COMMIT_ENV)
    if fixed and cwd is None:
        return fixed
    cwd = cwd or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def cpu_model() -> str:
    """The CPU's model name (``model name`` of /proc/cpuinfo where there is one), else what
    :mod:`platform` knows (processor or machine type)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.lower().startswith("model name") and ":" in line:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description(device: torch.device) -> str:
    """The machine a timing ran on, for a table's caption: the GPU's name (and the host's CPU), or
    the CPU's model with its cores and torch's threads, e.g. ``cpu (AMD EPYC, 2 cores, 1 threads)``."""
    if device.type == "cuda":
        return f"{device_description(device)}, host {cpu_model()}"
    return f"cpu ({cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def provenance(device: torch.device) -> dict[str, str]:
    """Where and with what a result was produced."""
    import numpy

    from .environment import numeric_env

    return {
        "numeric_env": numeric_env(),
        "device": device_description(device),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "git_commit": git_commit(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def pick_device(requested: str | None = "auto") -> torch.device:
    """``'auto'`` (CUDA when present, else CPU), or an explicit torch device string."""
    if requested in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {requested!r} requested but CUDA is not available; use device='auto' or 'cpu'")
    return device


def existing_record(run_dir: str | os.PathLike, force: bool = False) -> dict | None:
    """The finished record in ``run_dir`` (None when absent, unfinished or ``force``)."""
    path = Path(run_dir) / RECORD
    if path.exists() and not force:
        record = read_json(path)
        if record.get("status") == "complete":
            return record
    return None
