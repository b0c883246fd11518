#!/usr/bin/env python
"""Build the study's static HTML site from a profile's executed notebooks and saved tables (runs nothing).

    python scripts/build_report.py --profile cpu      # -> build/site/cpu/index.html
    python scripts/build_report.py --profile smoke    # the committed notebooks when results/smoke has none

The landing page is the findings report (:mod:`kgdistill.study.report`: its numbers read from
``results/<profile>/tables/*.csv`` now); then one page per executed notebook (outputs as saved),
a page of every saved table and one of every saved figure. The notebooks are those of
:func:`kgdistill.study.report.executed_notebooks` (``results/<profile>/notebooks/``; for smoke,
when that folder is empty, the committed ``notebooks/``). The Sphinx source is assembled in
``build/site-src/<profile>/`` and the site written to ``build/site/<profile>/`` (``build/`` is
ignored, never committed); open ``index.html`` or serve it: ``python -m http.server -d build/site/cpu``.

The tool: Sphinx with myst-nb, notebook execution off (``nb_execution_mode = "off"``), theme furo,
all pure-Python wheels from pip, nothing downloaded at build time. Jupyter Book 1.x wraps the same
two but pins Sphinx 7 and myst-parser 3 and adds a dozen extensions this site does not use;
Jupyter Book 2 (mystmd) needs Node. Measured on the project's busy 2-core machine (Sphinx 9.0,
myst-nb 1.4): the Sphinx build of the smoke site 3 s, of the cpu site 6.5 s; 6 s and 10 s for the
whole command with Python's start and imports.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CONF = '''\
# Written by scripts/build_report.py: the Sphinx configuration of the study's site.
project = {title!r}
html_title = {title!r}
extensions = ["myst_nb"]
nb_execution_mode = "off"  # render the outputs as saved: the site never runs a notebook
nb_merge_streams = True    # a cell's consecutive prints as one block
html_theme = "furo"
html_static_path = ["_static"]
html_css_files = ["site.css"]
html_show_copyright = False
exclude_patterns = ["_build"]
'''

# furo's reading column (46em) is narrower than the notebooks' printed tables: widen it
CSS = """\
.main { min-width: 0; }
.content { width: auto; flex: 1 1 46em; max-width: 72em; min-width: 0; }
.toc-drawer { flex-shrink: 0; }
.cell_output pre, .cell_input pre { overflow-x: auto; }
div.cell_output pre, div.output pre { font-size: 0.78em; line-height: 1.3; }
table.docutils { font-size: 0.85em; }
"""


def git_line() -> str:
    """The checkout's commit, and whether tracked files differ from it."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""
    commit = git("rev-parse", "--short=12", "HEAD") or "unknown (not a git checkout)"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return f"checkout: commit `{commit}`" + (" with uncommitted changes to tracked files" if dirty else "")


def run_records() -> dict[str, int]:
    """The number of run records of every profile of ``params/`` (``results/<profile>/runs/*/record.json``)."""
    return {p.stem: len(list((ROOT / "results" / p.stem / "runs").glob("*/record.json")))
            for p in sorted((ROOT / "params").glob("*.yaml"))}


def relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu", help="a name of params/ (default cpu)")
    parser.add_argument("--results-dir", help="the profile's tables/, figures/, notebooks/ (default results/<profile>)")
    parser.add_argument("--notebooks-dir", help="the executed notebooks (default: see the docstring)")
    parser.add_argument("--out", help="the site (default build/site/<profile>)")
    parser.add_argument("--work", help="the assembled Sphinx source (default build/site-src/<profile>)")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT / "lib"))
    try:
        import myst_nb  # noqa: F401
        from sphinx import __version__ as sphinx_version
        from sphinx.cmd.build import build_main
    except ImportError as error:
        print(f"error: {error.name} is missing: .venv/bin/pip install -e .[report]", file=sys.stderr)
        return 1
    import yaml

    from kgdistill.core.environment import repo_path
    from kgdistill.study import report
    from kgdistill.study.profile import profile_path

    profile = args.profile
    description = (yaml.safe_load(profile_path(profile).read_text()) or {}).get("description", "")
    results = repo_path(args.results_dir) if args.results_dir else ROOT / "results" / profile
    if args.notebooks_dir:
        source = repo_path(args.notebooks_dir)
        notebooks = sorted(source.glob("[0-9]*.ipynb"))
    else:
        source, notebooks = report.executed_notebooks(results, profile, ROOT)
    out = repo_path(args.out) if args.out else ROOT / "build" / "site" / profile
    work = repo_path(args.work) if args.work else ROOT / "build" / "site-src" / profile
    src = work / "src"
    if out.exists() and any(out.iterdir()) and not (out / ".buildinfo").is_file():
        print(f"error: {out} is not empty and holds no Sphinx site: not overwriting it", file=sys.stderr)
        return 1

    started = time.perf_counter()
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    for sub in ("notebooks", "tables", "figures", "_static"):
        (src / sub).mkdir(parents=True)
    for notebook in notebooks:
        shutil.copy2(notebook, src / "notebooks" / notebook.name)
    for csv in sorted((results / "tables").glob("*.csv")):
        shutil.copy2(csv, src / "tables" / csv.name)
    figures = sorted((results / "figures").glob("*.png"))
    for png in figures:
        shutil.copy2(png, src / "figures" / png.name)

    site = report.Site(results / "tables", tuple(p.stem for p in figures), tuple(p.stem for p in notebooks))
    import myst_nb as nb_module
    provenance = [f"built {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by `scripts/build_report.py` with Sphinx "
                  f"{sphinx_version} and myst-nb {nb_module.__version__}, notebook execution off (outputs as saved)",
                  f"notebooks: `{relative(source)}/` ({len(notebooks)})" + ("" if notebooks else " — none executed"),
                  f"tables and figures: `{relative(results)}/tables/`, `{relative(results)}/figures/`",
                  git_line()]
    (src / "index.md").write_text(report.findings_page(profile, description, site, provenance, run_records()))
    (src / "tables.md").write_text(report.tables_page(site, f"{relative(results)}/tables"))
    (src / "figures.md").write_text(report.figures_page(site))
    (src / "conf.py").write_text(CONF.format(title=f"kgdistill · {profile} profile"))
    (src / "_static" / "site.css").write_text(CSS)

    code = build_main(["-b", "html", "-q", "-E", "-d", str(work / "doctrees"), str(src), str(out)])
    if code:
        print(f"error: sphinx-build failed (exit {code}); source in {relative(src)}", file=sys.stderr)
        return code
    print(f"site: {relative(out)}/index.html ({len(notebooks)} notebooks from {relative(source)}/, "
          f"{len(figures)} figures) in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
