"""The study's figures, drawn so that a reader gets them at a glance.

* :func:`table1_dots`: Table 1 as a paired dot plot per dataset - measured and published test MRR
  on one line per row, short row labels (at most :data:`LABEL_LIMIT` characters; what a long
  label said goes into a note under the plot), a note for rows with only one of the two values
  (quoted by the paper, added here), no panel without data;
* :func:`size_accuracy`: Figure 1, measured and published MRR against non-zero parameters on the
  same axes (both panels share x and y; y starts at 0, so that no panel exaggerates differences);
* :func:`valid_curves`: validation MRR by epoch, mean over seeds (min..max band), curves that
  coincide within :data:`SAME_CURVE` drawn once with both names;
* :func:`relation_frequency`: training triples per relation, sorted, one panel per benchmark, the
  long-tail threshold as a dashed line (notebook 00);
* :func:`bucket_bars`: test MRR per relation-frequency bucket, one bar per model, one panel per
  dataset (notebook 02).

Each returns a matplotlib figure; :func:`kgdistill.study.outputs.save_figure` adds the provenance
footer below the notes. Imports no torch.
"""
from __future__ import annotations

import math
import re
from typing import Mapping, Sequence

import pandas as pd

#: the longest row label a figure shows; longer labels are shortened and explained in a note
LABEL_LIMIT = 20
#: two validation curves closer than this everywhere (MRR) are drawn as one, with both names
SAME_CURVE = 5e-4
#: the mark of a row that hit its epoch budget (the tables' dagger)
DAGGER = "†"
MEASURED, PUBLISHED = "C0", "0.45"


def short_label(label: object, limit: int = LABEL_LIMIT) -> tuple[str, str]:
    """``(label, note)``: a label with a parenthetical part loses it (``"DistilE (added; not in
    MetaSD paper)"`` -> ``"DistilE"``, note ``"added; not in MetaSD paper"``); a label still
    longer than ``limit`` is cut with an ellipsis and noted in full."""
    text = str(label)
    note = ""
    match = re.fullmatch(r"(.+?)\s*\((.+)\)\s*", text)
    if match:
        text, note = match.group(1), match.group(2)
    if len(text) > limit:
        note = f"{text}" + (f" ({note})" if note else "")
        text = text[: limit - 1] + "…"
    return text, note


def add_notes(fig, notes: Sequence[str], fontsize: float = 7) -> None:
    """Write ``notes`` (one line each) under the figure's axes, left-aligned."""
    notes = [n for n in notes if n]
    if notes:
        fig.text(0.01, 0.0, "\n".join(notes), fontsize=fontsize, ha="left", va="top", color="0.2")


def _finite(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _budget_marked(label: str, converged: Sequence, notes: dict[str, str]) -> str:
    """``label`` with :data:`DAGGER` when one of the ``converged`` cells carries it (a run that hit
    its epoch budget); the dagger's footnote goes into ``notes``."""
    if any(DAGGER in str(cell) for cell in converged):
        notes[DAGGER] = f"{DAGGER} a run of this row stopped at its epoch budget (not converged)"
        return f"{label} {DAGGER}"
    return label


def _row_label(label: object, row: pd.Series, metric: str, notes: dict[str, str]) -> str:
    """A table row's short label with its marks; what the marks and shortening mean goes into ``notes``."""
    short, note = short_label(label)
    if not _finite(row.get(metric)) and str(row.get("source", "measured")) != "measured":
        notes["*"] = f"* {row['source']}: the paper's number only, not trained here"
        short += " *"
    elif note:
        missing = "" if _finite(row.get(f"{metric} paper")) else " (no published value)"
        notes[short] = f"{short}: {note}{missing}"
    return _budget_marked(short, [row.get("converged", "")], notes)


def table1_dots(tables: Mapping[str, pd.DataFrame], titles: Mapping[str, str] | None = None,
                measured: str = "measured", published: str = "published", metric: str = "MRR"):
    """Table 1 (or any results table of :func:`kgdistill.study.tables.results_table`) as paired dots:
    one panel per dataset that has a value, one line per row, the measured value (filled, with a
    ±std bar over seeds) and the published one (open) joined by a grey segment."""
    import matplotlib.pyplot as plt

    titles = titles or {}
    shown = {ds: f for ds, f in tables.items()
             if any(_finite(v) for v in (*f[metric], *f.get(f"{metric} paper", [])))}
    if not shown:
        raise ValueError(f"no {metric} to plot: every table is empty")
    rows = max(len(f) for f in shown.values())
    fig, axes = plt.subplots(1, len(shown), figsize=(4.2 * len(shown), 0.9 + 0.28 * rows), squeeze=False, sharex=True)
    notes: dict[str, str] = {}
    top = 0.0
    for ax, (ds, frame) in zip(axes[0], shown.items()):
        labels = [_row_label(label, row, metric, notes) for label, row in frame.iterrows()]
        for y, (_, row) in enumerate(frame.iterrows()):
            value, paper, std = row.get(metric), row.get(f"{metric} paper"), row.get(f"{metric} ±")
            if _finite(value) and _finite(paper):
                ax.plot([value, paper], [y, y], color="0.8", lw=2, zorder=1)
            if _finite(paper):
                ax.scatter([paper], [y], s=36, facecolors="white", edgecolors=PUBLISHED, linewidths=1.5, zorder=2,
                           label=published)
            if _finite(value):
                ax.errorbar([value], [y], xerr=[[std], [std]] if _finite(std) else None, fmt="o", ms=6,
                            color=MEASURED, zorder=3, label=measured)
            top = max(top, *(v for v in (value, paper) if _finite(v)))
        ax.set_yticks(range(len(labels)), labels)
        ax.set_ylim(len(labels) - 0.5, -0.5)
        ax.grid(axis="x", color="0.92")
        ax.set_axisbelow(True)
        ax.set(title=titles.get(ds, ds), xlabel=f"test {metric}")
    axes[0][0].set_xlim(0, top * 1.08)
    kinds = {}  # one legend entry per kind, measured first, above the panels (never over a dot)
    for ax in axes[0]:
        kinds.update({name: handle for handle, name in zip(*ax.get_legend_handles_labels())})
    order = sorted(kinds, key=lambda name: name != measured)
    fig.legend([kinds[n] for n in order], order, loc="upper center", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.32 / fig.get_figheight()))
    add_notes(fig, list(notes.values()))
    return fig


def _stacked_labels(ax, points: Sequence[tuple[float, float, str, str]], gap: float) -> None:
    """Label points to their right; labels of points at one x are stacked at least ``gap`` apart
    (data units of y), each joined to its point by a thin line when moved."""
    by_x: dict[float, list[tuple[float, str, str]]] = {}
    for x, y, text, color in points:
        by_x.setdefault(x, []).append((y, text, color))
    for x, group in by_x.items():
        group.sort()
        placed: list[float] = []
        for y, text, color in group:
            at = y if not placed else max(y, placed[-1] + gap)
            placed.append(at)
            ax.annotate(text, (x, y), xytext=(x * 1.25, at), fontsize=8, color=color, va="center",
                        arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.6} if abs(at - y) > gap / 4 else None)


def size_accuracy(points: pd.DataFrame, paper: Mapping[str, Mapping], curves: Sequence[str], students: Sequence[str],
                  measured_title: str, published_title: str, metric: str = "MRR"):
    """Figure 1: ``metric`` against non-zero parameters, measured (``points``:
    :func:`kgdistill.study.tables.size_accuracy_frame`; ``curves`` as lines over ranks, ``students`` as
    stars) beside the published Table 1 values of the same names, in the same colours and marks.
    Both panels share y (from 0: no panel exaggerates a difference) and x label; each x axis is
    logarithmic over the same number of decades, so slopes compare."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import EngFormatter, LogLocator, NullFormatter

    fig, (ax, ax_paper) = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    colors = {name: f"C{i}" for i, name in enumerate([*curves, *students])}
    notes: dict[str, str] = {}

    def marked(recipe: str, label: str) -> str:  # a dagger when a run behind the recipe hit its budget
        return _budget_marked(label, points.loc[points["recipe"] == recipe].get("converged", []), notes)

    for recipe in curves:
        curve = points[points["recipe"] == recipe].sort_values("size")
        ax.plot(curve["size"], curve[metric], marker="o", color=colors[recipe], label=marked(recipe, recipe))
    for recipe in students:
        student = points[points["recipe"] == recipe]
        ax.scatter(student["size"], student[metric], marker="*", s=140, zorder=3, color=colors[recipe],
                   label=marked(recipe, f"{recipe} student"))
    published = [(float(paper[n]["size"]), float(paper[n][metric]), n, colors[n]) for n in [*curves, *students]
                 if (paper.get(n) or {}).get("size") and _finite((paper.get(n) or {}).get(metric))]
    for x, y, name, color in published:
        ax_paper.scatter(x, y, marker="o" if name in curves else "*", s=50 if name in curves else 140, color=color,
                         zorder=3)
    top = max([*points[metric], *(y for _, y, _, _ in published)]) * 1.12
    ax.set_ylim(0, top)
    _stacked_labels(ax_paper, published, gap=top * 0.06)
    sizes = {ax: list(points["size"]), ax_paper: [x for x, _, _, _ in published]}
    decades = max(math.log10(max(v) / min(v)) for v in sizes.values() if v) + 1.0
    for axis, title in ((ax, measured_title), (ax_paper, published_title)):
        axis.set_xscale("log")
        low = min(sizes[axis] or [1.0]) / 10 ** 0.3
        axis.set_xlim(low, low * 10 ** decades)
        axis.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        axis.xaxis.set_major_formatter(EngFormatter())
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.set(title=title, xlabel="non-zero parameters")
        axis.grid(color="0.92")
        axis.set_axisbelow(True)
    ax.set_ylabel(f"test {metric}")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    add_notes(fig, list(notes.values()))
    return fig


def _seed_columns(curves: pd.DataFrame) -> dict[str, list]:
    """``{row: its columns}`` of a curves frame (columns ``row`` or ``row/s<seed>``), first-seen order."""
    rows: dict[str, list] = {}
    for column in curves.columns:
        match = re.fullmatch(r"(.+)/s\d+", str(column))
        rows.setdefault(match.group(1) if match else str(column), []).append(column)
    return rows


def merged_curves(curves: pd.DataFrame, tolerance: float = SAME_CURVE) -> list[tuple[list[str], pd.DataFrame]]:
    """Validation curves (:func:`kgdistill.study.tables.valid_curves`) grouped by row (seeds together),
    rows whose mean curves differ by less than ``tolerance`` at every epoch merged:
    ``[(row names, frame of their seed columns)]``."""
    rows = _seed_columns(curves)
    groups: list[tuple[list[str], list]] = []
    for row, columns in rows.items():
        mean = curves[columns].mean(axis=1)
        for names, cols in groups:
            if (mean - curves[rows[names[0]]].mean(axis=1)).abs().max() < tolerance:
                names.append(row)
                cols.extend(columns)
                break
        else:
            groups.append(([row], list(columns)))
    return [(names, curves[cols]) for names, cols in groups]


def valid_curves(curves: pd.DataFrame, title: str, tolerance: float = SAME_CURVE, metric: str = "MRR"):
    """Validation ``metric`` by epoch: one line per row (mean over seeds, a min..max band when
    there are several), rows closer than ``tolerance`` drawn once as ``"a = b"`` with a note; a line
    with a run that hit its epoch budget (``curves.attrs["budget_hit"]``) is labelled † with a note."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    markers = "osD^vP"
    notes = []
    seeds = max(len(columns) for columns in _seed_columns(curves).values())
    if seeds > 1:
        notes.append(f"lines: mean over {seeds} seeds; bands: min..max over the seeds")
    hits, budget = curves.attrs.get("budget_hit", {}), {}
    for i, (names, frame) in enumerate(merged_curves(curves, tolerance)):
        label = " = ".join(names)
        shown = _budget_marked(label, [DAGGER if hits.get(c) else "" for c in frame.columns], budget)
        ax.plot(frame.index, frame.mean(axis=1), marker=markers[i % len(markers)], color=f"C{i}", label=shown)
        if frame.shape[1] > 1:
            ax.fill_between(frame.index, frame.min(axis=1), frame.max(axis=1), color=f"C{i}", alpha=0.15, lw=0)
        if len(names) > 1:
            notes.append(f"{label}: the curves differ by less than {tolerance:g} at every epoch, drawn once")
    ax.set(title=title, xlabel="epoch", ylabel=f"valid {metric}")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(color="0.92")
    ax.set_axisbelow(True)
    ax.legend(fontsize=8)
    fig.tight_layout()
    add_notes(fig, notes + list(budget.values()))
    return fig


def relation_frequency(counts: Mapping[str, Sequence[int]], threshold: int):
    """Training triples per relation (``{benchmark: one count per relation}``, any order), sorted
    from the most frequent relation, as bars on a log scale: one panel per benchmark, titled with
    its number of relations, and the long-tail ``threshold`` as a dashed line."""
    import matplotlib.pyplot as plt

    if not counts:
        raise ValueError("relation_frequency: no benchmark to draw")
    fig, axes = plt.subplots(1, len(counts), figsize=(6 * len(counts), 3.6), squeeze=False)
    for ax, (name, values) in zip(axes[0], counts.items()):
        values = sorted((int(v) for v in values), reverse=True)
        ax.bar(range(len(values)), values, width=1.0, color="tab:blue")
        ax.axhline(threshold, color="tab:red", ls="--", lw=1, label=f"{threshold} triples")
        ax.set_yscale("log")
        ax.set(title=f"{name}: {len(values)} relations", xlabel="relation (sorted by frequency)",
               ylabel="training triples")
        ax.legend(loc="upper right")
    fig.tight_layout()
    return fig


def bucket_bars(buckets: Mapping[str, pd.DataFrame], titles: Mapping[str, str] | None = None, metric: str = "MRR"):
    """Test ``metric`` (the one the frames hold) by relation-frequency bucket (``{dataset: frame}``
    of :func:`kgdistill.study.tables.bucket_frame`: buckets as rows, columns ``relations``,
    ``triples`` and one per model): one panel per dataset titled ``titles[dataset]``, one bar per
    model side by side in each bucket, each bucket labelled with its relations and test triples."""
    import matplotlib.pyplot as plt

    if not buckets:
        raise ValueError("bucket_bars: no dataset to draw")
    titles = titles or {}
    fig, axes = plt.subplots(1, len(buckets), figsize=(7 * len(buckets), 3.8), squeeze=False)
    for ax, (ds, frame) in zip(axes[0], buckets.items()):
        models = [c for c in frame.columns if c not in ("relations", "triples")]
        width = 0.8 / len(models)
        for i, model in enumerate(models):
            ax.bar([j + (i - (len(models) - 1) / 2) * width for j in range(len(frame))], frame[model], width=width,
                   label=model)
        labels = [f"{b}\n({n} rel., {t} test)" for b, n, t in zip(frame.index, frame["relations"], frame["triples"])]
        ax.set_xticks(range(len(frame)), labels, fontsize=7)
        ax.set(title=titles.get(ds, ds), xlabel="training triples per relation", ylabel=f"test {metric}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
