"""Where things are and the process settings a profile asks for. Imports no torch.

* :func:`repo_root`: the repository holding ``params/`` (notebooks run in ``notebooks/``);
* :func:`repo_path`: the one rule for folders a user names (``runs_dir``, ``results_dir``,
  ``data_dir``, ``$KGC_DATA_DIR``; notebook parameters, script options, profiles): a relative
  path is relative to the repository root, whatever the working directory; absolute stays;
* :func:`default_data_dir`: the one owner of the data-folder default — ``$KGC_DATA_DIR`` when
  set (empty: download), else ``../shared/data`` next to the repository when it exists, else
  ``None`` (the archives are downloaded and checked against their SHA-256);
* :func:`profile_env` / :func:`apply_profile_env`: a profile's ``env`` mapping (CPU-kernel pins
  that must be in the environment before torch is imported);
* :func:`show_library_log`: the library's progress messages (e.g. "resuming from epoch 5") on
  this process's standard output (``scripts/train_runs.py``, notebooks with progress bars);
* :func:`forward_library_log`: the same messages appended to the file that
  ``$KGDISTILL_PROGRESS_FILE`` names (scripts/reproduce.py echoes it on its console).
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

DATA_DIR_ENV = "KGC_DATA_DIR"
ROOT_ENV = "KGDISTILL_ROOT"
#: a file the library's INFO messages are appended to (:func:`forward_library_log`)
PROGRESS_ENV = "KGDISTILL_PROGRESS_FILE"


def repo_root() -> Path:
    """The repository holding ``params/``: ``$KGDISTILL_ROOT`` (for a library installed outside
    its checkout, or a process that runs outside it), else the first parent of the
    working directory or of this package that has ``params/`` and ``pyproject.toml``."""
    env = os.environ.get(ROOT_ENV)
    if env:
        return Path(env).resolve()
    for start in (Path.cwd().resolve(), Path(__file__).resolve().parent):
        for folder in (start, *start.parents):
            if (folder / "params").is_dir() and (folder / "pyproject.toml").is_file():
                return folder
    raise FileNotFoundError(
        "cannot find the repository root (a folder with params/ and pyproject.toml) above "
        f"{Path.cwd()}; run from inside the repository or set {ROOT_ENV}"
    )


def repo_path(path: str | os.PathLike | None) -> Path | None:
    """A folder a user named, absolute: relative paths are relative to the repository root
    (:func:`repo_root`), not to the working directory, so ``results/cpu/runs`` is the same folder
    from a shell at the root, a Jupyter kernel in ``notebooks/`` or a script anywhere; absolute
    paths (``~`` expanded) name the same folder as before (normalised). ``None`` or ``""``: None."""
    if path is None or str(path) == "":
        return None
    path = Path(path).expanduser()
    return (path if path.is_absolute() else repo_root() / path).resolve()


def shared_data_dir() -> Path | None:
    """``<repository>/../shared/data`` when it holds archives (``*.tar.gz``), else None."""
    try:
        shared = repo_root().parent / "shared" / "data"
    except FileNotFoundError:
        return None
    return shared.resolve() if shared.is_dir() and any(shared.glob("*.tar.gz")) else None


def default_data_dir() -> Path | None:
    """Where the benchmark archives are read from when a caller passes no folder:
    ``$KGC_DATA_DIR`` when set (a relative value is relative to the repository root:
    :func:`repo_path`), else ``../shared/data`` next to the repository when it holds archives
    (:func:`shared_data_dir`), else None: download them from the ConvE release (checked against
    their SHA-256). ``KGC_DATA_DIR=`` (set, empty) asks for the download explicitly."""
    if DATA_DIR_ENV in os.environ:  # set but empty: download, even when ../shared/data exists
        return repo_path(os.environ[DATA_DIR_ENV])
    return shared_data_dir()


def export_data_dir() -> None:
    """Set ``KGC_DATA_DIR`` to :func:`default_data_dir` (absolute) for child processes, e.g.
    notebook kernels that run in ``notebooks/``; left unset when the default is to download."""
    folder = default_data_dir()
    if folder is not None:
        os.environ[DATA_DIR_ENV] = str(folder)


def profile_env(profile: dict | str | os.PathLike) -> dict[str, str]:
    """The ``env`` mapping of a loaded profile or of a profile file/name, as strings."""
    if not isinstance(profile, dict):
        import yaml

        path = Path(profile)
        if path.suffix not in (".yaml", ".yml"):
            path = repo_root() / "params" / f"{profile}.yaml"
        profile = (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}
    return {str(k): str(v) for k, v in (profile.get("env") or {}).items()}


def apply_profile_env(profile: dict | str | os.PathLike, override: bool = False) -> dict[str, str]:
    """Export the profile's ``env`` (values the caller already set win unless ``override``);
    returns what was newly set. Takes effect on torch only before torch is imported."""
    added = {}
    for key, value in profile_env(profile).items():
        if override or key not in os.environ:
            os.environ[key] = value
            added[key] = value
    return added


#: environment variables that change the floating-point summation order of CPU kernels
NUMERIC_ENV = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "OMP_NUM_THREADS")


class NumericEnvironmentError(RuntimeError):
    """Training under a profile whose numeric ``env`` is not in force would write a record whose
    numbers differ (in the last digits) from the same config's committed record."""


def numeric_env() -> dict[str, str | None]:
    """The numeric environment of this process: the :data:`NUMERIC_ENV` variables as set, and the
    CPU kernel set torch actually dispatches to (fixed when torch was imported)."""
    import torch

    out: dict[str, str | None] = {name: os.environ.get(name) for name in NUMERIC_ENV}
    out["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    out["torch_threads"] = str(torch.get_num_threads())
    return out


def env_mismatches(required: dict[str, str]) -> list[str]:
    """What differs between a profile's ``env`` and this process, one line each (empty: in force).
    ``ATEN_CPU_CAPABILITY`` must also be the kernel set torch uses: set after torch was imported,
    it has no effect."""
    actual = numeric_env()
    problems = [f"{k}={os.environ.get(k)!r} (the profile asks for {v!r})"
                for k, v in required.items() if os.environ.get(k) != str(v)]
    wanted = required.get("ATEN_CPU_CAPABILITY")
    if wanted and str(actual["torch_cpu_capability"]).lower() != str(wanted).lower():
        problems.append(f"torch dispatches to {actual['torch_cpu_capability']} kernels, not {wanted} "
                        f"(ATEN_CPU_CAPABILITY must be set before torch is imported)")
    return problems


def check_numeric_env(required: dict[str, str], where: str = "this profile") -> None:
    """Refuse to train when ``required`` (a profile's ``env``) is not in force, naming the fix."""
    problems = env_mismatches(required)
    if problems:
        exports = " ".join(f"{k}={v}" for k, v in required.items())
        raise NumericEnvironmentError(
            f"{where} pins the CPU kernels for reproducible numbers, but this process differs: "
            + "; ".join(problems)
            + f". Start Python/Jupyter/papermill with them set, e.g. `env {exports} papermill ...`, or use "
            f"scripts/reproduce.py, which sets them; reusing finished records needs nothing."
        )


class _CurrentStdout(logging.StreamHandler):
    """A log handler writing to whatever ``sys.stdout`` is when a message comes (where print writes)."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ sets it; the current stdout wins
        pass


def show_library_log(prefix: str = "  ") -> None:
    """Print the library's INFO messages (logger ``kgdistill``: e.g. "<run>: resuming from epoch 5")
    on the current standard output, once per process however often it is called."""
    log = logging.getLogger("kgdistill")
    if not any(isinstance(h, _CurrentStdout) for h in log.handlers):
        handler = _CurrentStdout()
        handler.setFormatter(logging.Formatter(prefix + "%(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)


class _ProgressFile(logging.FileHandler):
    """The handler of :func:`forward_library_log` (appends, flushed after every message)."""


def forward_library_log() -> None:
    """Append the library's INFO messages (one line per training epoch, "resuming from epoch 5") to
    the file ``$KGDISTILL_PROGRESS_FILE`` names, once per process; nothing when it is unset.

    scripts/reproduce.py sets it and prints the file's new lines on its console as they come: a
    notebook kernel's own output reaches the runner only in the executed copy, so a run training
    for an hour would otherwise be silent. The messages do not enter the notebook's outputs.
    """
    path = os.environ.get(PROGRESS_ENV)
    log = logging.getLogger("kgdistill")
    if not path or any(isinstance(h, _ProgressFile) for h in log.handlers):
        return
    handler = _ProgressFile(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
