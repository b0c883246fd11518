#!/usr/bin/env python
"""Run the whole study for one profile: every notebook in order, with papermill.

    python scripts/reproduce.py --profile cpu            # the README's main command
    python scripts/reproduce.py --profile smoke          # minutes on a laptop
    python scripts/reproduce.py --profile cpu --retrain  # retrain runs even when records exist
    python scripts/reproduce.py --profile smoke --in-place   # refresh the committed notebooks

Each notebook runs in ``notebooks/`` (kernel ``python3``) with the parameters ``profile`` and
``show_progress=False``; the executed copies go to ``results/<profile>/notebooks/`` (``--in-place``
overwrites ``notebooks/`` instead: that is how the committed, smoke-executed notebooks are made).
The notebooks write tables to ``results/<profile>/tables/`` and figures to
``results/<profile>/figures/``; run records live in the profile's ``runs_dir``
(``results/<profile>/runs/``), and a missing record is trained.

The profile's ``env`` mapping (e.g. the smoke profile's CPU-kernel pins) is exported before the
kernels start. On the first failing notebook the runner stops and names the notebook, the cell
and the error; the executed copy holds the full traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


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
    ``notebooks/`` (the library's default, :func:`kgdistill.environment.default_data_dir`)."""
    from kgdistill.environment import ROOT_ENV, apply_profile_env, export_data_dir

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu", help="params/<profile>.yaml (default: cpu)")
    parser.add_argument("--retrain", action="store_true", help="retrain every run even when its record exists")
    parser.add_argument("--only", nargs="+", help="run only these notebooks (name prefixes, e.g. 01 03_ablation)")
    parser.add_argument("--in-place", action="store_true", help="write executed notebooks over notebooks/ (for the committed smoke outputs)")
    parser.add_argument("--show-progress", action="store_true", help="progress bars inside the notebooks' training")
    parser.add_argument("--runs-dir", help="read/write run records here instead of the profile's runs_dir")
    parser.add_argument("--fresh-runs", action="store_true", help="train everything in a new temporary runs folder (deleted afterwards)")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT / "lib"))
    from kgdistill.profile import load_profile

    os.chdir(ROOT)
    profile = load_profile(args.profile)
    prepare_environment(profile)
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    out_dir = NOTEBOOKS if args.in_place else ROOT / "results" / profile["name"] / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    parameters = {"profile": profile["name"], "show_progress": bool(args.show_progress)}
    if args.retrain:
        parameters["retrain_since"] = time.time()
    if args.in_place and (args.profile != "smoke" or args.retrain or args.show_progress):
        sys.exit("--in-place is for the committed smoke outputs: use it with --profile smoke only, without --retrain/--show-progress")
    if args.in_place:
        parameters = {}  # the notebooks' own defaults are the smoke profile
    scratch = None
    if args.fresh_runs:
        import tempfile

        scratch = tempfile.TemporaryDirectory(prefix=f"kgdistill-{profile['name']}-runs-")
        parameters["runs_dir"] = scratch.name
    elif args.runs_dir:
        parameters["runs_dir"] = str(Path(args.runs_dir).resolve())

    total = time.perf_counter()
    for nb in notebooks(args.only):
        target = out_dir / nb.name
        start = time.perf_counter()
        print(f"[{profile['name']}] {nb.relative_to(ROOT)} -> {target.relative_to(ROOT)}", flush=True)
        try:
            pm.execute_notebook(
                str(nb), str(target), parameters=parameters, cwd=str(NOTEBOOKS), kernel_name="python3",
                progress_bar=False, log_output=False, request_save_on_cell_execute=False,
            )
        except PapermillExecutionError as err:
            print(
                f"\nFAILED: {nb.relative_to(ROOT)}, cell {err.cell_index} (execution count {err.exec_count}):\n"
                f"  {err.ename}: {err.evalue}\n"
                f"  source: {err.source.strip().splitlines()[0] if err.source.strip() else ''}...\n"
                f"  executed copy with the traceback: {target.relative_to(ROOT)}",
                file=sys.stderr,
            )
            return 1
        if args.in_place:
            strip_run_metadata(target)
        print(f"    done in {time.perf_counter() - start:.0f} s", flush=True)
    if scratch is not None:
        scratch.cleanup()
    print(f"[{profile['name']}] all notebooks done in {time.perf_counter() - total:.0f} s; "
          f"tables and figures under results/{profile['name']}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
