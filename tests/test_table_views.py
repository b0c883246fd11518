"""Tables for reading, data for machines (issue 26): the saved ``.md``/``.tex`` show a table's reading
view (:mod:`kgdistill.study.views`: display columns, 3 decimals, integer counts, Δ beside every
published value, one line for a table without a measured row, notes read off the numbers), the
``.csv`` keeps every column."""
from __future__ import annotations

import math
import re

import pandas as pd
import pytest

from kgdistill.study.distile.rows import compare
from kgdistill.study.outputs import save_table
from kgdistill.study.tables import BUDGET_NOTE, DAGGER
from kgdistill.study.views import PLAIN, VIEWS, View, empty_line, view_for, vs_paper

nan = math.nan
METRIC = re.compile(r"^[+-]?\d\.(\d+)$")


def table1_like() -> pd.DataFrame:
    """What ``results_table`` gives for Table 1: a quoted row, a measured one over two seeds, an added one."""
    metrics = {}
    for m, value, paper in (("MRR", 0.27044, 0.333), ("H@1", 0.1897, 0.247), ("H@3", 0.2951, 0.36),
                            ("H@10", 0.43196, 0.508)):
        metrics.update({m: [nan, value, 0.1433], f"{m} ±": [nan, 0.0012, nan], f"{m} paper": [0.313, paper, nan],
                        f"{m} Δ": [nan, value - paper, nan]})
    return pd.DataFrame(
        {"source": ["quoted (LibKGE, via paper)", "measured", "measured"], "converged": ["-", f"1/2 {DAGGER}", "2/2"],
         **metrics, "size": [nan, 1_891_584.0, 177_336.0], "size paper": [nan, 50_000_000.0, nan],
         "dim": [nan, 64.0, 6.0], "dim paper": [nan, 2000.0, nan], "seeds": [0, 2, 2]},
        index=["TransE", "CP", "DistilE (added; not in MetaSD paper)"])


def md_table(path) -> tuple[list[str], list[list[str]], str]:
    """(header cells, body rows' cells, the text after the table) of a saved ``.md``."""
    text = path.read_text()
    lines = [line for line in text.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    return cells[0], cells[2:], text[text.rindex("|") + 1:]


@pytest.fixture
def root(tmp_path):
    return tmp_path / "out"


def test_table1_md_shows_the_reading_view_and_the_csv_keeps_every_column(root):
    frame = table1_like()
    paths = save_table(frame, "table1_FB15k-237", "demo", caption="Table 1\n\nstamp", root=root)
    header, rows, after = md_table(paths["md"])
    shown = ["converged", *vs_paper("MRR", "H@10"), "size", "size paper"]
    assert header[1:] == shown and len(header) - 1 <= len(view_for("table1_x").columns)
    assert "MRR Δ" in header and "H@10 Δ" in header  # a Δ beside every published value
    cp = dict(zip(header, rows[1]))
    assert cp["MRR"] == "0.270 ± 0.001" and cp["MRR paper"] == "0.333" and cp["MRR Δ"] == "-0.063"
    assert cp["size"] == "1,891,584" and cp["size paper"] == "50,000,000"  # counts as integers
    for row in rows:
        for name, cell in zip(header, row):
            value = cell.split(" ± ")[0]
            if name.startswith(("MRR", "H@10")) and value != "-":
                assert len(METRIC.match(value).group(1)) == 3, (name, cell)  # 3 decimals
    assert rows[0][0] == "TransE *" and f"1/2 {DAGGER}" in rows[1]  # the quoted row's mark, the budget mark
    assert after.rstrip().endswith(BUDGET_NOTE) and "TransE: quoted (LibKGE, via paper)" in after
    back = pd.read_csv(paths["csv"], index_col=0)
    assert list(back.columns) == list(frame.columns)  # data for machines: every column
    assert back.loc["CP", "size"] == 1_891_584 and back.loc["CP", "MRR"] == pytest.approx(0.27044, abs=1e-12)
    tex = paths["tex"].read_text()
    assert "H@1 " not in tex and "0.270 $\\pm$ 0.001" in tex and "$-$0.063" in tex


def test_every_measured_vs_paper_view_reads_mrr_then_h10_each_with_paper_and_delta():
    for pattern in ("table1_*", "table2_*", "table3_*", "table4_*", "distile_table3", "distile_table4",
                    "distile_table6"):
        columns = [c for c in dict(VIEWS)[pattern].columns if c.startswith(("MRR", "H@"))]
        assert columns == list(vs_paper("MRR", "H@10")), pattern


def test_the_distile_table_has_the_metasd_metric_order_and_a_delta_column(root):
    rows = [{"model": "TransE", "dim": d, "method": method, "MRR": mrr, "H@1": mrr / 4, "H@3": mrr / 2,
             "H@10": 2 * mrr, "run": "r", "converged": "yes"}
            for d, method, mrr in ((8, "Tea.", 0.3), (4, "DS", 0.2))]
    paper = {"64/Tea.": {"TransE": {"MRR": 0.194, "H@1": 0.037, "H@3": 0.331, "H@10": 0.481}}}
    frame = compare(rows, paper, student_dims=[4], teacher_dim=8)
    metric_columns = [c for c in frame.columns if c.startswith(("MRR", "H@"))]
    assert metric_columns == [c for m in ("MRR", "H@1", "H@3", "H@10") for c in (m, f"{m} paper", f"{m} Δ")]
    assert frame.loc[("TransE", 8, "Tea."), "MRR Δ"] == pytest.approx(0.3 - 0.194)
    paths = save_table(frame, "distile_table3", "demo", root=root)
    header, body, _ = md_table(paths["md"])
    assert header == ["model / dim / method", "paper dim", "converged", *vs_paper("MRR", "H@10")]
    assert body[0][header.index("MRR Δ")] == "+0.106" and body[1][header.index("MRR Δ")] == "-"
    assert list(pd.read_csv(paths["csv"], index_col=[0, 1, 2]).columns) == list(frame.columns)


def test_a_table_without_a_measured_row_is_one_line(root):
    official = pd.DataFrame({"eval": ["pruned", "as published"], "MRR": [nan, nan], "MRR paper": [nan, 0.491],
                             "cell": ["run not trained yet", "published"]}, index=["paper equations", "published"])
    paths = save_table(official, "official_code_WN18RR", "demo", caption="Official\n\nstamp", root=root)
    md = paths["md"].read_text()
    assert "|" not in md and md.count("\n") == 5  # caption, stamp, one line
    assert md.splitlines()[-1] == empty_line(official, view_for("official_code_WN18RR"))
    assert md.splitlines()[-1].startswith("No measured row yet: none of its 2 rows")
    tex = paths["tex"].read_text()
    assert "tabular" not in tex and "\\caption{Official}" in tex and "No measured row yet" in tex
    assert list(pd.read_csv(paths["csv"], index_col=0).columns) == list(official.columns)
    empty = official.iloc[:0]
    md = save_table(empty, "official_code_selection_WN18RR", "demo", root=root)["md"].read_text()
    assert md == empty_line(empty, View()) + "\n"


def test_table3_says_under_it_why_two_rows_agree(root):
    base = {"converged": ["no †"] * 3, "MRR": [0.1985, 0.22731, 0.22734], "H@1": [0.13, 0.1596, 0.1597],
            "H@10": [0.33, 0.3594, 0.3594], "size": [192_192.0, 180_180.0, 180_180.0]}
    frame = pd.DataFrame(base, index=["MetaSD", "w/o P", "w/o P&M"])
    md = save_table(frame, "table3_FB15k-237", "demo", root=root)["md"].read_text()
    note = next(line for line in md.splitlines() if line.startswith("w/o P and w/o P&M agree"))
    assert "MRR 0.2273 / 0.2273" in note and "meta step" in note and md.rstrip().endswith(BUDGET_NOTE)
    differ = frame.assign(MRR=[0.1985, 0.2273, 0.2400])
    assert "agree" not in save_table(differ, "table3_FB15k-237", "demo", root=root)["md"].read_text()


def test_views_by_name_counts_rates_and_tables_without_a_view(root):
    assert view_for("official_code_selection_Kinship") is dict(VIEWS)["official_code_selection_*"]
    assert view_for("official_code_Kinship") is dict(VIEWS)["official_code_*"]
    assert view_for("equal_size_comparison") is not view_for("equal_size_Kinship_r10")
    assert view_for("pruning_vs_rank_UMLS") is PLAIN and view_for("table1x") is PLAIN
    footprint = pd.DataFrame({"parameters": [1_921_920], "test MRR": [0.2685], "queries/s": [7717.6291]},
                             index=["source (dense)"])
    _, rows, _ = md_table(save_table(footprint, "footprint", "demo", root=root)["md"])
    assert rows[0][1:] == ["1,921,920", "0.269", "7,718"]
    plain = save_table(table1_like(), "other", "demo", root=root)["md"]
    header, rows, _ = md_table(plain)
    assert header[1:] == [c for c in table1_like().columns if c != "source"] and "0.2704" in rows[1]


def test_a_view_keeps_the_convergence_marks_it_does_not_list(root):
    frame = pd.DataFrame({"MRR": [0.2, 0.3], "converged": ["yes", f"no {DAGGER}"]}, index=["a", "b"])
    view = View(("MRR",), measured="MRR")
    assert view.selected(frame) == ["converged", "MRR"]
    md = save_table(frame, "anything", "demo", root=root, view=view)["md"].read_text()
    assert f"no {DAGGER}" in md and md.rstrip().endswith(BUDGET_NOTE)
