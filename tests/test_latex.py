"""Saved LaTeX tables compile: booktabs rules, ``$\\pm$``/``$\\Delta$`` instead of raw Unicode, no
blank line inside ``\\caption{}``, right-aligned numeric columns, the ``source`` column moved to a
footnote. The source is checked everywhere; with a TeX engine installed it is also compiled."""
from __future__ import annotations

import math
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from kgdistill.study.latex import PACKAGES, escape, latex_table
from kgdistill.study.outputs import save_table

STAMP = ("profile demo | device cpu (x86_64, 1 threads) | torch 2.13.0+cpu | 3 commits, latest abc | "
         "2026-01-01 00:00 UTC")


def results_like() -> pd.DataFrame:
    """What notebook 01 saves: quoted rows, ± and Δ columns, a budget mark, sizes, an & in a label."""
    nan = math.nan
    return pd.DataFrame(
        {
            "source": ["quoted (LibKGE, via paper)", "measured", "measured"],
            "converged": ["-", "no †", "2/2"],
            "MRR": [nan, 0.2704, 0.1985], "MRR ±": [nan, 0.0012, nan], "MRR paper": [0.313, 0.333, nan],
            "MRR Δ": [nan, -0.0626, nan], "size": [nan, 1_891_584, 192_192], "size paper": [nan, 50_000_000, nan],
            "dim": [nan, 64, 64], "seeds": [0, 2, 2], "H@1": [nan, 0.19, 0.13], "H@1 Δ": [nan, 0.01, nan],
        },
        index=["TransE", "w/o P&M", "DistilE (added; not in MetaSD paper)"],
    )


@pytest.fixture
def saved(tmp_path) -> Path:
    caption = "Table 1 (MetaSD): link prediction, measured vs published, FB15k-237\n\n" + STAMP
    return save_table(results_like(), "table1_demo", "demo", caption=caption, note="a note_with_underscore",
                      root=tmp_path)["tex"]


def test_the_latex_source_is_ascii_with_booktabs_math_symbols_and_a_one_line_caption(saved):
    tex = saved.read_text()
    assert tex.isascii(), [c for c in tex if not c.isascii()]
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    # Table 1's reading view: the spread in the metric's cell, 3 decimals (kgdistill.study.views)
    assert "0.270 $\\pm$ 0.001" in tex and "MRR $\\Delta$" in tex and "$-$0.063" in tex
    caption = re.search(r"\\caption\{(.*)\}\n", tex).group(1)
    assert caption == "Table 1 (MetaSD): link prediction, measured vs published, FB15k-237"
    assert "\n\n" not in tex  # no paragraph break anywhere (a blank line in \caption{} does not compile)
    assert "device cpu (x86\\_64, 1 threads) $|$ torch" in tex  # the stamp below the table, escaped
    assert "a note\\_with\\_underscore" in tex and "w/o P\\&M" in tex


def test_numeric_columns_are_right_aligned_and_the_source_column_is_a_footnote(saved):
    tex = saved.read_text()
    spec = re.search(r"\\begin\{tabular\}\{(\w+)\}", tex).group(1)
    header = next(line for line in tex.splitlines() if line.startswith(" & "))
    columns = [c.strip() for c in header.removesuffix("\\\\").split("&")][1:]
    assert "source" not in columns and columns[0] == "converged"
    assert spec == "l" + "l" + "r" * (len(columns) - 1)  # labels and 'converged' left, every number right
    assert "TransE *" in tex and "* TransE: quoted (LibKGE, via paper), not trained here." in tex


def test_escape_spells_specials_and_symbols_in_ascii():
    assert escape("a_b & 50% #1 {x} ~ ^") == "a\\_b \\& 50\\% \\#1 \\{x\\} \\textasciitilde{} \\textasciicircum{}"
    assert escape("Δ ± ≥ γ") == "$\\Delta$ $\\pm$ $\\geq$ $\\gamma$"
    assert escape("unknown ☃") == "unknown ?"
    narrow = latex_table(pd.DataFrame({"MRR": ["0.1"]}, index=["a"]))
    assert "resizebox" not in narrow and "\\caption" not in narrow  # a narrow table is not scaled


@pytest.mark.skipif(shutil.which("pdflatex") is None,
                    reason="no TeX engine (pdflatex) installed; the source checks above still run")
def test_a_saved_table_compiles_with_pdflatex(saved, tmp_path):
    document = tmp_path / "doc.tex"
    document.write_text(
        "\\documentclass{article}\n\\usepackage{" + ",".join(PACKAGES) + "}\n\\begin{document}\n"
        f"\\input{{{saved.as_posix()}}}\n\\end{{document}}\n"
    )
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", document.name], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    errors = [line for line in done.stdout.splitlines() if line.startswith("!")]
    assert done.returncode == 0 and not errors, errors or done.stdout[-2000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 1000
