"""Reading views of the saved tables: the ``.md`` and ``.tex`` show what a reader compares, the ``.csv`` keeps all.

A :class:`View` is one table's reading: its display columns in order (:func:`vs_paper` spells the
``<m>``, ``<m> paper``, ``<m> Δ`` triple of a measured-vs-paper table; a column the frame lacks is
skipped, ``source`` is always kept for :func:`kgdistill.study.outputs.source_note`), its decimals
(:data:`READING_PRECISION`; counts stay integers, :attr:`View.integers` adds rates such as
``queries/s``), the ``<m> ±`` spread written into the ``<m>`` cell (``0.271 ± 0.004``), the column
that tells whether a row is measured (a table without one is printed as one line,
:func:`empty_line`) and note lines read off the numbers (:class:`Same`: two rows that agree, and
why). :data:`VIEWS` gives each saved table's view by its file name, :func:`view_for` looks one up
(a name it does not list keeps every column at 4 decimals, as before); ``save_table`` applies it.

Every measured-vs-paper table reads the same way: ``converged``, then MRR and H@10, each beside
its published value and the difference ``Δ`` (measured − paper), in that order. Torch-free.
"""
from __future__ import annotations

import fnmatch
import math
import numbers
from dataclasses import dataclass, field

import pandas as pd

from ..core.metrics import METRICS
from .tables import formatted

#: decimals of a reading view's metrics (the ``.csv`` keeps full precision; nbval's printed text keeps 4)
READING_PRECISION = 3
#: two rows closer than this in every metric are "the same" for :class:`Same` (the curves figure's rule)
SAME = 5e-4
#: the metrics every measured-vs-paper view shows, in this order
READ_METRICS = ("MRR", "H@10")


def vs_paper(*metrics: str) -> tuple[str, ...]:
    """``("MRR", "MRR paper", "MRR Δ", "H@10", ...)``: each metric beside its published value and Δ."""
    return tuple(column for m in metrics for column in (m, f"{m} paper", f"{m} Δ"))


def _finite(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isnan(value)


@dataclass(frozen=True)
class Same:
    """A note under a table whose rows ``rows`` agree within ``tolerance`` on every measured metric
    (those of :data:`kgdistill.core.metrics.METRICS` the frame has), saying so and ``why``."""

    rows: tuple[str, str]
    why: str
    tolerance: float = SAME

    def line(self, frame: pd.DataFrame) -> str:
        """The note, or ``""`` when a row is missing, unmeasured, or the two differ."""
        first, second = self.rows
        if first not in frame.index or second not in frame.index:
            return ""
        metrics = [m for m in METRICS if m in frame.columns]
        pairs = [(frame.at[first, m], frame.at[second, m]) for m in metrics]
        if not pairs or not all(_finite(a) and _finite(b) and abs(a - b) < self.tolerance for a, b in pairs):
            return ""
        shown = ", ".join(f"{m} {a:.4f} / {b:.4f}" for m, (a, b) in zip(metrics, pairs))
        return (f"{first} and {second} agree within {self.tolerance:g} in every metric ({shown}): "
                f"{self.why}")


@dataclass(frozen=True)
class View:
    """How a saved table reads (see the module docstring). ``columns`` empty: every column."""

    columns: tuple[str, ...] = ()
    precision: int = READING_PRECISION
    merge_spread: bool = True
    measured: str | None = None
    integers: tuple[str, ...] = ()
    same: tuple[Same, ...] = field(default_factory=tuple)

    def selected(self, frame: pd.DataFrame) -> list:
        """The frame's columns this view shows, in the view's order: ``source`` kept (for its
        footnote) and ``converged`` always (its † marks stay visible), first when the view omits it."""
        if not self.columns:
            return list(frame.columns)
        chosen = [c for c in self.columns if c in frame.columns]
        kept = [c for c in ("source", "converged") if c in frame.columns and c not in chosen]
        return kept + chosen

    def is_empty(self, frame: pd.DataFrame) -> bool:
        """Whether the table has no measured row: no row at all, or no number in :attr:`measured`."""
        if frame.empty:
            return True
        if self.measured is None or self.measured not in frame.columns:
            return False
        return not any(_finite(v) for v in frame[self.measured])

    def text(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The shown columns as strings: :attr:`precision` decimals, Δ signed, counts and
        :attr:`integers` as integers, ``<m> ±`` written into the ``<m>`` cell (``0.271 ± 0.004``)."""
        columns = self.selected(frame)
        out = formatted(frame[columns], self.precision)
        for column in self.integers:
            if column in out.columns:
                out[column] = [f"{x:,.0f}" if _finite(x) else "-" for x in frame[column]]
        if self.merge_spread:
            for column in columns:
                spread = f"{column} ±"
                if spread in frame.columns and spread not in columns:
                    sd = formatted(frame[[spread]], self.precision)[spread]
                    out[column] = [f"{m} ± {s}" if m != "-" and s != "-" else m for m, s in zip(out[column], sd)]
        return out

    def notes(self, frame: pd.DataFrame) -> list[str]:
        """The note lines this view reads off ``frame`` (:class:`Same`), those that apply."""
        return [line for line in (s.line(frame) for s in self.same) if line]


#: what a table without a view shows: every column at 4 decimals, spreads in their own columns
PLAIN = View(precision=4, merge_spread=False)
#: MetaSD Tables 1 and 4: the sizes are what the paper compares
_SIZED = View(("converged", *vs_paper(*READ_METRICS), "size", "size paper"), measured="MRR")
#: w/o P is DML (w/o P&M) plus the meta step: say so where their numbers agree
WO_P = Same(("w/o P", "w/o P&M"),
            "w/o P is w/o P&M (DML: a separate student, mutual distillation) plus MetaSD's meta step, whose update "
            "of the source is scaled by meta_lr (μ = 1e-4, the paper's value): too small a step to move these "
            "numbers.")
_DISTILE = View(("paper dim", "converged", "seeds", *vs_paper(*READ_METRICS)), measured="MRR")

#: each saved table's view, by file name (``fnmatch`` pattern; the first match wins)
VIEWS: tuple[tuple[str, View], ...] = (
    ("table1_*", _SIZED),
    ("table2_*", View(("converged", *vs_paper(*READ_METRICS)), measured="MRR")),
    ("table3_*", View(("converged", *vs_paper(*READ_METRICS), "size", "dim"), measured="MRR", same=(WO_P,))),
    ("table4_*", _SIZED),
    ("distile_table3", _DISTILE),
    ("distile_table4", _DISTILE),
    ("distile_table6", _DISTILE),
    ("distile_table5", View(("paper dim", "params", "seconds", "seconds min", "seconds max", "speedup",
                             "seconds paper (GPU)", "speedup paper"))),
    ("official_code_selection_*", View(("rule", "converged", "epoch", "valid MRR", "MRR", "H@10", "optimism"),
                                       measured="MRR")),
    ("official_code_*", View(("eval", "rate", "selected on", "converged", "MRR", "H@10", "MRR paper", "H@10 paper",
                              "parameters read", "read / source", "cell"), measured="MRR")),
    ("equal_size_comparison", View(("best alternative (valid)", "converged", "test MRR Δ", "95% interval", "seeds",
                                    "verdict"), measured="test MRR Δ")),
    ("equal_size_*", View(("basis", "converged", "size", "bytes", "MRR", "H@10", "valid MRR", "MRR official-dense"),
                          measured="MRR")),
    ("figure1_points", View()),
    ("long_tail_buckets_*", View()),
    ("footprint", View(integers=("queries/s",))),
)


def view_for(name: str) -> View:
    """The view of the saved table ``name`` (:data:`VIEWS`), else :data:`PLAIN`."""
    return next((view for pattern, view in VIEWS if fnmatch.fnmatchcase(name, pattern)), PLAIN)


def empty_line(frame: pd.DataFrame, view: View) -> str:
    """The one line a table without a measured row prints instead of its rows of dashes."""
    if frame.empty:
        return "No measured row yet: no run of this table has a record (the .csv has its columns)."
    column = f" {view.measured}" if view.measured else ""
    return (f"No measured row yet: none of its {len(frame)} rows has a measured{column} (their runs are not "
            "trained yet; the .csv lists every row).")


def reading_view(frame: pd.DataFrame, name: str, view: View | None = None
                 ) -> tuple[pd.DataFrame | None, list[str]]:
    """``(the shown strings, note lines)`` of the saved table ``name`` under ``view`` (default
    :func:`view_for`); ``(None, [the one line])`` when it has no measured row."""
    view = view or view_for(name)
    if view.is_empty(frame):
        return None, [empty_line(frame, view)]
    return view.text(frame), view.notes(frame)

