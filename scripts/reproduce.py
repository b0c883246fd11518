#!/usr/bin/env python
"""Run the whole study for one profile: every notebook in order, with papermill.

    python scripts/reproduce.py --profile cpu            # the README's main command
    python scripts/reproduce.py --profile smoke          # minutes on a laptop
    python scripts/reproduce.py --profile cpu --retrain  # retrain runs even when records exist
    python scripts/reproduce.py --profile smoke --results-dir /tmp/try   # everything under /tmp/try
    python scripts/reproduce.py --profile smoke -p data_dir ../archives  # another notebook parameter
    python scripts/reproduce.py --profile my.yaml        # a profile file anywhere (results/my/)
    python scripts/reproduce.py --profile smoke --in-place   # refresh the committed notebooks

Each notebook runs in ``notebooks/`` (kernel ``python3``) with the parameters ``profile`` and
``show_progress=False``. Everything a run writes goes under one root, ``--results-dir``
(default ``results/<profile>/``): the executed copies in ``notebooks/``, tables in ``tables/``,
figures in ``figures/`` and, when a root is chosen, the run records in ``runs/`` (``--runs-dir``
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
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
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
    parser.add_argument("--show-progress", action="store_true", help="progress bars inside the notebooks' training")
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
             "show_progress": "--show-progress", "retrain_since": "--retrain"}


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
                          or args.runs_dir):
        raise UsageError("--in-place is for the committed smoke outputs: use it with --profile smoke only, "
                         "without --retrain/--show-progress/--results-dir/--runs-dir")
    if args.runs_dir and not args.results_dir:
        raise UsageError(f"--runs-dir {args.runs_dir} moves only the run records; choose where notebooks, tables "
                         f"and figures go too with --results-dir DIR (alone, it puts the records in DIR/runs)")
    if args.fresh_runs and args.runs_dir:
        raise UsageError("--fresh-runs trains in a temporary runs folder; leave out --runs-dir")
    if args.in_place and args.parameter:
        raise UsageError("--in-place runs the notebooks with their own defaults; leave out -p")
    root = Path(args.results_dir) if args.results_dir else ROOT / "results" / profile["name"]
    parameters: dict = {"profile": profile_parameter(profile), "show_progress": bool(args.show_progress)}
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


def execute(nb: Path, target: Path, parameters: dict, failed: Path) -> None:
    """Execute ``nb`` into ``target`` through a temporary file: on success it replaces ``target``
    (and removes an older ``failed`` copy); on failure it becomes ``failed`` and ``target``, the
    last good copy, stays. Raises papermill's execution error."""
    import papermill as pm

    target.parent.mkdir(parents=True, exist_ok=True)
    running = target.with_name(f".{target.stem}.{os.getpid()}.running.ipynb")  # papermill creates it: the user's umask
    try:
        pm.execute_notebook(
            str(nb), str(running), parameters=parameters, cwd=str(NOTEBOOKS), kernel_name="python3",
            progress_bar=False, log_output=False, request_save_on_cell_execute=False,
            extra_arguments=KERNEL_ARGUMENTS,
        )
    except BaseException:
        if running.exists():
            failed.parent.mkdir(parents=True, exist_ok=True)
            os.replace(running, failed)
        raise
    os.replace(running, target)
    failed.unlink(missing_ok=True)


def run(args: argparse.Namespace) -> int:
    from papermill.exceptions import PapermillExecutionError

    from kgdistill.core.environment import ROOT_ENV, repo_path
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
    total = time.perf_counter()
    try:
        for nb in chosen:
            target = out_dir / nb.name
            failed = failed_copy(target, ROOT / "results" / profile["name"] / "notebooks" if args.in_place else None)
            start = time.perf_counter()
            print(f"[{profile['name']}] {_shown(nb)} -> {_shown(target)}", flush=True)
            try:
                execute(nb, target, parameters, failed)
            except PapermillExecutionError as err:
                print(
                    f"\nFAILED: {_shown(nb)}, cell {err.cell_index} (execution count {err.exec_count}):\n"
                    f"  {err.ename}: {err.evalue}\n"
                    f"  source: {err.source.strip().splitlines()[0] if err.source.strip() else ''}...\n"
                    f"  executed copy with the traceback: {_shown(failed)}"
                    + (f" (the last good copy stays at {_shown(target)})" if target.exists() else ""),
                    file=sys.stderr,
                )
                return 1
            if args.in_place:
                strip_run_metadata(target)
            print(f"    done in {time.perf_counter() - start:.0f} s", flush=True)
    finally:
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
    except Exception as err:  # one clear line; --debug: the traceback
        if args.debug:
            raise
        print(f"error: {type(err).__name__}: {err}" if not isinstance(err, UsageError) else f"error: {err}",
              file=sys.stderr)
        print("(run again with --debug for the full traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
