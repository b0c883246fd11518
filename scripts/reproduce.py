#!/usr/bin/env python
"""Run the whole study for one profile: every notebook in order, with papermill.

    python scripts/reproduce.py --profile cpu            # the README's main command
    python scripts/reproduce.py --profile smoke          # minutes on a laptop
    python scripts/reproduce.py --profile cpu --retrain  # retrain runs even when records exist
    python scripts/reproduce.py --profile smoke --results-dir /tmp/try   # everything under /tmp/try
    python scripts/reproduce.py --profile smoke -p data_dir ../archives  # another notebook parameter
    python scripts/reproduce.py --profile my.yaml        # a profile file anywhere (results/my/)
    python scripts/reproduce.py --profile smoke --in-place   # refresh the committed notebooks
    python scripts/reproduce.py --profile cpu --only 06 --retime  # time DistilE Table 5 again

Each notebook runs in ``notebooks/`` (kernel ``python3``) with the parameters ``profile`` and
``show_progress=False`` (and ``retime=True`` with ``--retime``). Everything a run writes goes
under one root, ``--results-dir`` (default ``results/<profile>/``): the executed copies in
``notebooks/``, tables in ``tables/``, figures in ``figures/``, saved timings and the footprint's
sparse export in ``derived/`` and, when a root is chosen, the run records in ``runs/`` (``--runs-dir``
reads and trains records elsewhere, e.g. the committed ones, and needs a chosen root). Without a
root the records live in the profile's ``runs_dir`` (``results/<profile>/runs/``). A missing
record is trained. ``--in-place`` writes the executed notebooks over ``notebooks/``: that is how
the committed, smoke-executed notebooks are made.

Relative folders (``--results-dir``, ``--runs-dir``, ``-p data_dir``) are relative to the
repository root, wherever the command is typed (as in notebooks and profiles:
:func:`kgdistill.core.environment.repo_path`). ``-p NAME VALUE`` passes another notebook
parameter (values read as papermill's ``-p`` reads them); a name that a notebook's cell tagged
``parameters`` does not declare stops the runner before anything runs, naming the closest one.

The profile's ``env`` mapping (e.g. the smoke profile's CPU-kernel pins) is exported before the
kernels start. On the first failing notebook the runner stops and names the notebook, the cell
and the error; the executed copy with the traceback is written beside the last good one as
``<name>.failed.ipynb`` (the good copy stays). Errors are one clear line; ``--debug`` shows the
traceback.

A run rebuilds from what is committed and rewrites nothing whose substance did not change:

* records are reused (``--retrain`` trains them again); timings (DistilE Table 5, notebook 05's
  footprint) are read back from ``<root>/derived/`` and measured only with ``--retime`` or when
  none fit (:mod:`kgdistill.study.measured`); the footprint needs the run's weights, which are
  not committed: without them it is skipped in one line rather than trained for most of an hour;
* provenance: the commit is looked at once, as the run starts, and exported to every kernel
  (``$KGDISTILL_GIT_COMMIT``, :func:`kgdistill.core.records.git_commit`): the tables and notebooks
  an earlier notebook of the same run writes are its outputs, not its code, and must not make
  the records trained later ``-dirty``; a tree already modified when the run starts is ``-dirty``.
  Outputs without run records carry no date (:meth:`kgdistill.study.Study.stamp`);
* an executed copy keeps no execution times (papermill's start/end/duration) and no absolute
  paths, and is not replaced when its content is unchanged.

Progress: one line per code cell as it starts, and the library's messages (one per training
epoch) as they come, through ``$KGDISTILL_PROGRESS_FILE``
(:func:`kgdistill.core.environment.forward_library_log`); ``--show-progress`` adds the kernels'
progress bars. Ctrl-C stops the kernel and says in one line what was kept (exit status 130):
records and checkpoints already written stay, and the interrupted notebook's partial copy goes to
``<name>.failed.ipynb``, never over the last good copy.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
#: the kernels' own log (e.g. "Kernel is running over TCP without encryption", a "KeyboardInterrupt
#: caught in kernel" when papermill stops it) is not the user's concern: errors reach the runner
#: through the cells' outputs
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=CRITICAL"]


class UsageError(Exception):
    """A wrong combination of options; the message says which to use."""


class Interrupted(Exception):
    """Ctrl-C while a notebook ran (its kernel is stopped; the partial copy is the failed one)."""


def notebooks(only: list[str] | None) -> list[Path]:
    found = sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if not only:
        return found
    chosen = [p for p in found if any(p.name.startswith(o) or p.stem == o for o in only)]
    missing = [o for o in only if not any(p.name.startswith(o) or p.stem == o for p in found)]
    if missing:
        sys.exit(f"no notebook matches {missing}; notebooks are {[p.name for p in found]}")
    return chosen


def prepare_environment(profile: dict) -> None:
    """Export, for the kernels, the profile's ``env`` (without overriding what the caller set),
    the repository root and ``KGC_DATA_DIR`` made absolute, since the kernels run in
    ``notebooks/`` (the library's default, :func:`kgdistill.core.environment.default_data_dir`)."""
    from kgdistill.core.environment import ROOT_ENV, apply_profile_env, export_data_dir

    apply_profile_env(profile)
    os.environ.setdefault(ROOT_ENV, str(ROOT))
    export_data_dir()
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")


def strip_run_metadata(path: Path) -> None:
    """Remove papermill's injected-parameters cell and timing metadata, so that an in-place run
    only changes outputs (the notebook's own parameter defaults stay the committed ones)."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop("papermill", None)
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
    nbformat.write(nb, path)


def failed_copy(target: Path, folder: Path | None = None) -> Path:
    """Where the executed copy of a failed notebook goes: ``<name>.failed.ipynb`` beside ``target``
    (in ``folder`` instead when given: never in ``notebooks/``, where it would pass for a notebook)."""
    return (folder or target.parent) / f"{target.stem}.failed.ipynb"


def profile_parameter(profile: dict) -> str:
    """The ``profile`` notebook parameter: the name for a profile of ``params/``, else its file's path."""
    path = Path(profile["_path"])
    return profile["name"] if path == ROOT / "params" / f"{profile['name']}.yaml" else str(path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu", help="a name of params/ or a path to a profile file (default: cpu)")
    parser.add_argument("--retrain", action="store_true", help="retrain every run even when its record exists")
    parser.add_argument("--only", nargs="+", help="run only these notebooks (name prefixes, e.g. 01 03_ablation)")
    parser.add_argument("--in-place", action="store_true",
                        help="write executed notebooks over notebooks/ (for the committed smoke outputs)")
    parser.add_argument("--show-progress", action="store_true",
                        help="progress bars inside the notebooks' training (on the console too)")
    parser.add_argument("--retime", action="store_true",
                        help="time again what is timed (DistilE Table 5, the footprint) instead of reading "
                             "back the saved timings")
    parser.add_argument("--results-dir",
                        help="the root of everything written: notebooks/, tables/, figures/, runs/ "
                             "(default: results/<profile>/)")
    parser.add_argument("--runs-dir",
                        help="read/write run records here instead of <results-dir>/runs (needs --results-dir)")
    parser.add_argument("--fresh-runs", action="store_true",
                        help="train everything in a new temporary runs folder (deleted afterwards)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"), default=[],
                        help="another notebook parameter, e.g. -p data_dir DIR (a name the notebooks do not "
                             "declare is refused)")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    return parser


#: notebook parameters that have their own option
OPTION_OF = {"profile": "--profile", "results_dir": "--results-dir", "runs_dir": "--runs-dir",
             "show_progress": "--show-progress", "retrain_since": "--retrain", "retime": "--retime"}


def extra_parameters(pairs: list[list[str]]) -> dict:
    """``-p NAME VALUE`` pairs as parameters, values typed as papermill's ``-p`` types them
    (``True``, ``False``, ``None``, integers and floats; anything else stays a string)."""
    out = {}
    for name, value in pairs:
        if name in OPTION_OF:
            raise UsageError(f"-p {name}: use {OPTION_OF[name]} (it also checks the combination of options)")
        out[name] = {"True": True, "False": False, "None": None}.get(value, value)
        for kind in (int, float):
            try:
                out[name] = kind(value)
                break
            except ValueError:
                continue
    return out


def check_declared(chosen: list[Path], parameters: dict) -> None:
    """Refuse, before anything runs, a parameter that some chosen notebook's tagged cell does not declare."""
    from kgdistill.study.parameters import check_parameters, declared_parameters

    for nb in chosen:
        check_parameters(parameters, declared_parameters(nb), f"notebook {_shown(nb)}")


def plan(args: argparse.Namespace, profile: dict) -> tuple[Path, Path, dict]:
    """Check the options before anything is written; returns (output root, folder of the executed
    notebooks, notebook parameters without the runs folder of ``--fresh-runs``)."""
    if args.in_place and (profile["name"] != "smoke" or args.retrain or args.show_progress or args.results_dir
                          or args.runs_dir or args.retime):
        raise UsageError("--in-place is for the committed smoke outputs: use it with --profile smoke only, "
                         "without --retrain/--show-progress/--results-dir/--runs-dir/--retime")
    if args.runs_dir and not args.results_dir:
        raise UsageError(f"--runs-dir {args.runs_dir} moves only the run records; choose where notebooks, tables "
                         f"and figures go too with --results-dir DIR (alone, it puts the records in DIR/runs)")
    if args.fresh_runs and args.runs_dir:
        raise UsageError("--fresh-runs trains in a temporary runs folder; leave out --runs-dir")
    if args.in_place and args.parameter:
        raise UsageError("--in-place runs the notebooks with their own defaults; leave out -p")
    root = Path(args.results_dir) if args.results_dir else ROOT / "results" / profile["name"]
    parameters: dict = {"profile": profile_parameter(profile), "show_progress": bool(args.show_progress)}
    if args.retime:  # else the notebooks' default, False (a notebook without timings need not declare it)
        parameters["retime"] = True
    if args.results_dir:
        parameters["results_dir"] = str(root)
    if args.runs_dir:
        parameters["runs_dir"] = str(args.runs_dir)
    if args.retrain:
        parameters["retrain_since"] = time.time()
    parameters.update(extra_parameters(args.parameter))
    if args.in_place:
        parameters = {}  # the notebooks' own defaults are the smoke profile
    return root, (NOTEBOOKS if args.in_place else root / "notebooks"), parameters


#: the notebook being executed: its kernel's process (to stop it on Ctrl-C) and the cell running
CURRENT: dict = {}


def _cell_engine() -> str:
    """papermill's nbclient engine, printing one line per code cell as it starts (``cell 3/9:
    <first line of code>``) and keeping its client in :data:`CURRENT` (whose kernel :func:`execute`
    stops on Ctrl-C); registered once, returns its name."""
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine, papermill_engines
    from papermill.utils import merge_kwargs, remove_args

    class CellLines(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, log_output=False, stdout_file=None,
                                     stderr_file=None, start_timeout=60, execution_timeout=None, **kwargs):
            code = [i for i, c in enumerate(nb_man.nb.cells) if c.cell_type == "code"]
            started = nb_man.cell_start

            def cell_start(cell, cell_index=None, **kw):
                if cell_index in code:
                    number = f"{code.index(cell_index) + 1}/{len(code)}"
                    CURRENT["cell"] = number
                    lines = [line for line in cell.source.splitlines() if line.strip() and not line.startswith("#")]
                    shown = lines[0] if lines else "(comments only)"
                    print(f"    cell {number}: {shown[:90]}{'...' if len(shown) > 90 else ''}", flush=True)
                return started(cell, cell_index, **kw)

            nb_man.cell_start = cell_start
            # as papermill's NBClientEngine.execute_managed_notebook, keeping the client
            kwargs = remove_args(["input_path"], **kwargs)
            safe_kwargs = remove_args(["timeout", "startup_timeout"], **kwargs)
            final_kwargs = merge_kwargs(
                safe_kwargs, timeout=execution_timeout if execution_timeout else kwargs.get("timeout"),
                startup_timeout=start_timeout, kernel_name=kernel_name, log=logging.getLogger("papermill"),
                log_output=log_output, stdout_file=stdout_file, stderr_file=stderr_file,
            )
            CURRENT["client"] = PapermillNotebookClient(nb_man, **final_kwargs)
            return CURRENT["client"].execute()

    if "kgdistill-cells" not in papermill_engines._engines:
        papermill_engines.register("kgdistill-cells", CellLines)
    return "kgdistill-cells"


def stop_kernel() -> None:
    """Kill the running notebook's kernel (and what it started: it leads its own session, as
    jupyter_client starts kernels), so that the worker thread's papermill returns at once."""
    km = getattr(CURRENT.get("client"), "km", None)
    process = getattr(getattr(km, "provisioner", None), "process", None)
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except OSError:
        process.kill()


def normalise(path: Path, target: Path) -> None:
    """Drop from an executed copy what changes on every run without its content changing:
    papermill's execution times (notebook and cells), nbclient's message timestamps, the absolute
    paths of input and output and the repository paths a cell prints (shown relative to the
    repository) and the injected cell's random
    id; a cell's consecutive outputs to one stream become one (how the kernel happened to flush
    them is not content)."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    meta = nb.metadata.get("papermill")
    if meta is not None:
        for key in ("start_time", "end_time", "duration"):
            meta.pop(key, None)
        if meta.get("input_path"):
            meta["input_path"] = _shown(Path(meta["input_path"]))
        meta["output_path"] = _shown(target)
    for cell in nb.cells:
        for key in ("start_time", "end_time", "duration"):
            cell.metadata.get("papermill", {}).pop(key, None)
        cell.metadata.pop("execution", None)
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell.id = "injected-parameters"
        merged = []
        for output in cell.get("outputs", []):
            _relative_paths(output)
            last = merged[-1] if merged else None
            if (output.output_type == "stream" and last is not None and last.output_type == "stream"
                    and last.name == output.name):
                last.text += output.text
            else:
                merged.append(output)
        if "outputs" in cell:
            cell.outputs = merged
    nbformat.write(nb, path)


def _relative_paths(output) -> None:
    """A printed path inside the repository shown relative to it (e.g. the files a save cell
    lists): the clone's location is not the notebook's content."""
    root = str(ROOT) + os.sep
    if output.get("output_type") == "stream" and root in output.get("text", ""):
        output["text"] = output["text"].replace(root, "")
    plain = output.get("data", {}).get("text/plain")
    if isinstance(plain, str) and root in plain:
        output["data"]["text/plain"] = plain.replace(root, "")


def execute(nb: Path, target: Path, parameters: dict, failed: Path, stderr_to_console: bool = False,
            in_place: bool = False) -> bool:
    """Execute ``nb`` into ``target`` through a temporary file: on success it replaces ``target``
    unless the content is the same (:func:`normalise`, or :func:`strip_run_metadata` ``in_place``;
    returns whether it changed) and removes an
    older ``failed`` copy; on failure it becomes ``failed`` and ``target``, the last good copy,
    stays. papermill runs in a worker thread so that Ctrl-C reaches this one: the kernel is then
    stopped and :class:`Interrupted` raised. Raises papermill's execution error."""
    import papermill as pm

    target.parent.mkdir(parents=True, exist_ok=True)
    running = target.with_name(f".{target.stem}.{os.getpid()}.running.ipynb")  # papermill creates it: the user's umask
    outcome: dict = {}

    def job() -> None:
        try:
            pm.execute_notebook(
                str(nb), str(running), parameters=parameters, cwd=str(NOTEBOOKS), kernel_name="python3",
                progress_bar=False, log_output=False, request_save_on_cell_execute=False,
                extra_arguments=KERNEL_ARGUMENTS, engine_name=_cell_engine(),
                stderr_file=sys.stderr if stderr_to_console else None,
            )
        except BaseException as err:  # handed to the main thread
            outcome["error"] = err

    CURRENT.clear()
    worker = threading.Thread(target=job, name=f"papermill {nb.name}", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.2)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        logging.getLogger("papermill").disabled = True  # "Kernel died ..." is expected now
        stop_kernel()
        worker.join(60)
        outcome["error"] = Interrupted()
    error = outcome.get("error")
    if error is not None:
        if running.exists():
            failed.parent.mkdir(parents=True, exist_ok=True)
            os.replace(running, failed)
        raise error
    if in_place:  # the committed notebooks: no papermill metadata at all
        strip_run_metadata(running)
    else:
        normalise(running, target)
    changed = not (target.exists() and target.read_bytes() == running.read_bytes())
    if changed:
        os.replace(running, target)
    else:
        running.unlink()
    failed.unlink(missing_ok=True)
    return changed


class ConsoleEcho(threading.Thread):
    """Prints, as they come, the lines the kernels append to the progress file (the library's
    messages: one per training epoch; :func:`kgdistill.core.environment.forward_library_log`)."""

    def __init__(self, path: Path):
        super().__init__(name="progress echo", daemon=True)
        self.path, self.offset, self.done = path, 0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            self.drain()
        self.drain()

    def drain(self) -> None:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except OSError:
            return
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        for line in complete.decode(errors="replace").splitlines():
            print(f"      {line}", flush=True)

    def stop(self) -> None:
        self.done.set()
        self.join(5)


def run(args: argparse.Namespace) -> int:
    from papermill.exceptions import PapermillExecutionError

    from kgdistill.core.environment import PROGRESS_ENV, ROOT_ENV, repo_path
    from kgdistill.core.records import COMMIT_ENV, git_commit
    from kgdistill.study.profile import load_profile

    if Path(args.profile).suffix in (".yaml", ".yml"):  # a file argument: relative to where the user stands
        args.profile = str(Path(args.profile).resolve())
    os.chdir(ROOT)
    os.environ.setdefault(ROOT_ENV, str(ROOT))
    for option in ("results_dir", "runs_dir"):  # relative to the repository root, as in notebooks and profiles
        if getattr(args, option):
            setattr(args, option, str(repo_path(getattr(args, option))))
    profile = load_profile(args.profile)
    root, out_dir, parameters = plan(args, profile)
    chosen = notebooks(args.only)
    check_declared(chosen, {**parameters, **({"results_dir": None, "runs_dir": None} if args.fresh_runs else {})})
    prepare_environment(profile)
    scratch = None
    if args.fresh_runs:
        scratch = tempfile.TemporaryDirectory(prefix=f"kgdistill-{profile['name']}-runs-")
        if args.in_place:  # the committed notebooks only: their tables and figures go with the scratch runs
            parameters["results_dir"] = scratch.name
        else:
            parameters.update(results_dir=str(root), runs_dir=scratch.name)
    exported = {name: os.environ.get(name) for name in (COMMIT_ENV, PROGRESS_ENV)}  # restored at the end
    commit = os.environ.setdefault(COMMIT_ENV, git_commit(ROOT))  # once: this run's own outputs do not count
    progress = Path(tempfile.mkstemp(prefix="kgdistill-progress-", suffix=".log")[1])
    os.environ[PROGRESS_ENV] = str(progress)
    echo = ConsoleEcho(progress)
    echo.start()
    total = time.perf_counter()
    print(f"[{profile['name']}] {len(chosen)} notebook(s), commit {commit}"
          + (", timings measured again (--retime)" if args.retime else ", saved timings read back"), flush=True)
    try:
        for nb in chosen:
            target = out_dir / nb.name
            failed = failed_copy(target, ROOT / "results" / profile["name"] / "notebooks" if args.in_place else None)
            start = time.perf_counter()
            print(f"[{profile['name']}] {_shown(nb)} -> {_shown(target)}", flush=True)
            try:
                changed = execute(nb, target, parameters, failed, stderr_to_console=args.show_progress,
                                  in_place=args.in_place)
            except PapermillExecutionError as err:
                echo.drain()
                print(
                    f"\nFAILED: {_shown(nb)}, cell {err.cell_index} (execution count {err.exec_count}):\n"
                    f"  {err.ename}: {err.evalue}\n"
                    f"  source: {err.source.strip().splitlines()[0] if err.source.strip() else ''}...\n"
                    f"  executed copy with the traceback: {_shown(failed)}"
                    + (f" (the last good copy stays at {_shown(target)})" if target.exists() else ""),
                    file=sys.stderr,
                )
                return 1
            except Interrupted:
                echo.drain()
                cell = f", cell {CURRENT['cell']}" if CURRENT.get("cell") else ""
                good = f"the last good {_shown(target)} stays" if target.exists() else f"no {_shown(target)} yet"
                partial = f"; partial copy: {_shown(failed)}" if failed.exists() else ""
                print(f"interrupted in {_shown(nb)}{cell}: kernel stopped; run records and checkpoints written so "
                      f"far are kept (a run resumes from its last checkpoint), {good}{partial}", file=sys.stderr,
                      flush=True)
                return 130
            echo.drain()
            same = "" if changed else " (executed copy unchanged)"
            print(f"    done in {time.perf_counter() - start:.0f} s{same}", flush=True)
    finally:
        echo.stop()
        progress.unlink(missing_ok=True)
        for name, value in exported.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if scratch is not None:
            scratch.cleanup()
    where = "notebooks/" if args.in_place else _shown(root) + "/"
    print(f"[{profile['name']}] all notebooks done in {time.perf_counter() - total:.0f} s; outputs under {where}")
    return 0


def _shown(path: Path) -> str:
    """``path`` relative to the repository when inside it, else absolute."""
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sys.path.insert(0, str(ROOT / "lib"))
    try:
        return run(args)
    except KeyboardInterrupt:  # before or between notebooks (during one: run() says what was kept)
        print("interrupted before a notebook ran to its end: nothing of this run was written", file=sys.stderr)
        return 130
    except Exception as err:  # one clear line; --debug: the traceback
        if args.debug:
            raise
        print(f"error: {type(err).__name__}: {err}" if not isinstance(err, UsageError) else f"error: {err}",
              file=sys.stderr)
        print("(run again with --debug for the full traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
