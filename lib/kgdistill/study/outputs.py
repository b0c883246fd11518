"""What the notebooks write: provenance stamps, tables and figures under one root (``results/<profile>/``).

Owns :func:`stamp` (one line naming profile, device, torch version, git commit and dates of the
records behind an output), :func:`save_table` (``tables/<name>.{csv,md,tex}``: the CSV with every
column, the Markdown and LaTeX in the table's reading view, :mod:`kgdistill.study.views`), :func:`save_tables`
(several tables named after their keys, each one's files printed) and :func:`save_figure`
(``figures/<name>.{png,pdf}``, the stamp drawn as a footer). Every file is
written atomically and reproducibly (no timestamps in the PNG/PDF metadata).
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Callable, Hashable, Iterable, Mapping

import pandas as pd

from ..core.records import atomic_write_bytes, pick_device, provenance
from .latex import latex_note, latex_table
from .profile import results_dir
from .tables import budget_note
from .views import View, reading_view

#: the CSV's numbers: 10 significant digits, so counts up to 10 digits (sizes) stay exact
CSV_FLOAT = "%.10g"


def stamp(records: Iterable[dict] | dict | None, profile: dict | str) -> str:
    """One short line naming the profile, device(s), torch version(s), the git commit (or how many
    commits and the latest), the date range and the number of records behind an output (or this
    process when there are none)."""
    if isinstance(records, dict):
        records = list(records.values())
    provs = [r["provenance"] for r in (records or []) if r and "provenance" in r]
    name = profile["name"] if isinstance(profile, dict) else profile
    if not provs:
        device = (profile.get("device") if isinstance(profile, dict) else None) or "auto"
        provs = [provenance(pick_device(device))]
        origin = "no runs; this environment"
    else:
        origin = f"{len(provs)} run record(s)"

    def values(key):
        return sorted({p.get(key, "?") for p in provs})

    return (f"profile {name} | device {', '.join(values('device'))} | torch {', '.join(values('torch'))} | "
            f"{_commits(provs)} | {_date_range(values('date'))} | {origin}")


def _commits(provs: list[dict]) -> str:
    """``commit abc`` for one commit, else ``16 commits, latest abc`` (latest: of the newest record)."""
    commits = {p.get("git_commit", "?") for p in provs}
    if len(commits) == 1:
        return f"commit {commits.pop()}"
    latest = max(provs, key=lambda p: p.get("date", ""))
    return f"{len(commits)} commits, latest {latest.get('git_commit', '?')}"


def _date_range(dates: list[str]) -> str:
    """``2026-11-21 07:04 UTC``, ``2026-11-21 07:04 .. 11:55 UTC`` (same day) or the two dates."""
    first, last = dates[0], dates[-1]
    if first == last:
        return first
    day, _, rest = last.partition(" ")
    if first.startswith(day + " ") and first.endswith(" UTC"):
        return f"{first[:-4]} .. {rest}"
    return f"{first} .. {last}"


def output_root(profile: dict | str, root: str | os.PathLike | None = None) -> Path:
    """Where a run of the study writes: ``root`` when given, else ``results/<profile>/``."""
    return Path(root) if root else results_dir(profile)


def source_note(shown: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """A formatted table without its ``source`` column (``measured`` in most rows): rows whose
    source is something else (a number the paper quotes from elsewhere) get ``*`` after their
    label and one footnote line naming them and their source; ``""`` when there are none."""
    if "source" not in shown.columns:
        return shown, ""
    other = shown["source"] != "measured"
    by_source: dict[str, list[str]] = {}
    for label, source in shown.loc[other, "source"].items():
        by_source.setdefault(str(source), []).append(str(label))
    out = shown.drop(columns="source")
    out.index = [f"{label} *" if flag else label for label, flag in zip(out.index, other)]
    out.index.name = shown.index.name
    note = "; ".join(f"{', '.join(labels)}: {source}, not trained here" for source, labels in by_source.items())
    return out, (f"* {note}." if note else "")


def flat_labels(shown: pd.DataFrame) -> pd.DataFrame:
    """``shown`` with a multi-level row index as one level: labels ``TransE / 64 / DS`` under the
    name ``model / dim / method``, so Markdown and LaTeX print no Python tuples."""
    if not isinstance(shown.index, pd.MultiIndex):
        return shown
    out = shown.copy()
    out.index = pd.Index([" / ".join(str(v) for v in label) for label in shown.index],
                         name=" / ".join(str(n) for n in shown.index.names if n is not None) or None)
    return out


def save_table(frame: pd.DataFrame, name: str, profile: dict | str, caption: str = "", note: str = "",
               root: str | os.PathLike | None = None, view: View | None = None) -> dict[str, Path]:
    """Write ``<root>/tables/<name>.{csv,md,tex}`` atomically (root: :func:`output_root`); returns the paths.

    The CSV keeps every column, numbers at :data:`CSV_FLOAT` (data for machines). The Markdown and LaTeX
    versions are the table's reading view (``view``, default :func:`kgdistill.study.views.view_for`
    of ``name``): its display columns at 3 decimals, counts as integers, ``±`` in the metric's cell,
    a ``source`` column moved into a footnote (:func:`source_note`), a multi-level row index as one
    label per row (:func:`flat_labels`); a table without a measured row is one line instead of rows
    of dashes (:func:`kgdistill.study.views.empty_line`). ``caption`` heads them and should carry
    the :func:`stamp`; below the table come the view's notes (e.g. two rows that agree, and why),
    ``note``, and the footnote on rows that did not converge
    (:func:`kgdistill.study.tables.budget_note`: rows marked † hit their epoch budget). The LaTeX
    version compiles with booktabs and graphicx (:func:`kgdistill.study.latex.latex_table`).
    """
    folder = output_root(profile, root) / "tables"
    paths = {ext: folder / f"{name}.{ext}" for ext in ("csv", "md", "tex")}
    atomic_write_bytes(paths["csv"], frame.to_csv(float_format=CSV_FLOAT).encode())
    text_frame, view_notes = reading_view(frame, name, view)
    if text_frame is None:  # no measured row: one line says so
        parts = [*view_notes, *([note] if note else [])]
        body = "\n\n".join(parts)
        atomic_write_bytes(paths["md"], ((f"{caption}\n\n" if caption else "") + body + "\n").encode())
        atomic_write_bytes(paths["tex"], latex_note(caption, f"tab:{name}", parts).encode())
        return paths
    shown, quoted = source_note(text_frame)
    shown = flat_labels(shown)
    md = shown.to_markdown(stralign="right", disable_numparse=True)
    parts = [part for part in (quoted, *view_notes, note, budget_note(frame)) if part]
    notes = "\n\n".join(parts)
    text = (f"{caption}\n\n" if caption else "") + md + (f"\n\n{notes}" if notes else "") + "\n"
    atomic_write_bytes(paths["md"], text.encode())
    atomic_write_bytes(paths["tex"], latex_table(shown, caption, f"tab:{name}", parts).encode())
    return paths


def save_tables(frames: pd.DataFrame | Mapping[Hashable, pd.DataFrame], name: str | Callable[[Hashable], str],
                profile: dict | str, caption: str | Callable[[Hashable], str] = "",
                titles: Mapping[Hashable, str] | Callable[[Hashable], str] | None = None, footer: str = "",
                note: str = "", root: str | os.PathLike | None = None, show: bool = True
                ) -> dict[Hashable, dict[str, Path]]:
    """:func:`save_table` for each ``{key: frame}`` of ``frames`` (or for one frame), each table's
    caption followed by ``footer`` (the :func:`stamp`); with ``show``, print each table's sorted
    file paths, one list per line. Returns ``{key: paths}`` (one frame: ``{name: paths}``).

    ``name`` and ``caption`` are a function of the key, or a template filled with ``key`` and
    ``title`` (``titles[key]``, or ``titles(key)``; default ``str(key)``): ``"table1_{key}"``,
    ``"equal_size_{key[0]}_r{key[1]}"``, ``"Table 1, {title}"`` (``{{`` for a literal brace).
    One frame takes its ``name`` and ``caption`` as they are.
    """
    if isinstance(frames, pd.DataFrame):
        if callable(name) or callable(caption):
            raise TypeError("save_tables: one frame takes its name and caption as strings")
        labelled = {name: (frames, name, caption)}
    else:
        labelled = {key: (frame, _label(name, key, titles), _label(caption, key, titles))
                    for key, frame in frames.items()}
    out = {}
    for key, (frame, table_name, text) in labelled.items():
        full = "\n\n".join(part for part in (text, footer) if part)
        out[key] = save_table(frame, table_name, profile, caption=full, note=note, root=root)
        if show:
            print(sorted(str(p) for p in out[key].values()))
    return out


def _label(template: str | Callable[[Hashable], str], key: Hashable,
           titles: Mapping[Hashable, str] | Callable[[Hashable], str] | None) -> str:
    """A table's name or caption for ``key`` (:func:`save_tables`); its title looked up only when used."""
    if callable(template):
        return template(key)
    if "{title" not in template:
        return template.format(key=key)
    title = str(key) if titles is None else titles(key) if callable(titles) else titles[key]
    return template.format(key=key, title=title)


def save_figure(fig, name: str, profile: dict | str, footer: str | None = None,
                root: str | os.PathLike | None = None) -> dict[str, Path]:
    """Write ``<root>/figures/<name>.{png,pdf}`` atomically (root: :func:`output_root`); ``footer``
    (the stamp) is drawn under the axes and any notes (:func:`kgdistill.study.figures.add_notes`) so
    the file states its provenance."""
    if footer:
        fig.text(0.01, _below_texts(fig), footer, fontsize=6, color="0.35", ha="left", va="top")
    folder = output_root(profile, root) / "figures"
    paths = {}
    for ext, metadata in (("png", {"Software": None}), ("pdf", {"CreationDate": None, "Producer": None})):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=ext, dpi=150, bbox_inches="tight", metadata=metadata)
        paths[ext] = folder / f"{name}.{ext}"
        atomic_write_bytes(paths[ext], buffer.getvalue())
    return paths


def _below_texts(fig) -> float:
    """A figure y coordinate just under the figure and every text already drawn on it (notes)."""
    renderer = fig.canvas.get_renderer()
    to_figure = fig.transFigure.inverted()
    lows = [t.get_window_extent(renderer).transformed(to_figure).y0 for t in fig.texts if t.get_text()]
    return min([0.0, *lows]) - 6 / (72 * fig.get_figheight())  # 6 pt of space
