"""The study's figures read at a glance: Table 1 as paired dots with short labels and a note for
every row that has one dot only, no empty panel; Figure 1's panels on the same axes; validation
curves that coincide drawn once; a compact provenance footer under the notes."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from kgdistill import figures, study  # noqa: E402
from kgdistill.study.distile.claims import ds_verdict  # noqa: E402
from kgdistill.study.distile.curves import SWITCH_LABEL, curves_figure  # noqa: E402
from kgdistill.study.distile.figures import dimension_grid_figure  # noqa: E402
from kgdistill.study.outputs import save_figure, stamp  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
nan = math.nan


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def table(rows: dict[str, tuple], seeds: int = 1) -> pd.DataFrame:
    """A results table (kgdistill.study.tables.results_table's columns that the figure reads)."""
    frame = pd.DataFrame(
        [{"source": s, "converged": c, "MRR": m, "MRR paper": p} for s, c, m, p in rows.values()], index=list(rows)
    )
    if seeds > 1:
        frame["MRR ±"] = [0.01 if not math.isnan(m) else nan for m in frame["MRR"]]
    return frame


TABLE1 = {
    "TransE": ("quoted (LibKGE, via paper)", "-", nan, 0.313),
    "RotatE": ("quoted (LibKGE, via paper)", "-", nan, 0.333),
    "ComplEx": ("measured", "no †", 0.29, 0.346),
    "MetaSD": ("measured", "yes", 0.20, 0.391),
    "DistilE (added; not in MetaSD paper)": ("measured", "yes", 0.14, nan),
}


def tick_labels(ax) -> list[str]:
    return [t.get_text() for t in ax.get_yticklabels()]


def all_text(fig) -> str:
    return "\n".join(t.get_text() for t in fig.texts)


def test_table1_is_a_dot_plot_with_short_labels_and_notes_for_single_dots():
    empty = table({"CP": ("measured", "-", nan, nan)})
    fig = figures.table1_dots({"FB15k-237": table(TABLE1, seeds=2), "WN18RR": empty}, {"FB15k-237": "FB15k-237"})
    assert len(fig.axes) == 1  # the dataset without a single value has no panel
    labels = tick_labels(fig.axes[0])
    assert labels == ["TransE *", "RotatE *", "ComplEx †", "MetaSD", "DistilE"]
    assert max(map(len, labels)) <= figures.LABEL_LIMIT
    notes = all_text(fig)
    assert "* quoted (LibKGE, via paper): the paper's number only, not trained here" in notes
    assert "DistilE: added; not in MetaSD paper (no published value)" in notes and "† a run of this row" in notes
    assert fig.axes[0].get_xlim()[0] == 0  # MRR from 0: distances are not exaggerated
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["measured", "published"]


def test_short_label():
    assert figures.short_label("DistilE (added; not in MetaSD paper)") == ("DistilE", "added; not in MetaSD paper")
    assert figures.short_label("w/o P&M") == ("w/o P&M", "")
    text, note = figures.short_label("a" * 30)
    assert len(text) == figures.LABEL_LIMIT and note == "a" * 30


def test_figure1_panels_share_their_axes_names_and_y_range():
    points = pd.DataFrame({"recipe": ["DURA", "DURA", "MetaSD"], "size": [2e5, 2e6, 1.9e5], "MRR": [0.26, 0.33, 0.2]},
                          index=["DURA r16", "DURA r64", "MetaSD"])
    paper = {"DURA": {"size": 6e7, "MRR": 0.371}, "MetaSD": {"size": 6e6, "MRR": 0.391}}
    fig = figures.size_accuracy(points, paper, ["DURA"], ["MetaSD"], "measured", "published")
    measured, published = fig.axes
    assert measured.get_xlabel() == published.get_xlabel() == "non-zero parameters"
    assert measured.get_ylim() == published.get_ylim() and measured.get_ylim()[0] == 0
    decades = [math.log10(ax.get_xlim()[1] / ax.get_xlim()[0]) for ax in fig.axes]
    assert decades[0] == pytest.approx(decades[1])  # slopes compare
    assert {t.get_text() for t in published.texts} == {"DURA", "MetaSD"}


def test_coinciding_validation_curves_are_drawn_once_and_seeds_are_averaged():
    epochs = [5, 10]
    curves = pd.DataFrame({
        "MetaSD/s0": [0.20, 0.22], "MetaSD/s1": [0.22, 0.23], "w/o P/s0": [0.572271, 0.604359],
        "w/o P/s1": [0.595625, 0.620626], "w/o M/s0": [0.208, 0.224], "w/o M/s1": [0.228, 0.238],
        "w/o P&M/s0": [0.572268, 0.604380], "w/o P&M/s1": [0.595626, 0.620654],
    }, index=epochs)
    fig = figures.valid_curves(curves, "Validation MRR")
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["MetaSD", "w/o P = w/o P&M", "w/o M"]  # 8 columns, 3 distinguishable lines
    notes = all_text(fig)
    assert "mean over 2 seeds" in notes and "w/o P = w/o P&M: the curves differ by less than" in notes
    single = figures.valid_curves(pd.DataFrame({"a": [0.1, 0.2], "b": [0.3, 0.4]}, index=epochs), "t")
    assert [t.get_text() for t in single.axes[0].get_legend().get_texts()] == ["a", "b"] and not single.texts


def test_the_stamp_counts_commits_instead_of_listing_them():
    def record(commit: str, date: str) -> dict:
        return {"provenance": {"device": "cpu (x, 1 threads)", "torch": "2", "git_commit": commit, "date": date}}

    records = [record(f"{i:012x}", f"2026-11-21 {7 + i % 5:02d}:04 UTC") for i in range(16)]
    text = stamp(records, "cpu")
    assert "16 commits, latest 000000000004" in text and "000000000001" not in text
    assert "2026-11-21 07:04 .. 11:04 UTC" in text and len(text) < 140
    assert "commit abc |" in stamp([record("abc", "2026-01-01 00:00 UTC")], "cpu")


def test_the_footer_goes_under_the_notes(tmp_path):
    fig = figures.valid_curves(pd.DataFrame({"a/s0": [0.1, 0.2], "a/s1": [0.1, 0.3]}, index=[1, 2]), "t")
    save_figure(fig, "f", "demo", footer="profile demo | stamp", root=tmp_path)
    renderer = fig.canvas.get_renderer()
    notes, footer = fig.texts
    assert footer.get_window_extent(renderer).y1 <= notes.get_window_extent(renderer).y0
    assert (tmp_path / "figures" / "f.png").stat().st_size > 0


@pytest.mark.parametrize("notebook, call", [
    ("00_datasets.ipynb", "figures.relation_frequency("),
    ("01_main_results.ipynb", "figures.table1_dots("),
    ("02_long_tail.ipynb", "figures.bucket_bars("),
    ("03_ablation.ipynb", "figures.valid_curves("),
    ("05_size_accuracy.ipynb", "figures.size_accuracy("),
    ("06_distile.ipynb", "study.curves_figure("),
    ("06_distile.ipynb", "study.dimension_grid_figure("),
])
def test_the_notebooks_draw_these_figures(notebook, call):
    code = "\n".join(c.source for c in nbformat.read(ROOT / "notebooks" / notebook, as_version=4).cells
                     if c.cell_type == "code")
    assert call in code


def test_figure1_marks_recipes_whose_runs_hit_their_budget():
    points = pd.DataFrame({"recipe": ["DURA", "DURA", "MetaSD"], "size": [2e5, 2e6, 1.9e5], "MRR": [0.26, 0.33, 0.2],
                           "converged": ["yes", "no †", "yes"]}, index=["DURA r16", "DURA r64", "MetaSD"])
    paper = {"DURA": {"size": 6e7, "MRR": 0.371}, "MetaSD": {"size": 6e6, "MRR": 0.391}}
    fig = figures.size_accuracy(points, paper, ["DURA"], ["MetaSD"], "measured", "published")
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["DURA †", "MetaSD student"]
    assert any("not converged" in t.get_text() for t in fig.texts)


def bar_heights(ax) -> list[float]:
    return [patch.get_height() for patch in ax.patches]


def test_relation_frequency_sorts_each_benchmark_and_marks_the_threshold():
    fig = figures.relation_frequency({"FB": [5, 300, 20, 1000], "WN": [7]}, threshold=100)
    fb, wn = fig.axes
    assert [ax.get_title() for ax in fig.axes] == ["FB: 4 relations", "WN: 1 relations"]
    assert bar_heights(fb) == [1000, 300, 20, 5] and bar_heights(wn) == [7]  # most frequent first
    assert [p.get_width() for p in fb.patches] == [1.0] * 4
    assert fb.get_yscale() == "log" and fb.get_xlabel() == "relation (sorted by frequency)"
    assert fb.get_ylabel() == "training triples"
    (line,) = fb.get_lines()  # the threshold, dashed, across the panel
    assert list(line.get_ydata()) == [100, 100] and line.get_linestyle() == "--"
    assert [t.get_text() for t in fb.get_legend().get_texts()] == ["100 triples"]
    assert tuple(fig.get_size_inches()) == (12, 3.6)
    with pytest.raises(ValueError, match="no benchmark"):
        figures.relation_frequency({}, 100)


def test_bucket_bars_put_one_bar_per_model_in_each_bucket():
    buckets = pd.DataFrame({"relations": [2, 13], "triples": [2, 64], "DURA †": [0.6, 0.8], "MetaSD": [0.3, 0.2]},
                           index=pd.Index(["[0, 20)", ">= 20"], name="bucket"))
    fig = figures.bucket_bars({"FB15k-237": buckets, "WN18RR": buckets}, {"FB15k-237": "FB15k-237 (UMLS)"})
    ax, other = fig.axes
    assert ax.get_title() == "FB15k-237 (UMLS)" and other.get_title() == "WN18RR"  # no title given: the key
    assert ax.get_xlabel() == "training triples per relation" and ax.get_ylabel() == "test MRR"
    assert bar_heights(ax) == [0.6, 0.8, 0.3, 0.2]  # model by model; relations and triples are no bars
    centres = [p.get_x() + p.get_width() / 2 for p in ax.patches]
    assert centres == pytest.approx([-0.2, 0.8, 0.2, 1.2])  # side by side around each bucket's tick
    assert [t.get_text() for t in ax.get_xticklabels()] == ["[0, 20)\n(2 rel., 2 test)", ">= 20\n(13 rel., 64 test)"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["DURA †", "MetaSD"]
    with pytest.raises(ValueError, match="no dataset"):
        figures.bucket_bars({})


def test_the_dimension_grid_is_a_heatmap_with_its_values_and_untrained_cells_named():
    grid = pd.DataFrame([[0.136, nan, 0.076], [0.067, 0.085, 0.071]], index=["16 †", "32"], columns=[8, 4, 2])
    fig = dimension_grid_figure(grid)
    ax, colorbar = fig.axes
    assert ax.get_title() == "Figure 2: student test MRR"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("student dim", "teacher dim")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["8", "4", "2"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["16 †", "32"]
    texts = [(t.get_text(), t.get_color()) for t in ax.texts]
    assert texts == [("0.136", "w"), ("not trained", "k"), ("0.076", "w"), ("0.067", "w"), ("0.085", "w"),
                     ("0.071", "w")]
    assert ax.get_images()[0].get_array().shape == (2, 3)
    assert colorbar.get_ylim() == pytest.approx((0.067, 0.136))
    assert study.dimension_grid_figure is dimension_grid_figure
    with pytest.raises(ValueError, match="empty"):
        dimension_grid_figure(grid.iloc[:0])


def test_the_dimension_grid_names_its_model_and_dataset():
    """Figure 2 says what it shows: the grid's attrs (``teacher_dimension_grid``) make the title,
    kept through ``dropna`` as notebook 06 calls it; a stand-in benchmark is named."""
    grid = pd.DataFrame([[0.136, 0.076], [nan, nan]], index=["64", "128"], columns=[32, 8])
    grid.attrs.update(model="TransE", dataset="WN18RR", trained_on="WN18RR")
    title = dimension_grid_figure(grid.dropna(how="all")).axes[0].get_title()
    assert title == "Figure 2: student test MRR\nTransE on WN18RR"
    grid.attrs["trained_on"] = "UMLS"
    assert dimension_grid_figure(grid).axes[0].get_title().endswith("TransE on WN18RR (trained on UMLS)")
    assert dimension_grid_figure(grid, title="mine").axes[0].get_title() == "mine"


def test_curves_figure_heads_the_figure_only_when_asked():
    frame = pd.DataFrame({"no-DS": [0.1, 0.2, nan], "DS": [0.1, 0.25, 0.3]}, index=pd.Index([1, 2, 3], name="epoch"))
    panels = {"TransE": (frame, 1), "RotatE": (frame, None)}
    fig = curves_figure(panels, suptitle="Table 3 (UMLS): 2-dim students")
    assert fig._suptitle.get_text() == "Table 3 (UMLS): 2-dim students" and fig._suptitle.get_position()[1] > 1.02
    # one legend above the panels, the dashed stage switch in it (issue 26)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["no-DS", "DS", SWITCH_LABEL]
    assert all(ax.get_legend() is None for ax in fig.axes)
    assert [ax.get_title() for ax in fig.axes] == ["TransE", "RotatE"]
    first = fig.axes[0]
    assert [len(line.get_xdata()) for line in first.get_lines()] == [2, 3, 2]  # no-DS stops at 2; the switch line
    assert list(first.get_lines()[2].get_xdata()) == [1.5, 1.5]
    plain = curves_figure(panels)
    assert plain._suptitle is None  # the panels' titles never become the figure's
    assert study.curves_figure is curves_figure and study.curves_summary(panels).index.tolist() == ["TransE", "RotatE"]
    assert study.ds_verdict is ds_verdict  # notebook 06 imports only the facade
