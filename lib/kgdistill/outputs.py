"""What the notebooks write: provenance stamps, tables and figures under ``results/<profile>/``.

Owns :func:`stamp` (one line naming profile, device, torch version, git commit and dates of the
records behind an output), :func:`save_table` (``tables/<name>.{csv,md,tex}``) and
:func:`save_figure` (``figures/<name>.{png,pdf}``, the stamp drawn as a footer). Every file is
written atomically and reproducibly (no timestamps in the PNG/PDF metadata).
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Iterable

import pandas as pd

from .profile import results_dir
from .records import atomic_write_bytes, pick_device, provenance
from .tables import formatted


def stamp(records: Iterable[dict] | dict | None, profile: dict | str) -> str:
    """One line naming the profile, device(s), torch version(s), git commit(s) and date range of
    the records (or of this process when there are none)."""
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

    dates = values("date")
    date = dates[0] if len(dates) == 1 else f"{dates[0]} .. {dates[-1]}"
    return (
        f"profile {name} | device {', '.join(values('device'))} | torch {', '.join(values('torch'))} | "
        f"commit {', '.join(values('git_commit'))} | {date} | {origin}"
    )


def save_table(frame: pd.DataFrame, name: str, profile: dict | str, caption: str = "", note: str = "") -> dict[str, Path]:
    """Write ``results/<profile>/tables/<name>.{csv,md,tex}`` atomically; returns the paths.

    ``caption`` heads the Markdown/LaTeX versions and should carry the :func:`stamp`; ``note``
    is appended below the Markdown table.
    """
    folder = results_dir(profile) / "tables"
    paths = {ext: folder / f"{name}.{ext}" for ext in ("csv", "md", "tex")}
    atomic_write_bytes(paths["csv"], frame.to_csv(float_format="%.6g").encode())
    shown = formatted(frame)
    md = shown.to_markdown(stralign="right", disable_numparse=True)
    text = (f"{caption}\n\n" if caption else "") + md + (f"\n\n{note}" if note else "") + "\n"
    atomic_write_bytes(paths["md"], text.encode())
    latex = shown.to_latex(escape=True, caption=caption or None, label=f"tab:{name}")
    atomic_write_bytes(paths["tex"], latex.encode())
    return paths


def save_figure(fig, name: str, profile: dict | str, footer: str | None = None) -> dict[str, Path]:
    """Write ``results/<profile>/figures/<name>.{png,pdf}`` atomically; ``footer`` (the stamp)
    is drawn under the axes so the file states its provenance."""
    if footer:
        fig.text(0.01, 0.005, footer, fontsize=6, color="0.35", ha="left", va="bottom")
    folder = results_dir(profile) / "figures"
    paths = {}
    for ext, metadata in (("png", {"Software": None}), ("pdf", {"CreationDate": None, "Producer": None})):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=ext, dpi=150, bbox_inches="tight", metadata=metadata)
        paths[ext] = folder / f"{name}.{ext}"
        atomic_write_bytes(paths[ext], buffer.getvalue())
    return paths
