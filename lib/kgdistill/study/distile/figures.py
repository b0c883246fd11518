"""The DistilE paper's Figure 2 (notebook 06): student test MRR over teacher dim x student dim.

:func:`dimension_grid_figure` draws the grid of
:meth:`kgdistill.study.distile.grid.DistilEStudy.teacher_dimension_grid` as a heatmap with each
cell's value written in it, titled with the model and dataset it shows (:func:`grid_title`). The
validation curves (Figures 3 and the Table 3/4 pairs) are drawn by
:func:`kgdistill.study.distile.curves.curves_figure`. Imports no torch.
"""
from __future__ import annotations

import pandas as pd


def grid_title(grid: pd.DataFrame) -> str:
    """``Figure 2: student test MRR`` and, on a second line, ``TransE on WN18RR`` from ``grid.attrs``
    (``model``, ``dataset``, ``trained_on``: :meth:`~kgdistill.study.distile.grid.DistilEStudy.teacher_dimension_grid`),
    the benchmark trained added when it stands in for the paper's; without them the first line only."""
    model, dataset, trained = (grid.attrs.get(k) for k in ("model", "dataset", "trained_on"))
    if not model or not dataset:
        return "Figure 2: student test MRR"
    where = dataset if not trained or trained == dataset else f"{dataset} (trained on {trained})"
    return f"Figure 2: student test MRR\n{model} on {where}"


def dimension_grid_figure(grid: pd.DataFrame, title: str | None = None):
    """``grid`` (teacher dims as rows, student dims as columns, a test metric in each cell) as a
    heatmap with a colour bar: each cell's value printed in it to three decimals, ``"not
    trained"`` where it is NaN; rows and columns labelled as the frame is; titled ``title``, by
    default with the model and dataset it shows (:func:`grid_title`). Raises ValueError for
    an empty grid (leave out all-NaN rows before: ``grid.dropna(how="all")``)."""
    import matplotlib.pyplot as plt

    if grid.empty:
        raise ValueError("dimension_grid_figure: the grid is empty; train its students first")
    title = title or grid_title(grid)
    fig, ax = plt.subplots(figsize=(4.5, 0.9 + 0.9 * len(grid)))
    image = ax.imshow(grid.values, cmap="viridis")
    ax.set(xticks=range(grid.shape[1]), xticklabels=grid.columns, yticks=range(grid.shape[0]),
           yticklabels=grid.index, xlabel="student dim", ylabel="teacher dim")
    ax.set_title(title, fontsize=10)
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            value = grid.values[i, j]
            trained = value == value  # NaN: not trained
            ax.text(j, i, f"{value:.3f}" if trained else "not trained", ha="center", va="center",
                    color="w" if trained else "k", fontsize=8)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    return fig
