"""Validation curves of DistilE students with and without the teacher (notebook 06).

:meth:`kgdistill.study.distile.grid.DistilEStudy.curves_frame` gives one student pair's validation MRR
by epoch; :func:`curves_figure` draws one panel per pair (Figure 3's single student, or the
Table 3 students of every backbone), with the switch to stage 2 as a dashed line;
:func:`curves_summary` is each panel's bests as a table.
"""
from __future__ import annotations

import pandas as pd

#: line style per student, the same in every panel
STYLES = {"no-DS": {"color": "tab:blue", "marker": "o"}, "DS": {"color": "tab:red", "marker": "s"}}
#: the legend entry of the dashed line between the two stages (stage 2: the teacher is trained too)
SWITCH_LABEL = "stage 2 starts"


def curves_figure(panels: dict[str, tuple[pd.DataFrame, int | None]], ylabel: str = "valid MRR",
                  suptitle: str | None = None):
    """One panel per ``{title: (frame, switch_epoch)}`` (a frame of :meth:`curves_frame`: epochs as
    rows, ``no-DS`` / ``DS`` columns): each student's evaluations as a line (its own epochs only,
    so runs that stopped at different epochs end where they stopped), the last stage-1 epoch as a
    dashed vertical line (:data:`SWITCH_LABEL`); one legend for all panels, above them.
    Panels keep their own y range (backbones differ several-fold in MRR);
    ``suptitle``, when given, heads the whole figure above the panels' own titles.
    Raises ValueError for no panels: a figure without data is not drawn."""
    import matplotlib.pyplot as plt

    if not panels:
        raise ValueError("curves_figure: no panel has both runs' records; train them first (scripts/train_runs.py)")
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels) + 0.6, 3.2), squeeze=False)
    for ax, (title, (frame, switch)) in zip(axes[0], panels.items()):
        for name, style in STYLES.items():
            line = frame[name].dropna()
            if not line.empty:
                _ = ax.plot(line.index, line.values, markersize=2.5, linewidth=1.2, label=name, **style)
        if switch is not None:
            _ = ax.axvline(switch + 0.5, color="k", linestyle="--", linewidth=0.8, label=SWITCH_LABEL)
        _ = ax.set(title=title, xlabel="epoch")
        ax.grid(alpha=0.3)
    _ = axes[0][0].set_ylabel(ylabel)
    entries = {}  # one legend entry per name over all panels (a panel may lack a student or the switch)
    for ax in axes[0]:
        entries.update({name: handle for handle, name in zip(*ax.get_legend_handles_labels()) if name not in entries})
    fig.tight_layout()
    # above the panels, never over a curve; the suptitle above the legend
    _ = fig.legend(entries.values(), entries.keys(), loc="lower center", bbox_to_anchor=(0.5, 0.99),
                   ncol=len(entries), fontsize=8, frameon=False)
    if suptitle:
        _ = fig.suptitle(suptitle, y=1.02 + 0.3 / fig.get_figheight(), fontsize=10)
    return fig


def curves_summary(panels: dict[str, tuple[pd.DataFrame, int | None]]) -> pd.DataFrame:
    """Per panel of :func:`curves_figure`: each student's best validation MRR and its epoch, the
    last evaluated epoch, and ``DS − no-DS`` of the bests (validation, not the test table's
    difference). Deterministic, for nbval."""
    rows = {}
    for title, (frame, _) in panels.items():
        row = {}
        for name in STYLES:
            line = frame[name].dropna()
            row[f"{name} best"] = line.max() if not line.empty else float("nan")
            row[f"{name} at epoch"] = int(line.idxmax()) if not line.empty else pd.NA
            row[f"{name} last epoch"] = int(line.index.max()) if not line.empty else pd.NA
        row["DS − no-DS"] = row["DS best"] - row["no-DS best"]
        rows[title] = row
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "model"
    return frame
