"""A formatted table (strings, :func:`kgdistill.study.tables.formatted`) as LaTeX that compiles.

:func:`latex_table` writes a ``table`` float with booktabs rules, the row labels left-aligned and
numeric columns right-aligned, ``±``/``Δ``/``†`` and other symbols as LaTeX commands (the output
is ASCII), the caption's first paragraph as ``\\caption`` and every further paragraph (the
provenance stamp) and note in a small paragraph under the table. A table wider than
:data:`WIDE_COLUMNS` columns is scaled to the line width. A document that ``\\input``s it needs
:data:`PACKAGES` (``\\usepackage{booktabs,graphicx}``); no other package.
"""
from __future__ import annotations

import re
from typing import Sequence

import pandas as pd

#: what a document needs in its preamble to ``\input`` a table
PACKAGES = ("booktabs", "graphicx")
#: tables with more data columns than this are scaled to ``\linewidth``
WIDE_COLUMNS = 8

#: characters that LaTeX reads as commands, and their text-mode spelling
SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "|": r"$|$", "<": r"$<$", ">": r"$>$",  # as text, OT1 would print an em dash, ¡, ¿
}
#: non-ASCII characters the study's tables use, in any LaTeX engine's default setup
SYMBOLS = {
    "±": r"$\pm$", "Δ": r"$\Delta$", "†": r"\textsuperscript{\dag}", "−": "$-$", "–": "--", "—": "---",
    "≥": r"$\geq$", "≤": r"$\leq$", "×": r"$\times$", "·": r"$\cdot$", "→": r"$\rightarrow$", "…": r"\ldots{}",
    "γ": r"$\gamma$", "θ": r"$\theta$", "λ": r"$\lambda$", "μ": r"$\mu$", "α": r"$\alpha$", "β": r"$\beta$",
    "ε": r"$\varepsilon$", "τ": r"$\tau$", "‖": r"$\|$", "é": r"\'e", "ö": r"\"o", "ü": r"\"u",
}
#: a formatted number: ``0.3130``, ``-0.0626``, ``+0.0670``, ``1,891,584``, ``1.5e-3``, a mean and its
#: spread ``0.271 ± 0.004``, or ``-`` (missing)
_PLAIN = r"[+-]?(\d{1,3}(,\d{3})+|\d+)(\.\d+)?([eE][+-]?\d+)?"
NUMBER = re.compile(rf"{_PLAIN}( ± {_PLAIN})?|-")


def escape(text: object) -> str:
    """``text`` as LaTeX text-mode source: specials escaped, known symbols as commands, any
    other non-ASCII character replaced by ``?`` (so the source always compiles)."""
    out = []
    for char in str(text):
        if char in SPECIAL:
            out.append(SPECIAL[char])
        elif char in SYMBOLS:
            out.append(SYMBOLS[char])
        elif ord(char) < 128:
            out.append(char)
        else:
            out.append("?")
    return "".join(out)


def is_number(cell: object) -> bool:
    """Whether a formatted cell is a number or the missing mark ``-``."""
    return bool(NUMBER.fullmatch(str(cell).strip()))


def text_cell(cell: object) -> str:
    """A text cell in LaTeX (:func:`escape`), the missing mark ``-`` as ``--``."""
    return "--" if str(cell).strip() == "-" else escape(cell)


def number_cell(cell: object) -> str:
    """A formatted number in LaTeX: signs in math mode (``$-$0.0626``), ``±`` as ``$\\pm$``, missing as ``--``."""
    text = str(cell).strip()
    if text == "-":
        return "--"
    if text[:1] in "+-":
        text = f"${text[0]}${text[1:]}"
    return text.replace("±", SYMBOLS["±"])


def column_spec(frame: pd.DataFrame) -> str:
    """``l`` for the row labels, then ``r`` for every column whose cells are all numbers, else ``l``."""
    numeric = [all(is_number(x) for x in frame[c]) and len(frame) > 0 for c in frame.columns]
    return "l" + "".join("r" if n else "l" for n in numeric)


def latex_table(frame: pd.DataFrame, caption: str = "", label: str = "", notes: Sequence[str] = ()) -> str:
    """The LaTeX source of ``frame`` (cells already formatted as strings; see the module docstring).

    ``caption``: its first paragraph (up to a blank line) is the ``\\caption``; later paragraphs
    (e.g. the provenance stamp) go, with ``notes``, in a ``\\footnotesize`` paragraph under the
    tabular - never a blank line inside ``\\caption{}``.
    """
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", caption or "") if p.strip()]
    below = paragraphs[1:] + [" ".join(str(n).split()) for n in notes if str(n).strip()]
    numeric = [c == "r" for c in column_spec(frame)[1:]]
    header = [escape(frame.index.name or "")] + [escape(c) for c in frame.columns]
    lines = [
        "% needs \\usepackage{" + ",".join(PACKAGES) + "}",
        "\\begin{table}[htbp]",
        "\\centering",
    ]
    if paragraphs:
        lines.append("\\caption{" + escape(paragraphs[0]) + "}")
    if label:
        lines.append("\\label{" + re.sub(r"[^A-Za-z0-9:._-]", "-", label) + "}")
    wide = len(frame.columns) > WIDE_COLUMNS
    if wide:
        lines.append("\\resizebox{\\linewidth}{!}{%")
    lines += ["\\begin{tabular}{" + column_spec(frame) + "}", "\\toprule", " & ".join(header) + " \\\\", "\\midrule"]
    for index, row in frame.iterrows():
        cells = [escape(index)] + [number_cell(x) if n else text_cell(x) for x, n in zip(row, numeric)]
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}" + ("}" if wide else "")]
    if below:
        lines.append("\\par\\smallskip{\\raggedright\\footnotesize " + " \\par ".join(escape(b) for b in below)
                     + "\\par}")
    lines.append("\\end{table}")
    return "\n".join(lines) + "\n"


def latex_note(caption: str = "", label: str = "", lines: Sequence[str] = ()) -> str:
    """A ``table`` float without a tabular, for a table with no measured row: the caption as in
    :func:`latex_table` (later paragraphs below), then ``lines`` (the one line saying so, notes)."""
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", caption or "") if p.strip()]
    body = [" ".join(str(n).split()) for n in lines if str(n).strip()] + paragraphs[1:]
    out = ["% needs \\usepackage{" + ",".join(PACKAGES) + "}", "\\begin{table}[htbp]", "\\centering"]
    if paragraphs:
        out.append("\\caption{" + escape(paragraphs[0]) + "}")
    if label:
        out.append("\\label{" + re.sub(r"[^A-Za-z0-9:._-]", "-", label) + "}")
    if body:
        out.append("{\\raggedright\\footnotesize " + " \\par ".join(escape(b) for b in body) + "\\par}")
    out.append("\\end{table}")
    return "\n".join(out) + "\n"
