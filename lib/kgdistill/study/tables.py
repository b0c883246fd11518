"""Records -> DataFrames: every table the notebooks print, and the fixed-precision text nbval compares.

Owns reading a table row's record (:func:`record_for`, :func:`model_name`, :func:`model_dim`),
the results tables beside the published numbers (:func:`results_table`: mean over seeds, ``±``
std, ``paper``, ``Δ``), the runs frame, validation curves, relation-frequency buckets, Figure 1's
size/accuracy points, the long-tail split against the paper (:func:`long_tail_comparison`) and
the text of a frame (:func:`formatted`, :func:`format_table`). Imports no torch: it reads
records (JSON mappings) and plain numbers only.

Unconverged numbers are marked: a run that stopped at its epoch budget (``max_epochs``) instead of
by the convergence rule (``patience`` on validation MRR; records older than the rule state no
``stop_reason`` and count as budget hits) makes its row's ``converged`` column end in a dagger
(:data:`DAGGER`, :func:`convergence_mark`), and the text of a marked table ends with
:data:`BUDGET_NOTE` (:func:`budget_note`, also the footnote of saved tables).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import pandas as pd

if TYPE_CHECKING:  # only for annotations; the profile module builds RunConfigs
    from .profile import NamedRunSpec, RunSpec

from ..core.metrics import METRICS

#: the mark of a row (or column) whose numbers come from a run that hit its epoch budget
DAGGER = "†"
#: the footnote of a table with marked rows (printed by :func:`format_table`, saved by ``save_table``)
BUDGET_NOTE = (
    f"{DAGGER} not converged: a run behind this row stopped at its epoch budget (max_epochs) before the "
    "convergence rule (patience on validation MRR) was met; read its numbers as an unfinished training, not a result."
)


# --- convergence marks -----------------------------------------------------------------------------
def budget_hit(record: dict) -> bool:
    """Whether a run stopped at its epoch budget rather than by the convergence rule (a record
    without ``stop_reason``, written before the rule existed, trained its whole budget)."""
    return record.get("stop_reason", "budget") != "plateau"


def convergence_mark(records: Sequence[dict]) -> str:
    """How many of ``records`` converged, marked with :data:`DAGGER` when one hit its budget:
    one record ``"yes"`` / ``"no †"``, several ``"2/2"`` / ``"1/2 †"``; ``"-"`` for none."""
    records = list(records)
    if not records:
        return "-"
    hit = sum(budget_hit(r) for r in records)
    text = ("no" if hit else "yes") if len(records) == 1 else f"{len(records) - hit}/{len(records)}"
    return f"{text} {DAGGER}" if hit else text


def marked_label(label: str, records: Sequence[dict]) -> str:
    """``label`` followed by :data:`DAGGER` when one of ``records`` hit its budget (for a label
    that names a column, e.g. a row of Table 2 in the per-bucket frame)."""
    return f"{label} {DAGGER}" if any(budget_hit(r) for r in records) else str(label)


def budget_note(frame: pd.DataFrame) -> str:
    """:data:`BUDGET_NOTE` when a label or a text cell of ``frame`` carries :data:`DAGGER`, else ``""``."""
    labels = [*frame.index.to_flat_index(), *frame.columns.to_flat_index()]
    cells = [x for column in frame.columns if not pd.api.types.is_numeric_dtype(frame[column]) for x in frame[column]]
    marked = any(DAGGER in str(x) for x in (*labels, *cells))
    return BUDGET_NOTE if marked else ""


# --- reading a row's record ------------------------------------------------------------------------
def record_for(spec: RunSpec | NamedRunSpec, records: dict[str, dict]) -> dict:
    """The record of a spec's run in ``records`` (``{run name: record}``)."""
    name = spec.run_name
    if name not in records:
        raise KeyError(f"no record for run {name} (row {spec.row!r}); pass its spec to run_all first")
    return records[name]


def model_name(spec: RunSpec | NamedRunSpec, record: dict) -> str:
    """The model a row reads: the spec's ``model``, else the record's selected model."""
    return spec.model or record["selected_model"]


def model_dim(record: dict, model: str) -> int:
    """Rank / dimension of ``model`` in a record (:func:`kgdistill.core.records.record_dims`;
    records written before records stored their ``dims`` are read by it too)."""
    from ..core.records import record_dims  # here, not above: importing this module stays torch-free

    return int(record_dims(record)[model])


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    values = [float(v) for v in values]
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


# --- tables beside the paper ---------------------------------------------------------------------------
def results_table(
    specs: Sequence[RunSpec],
    records: dict[str, dict],
    paper: dict | None = None,
    subset: str = "all",
    metrics: Sequence[str] = METRICS,
    size: bool = True,
    dim: bool = True,
    quoted: dict | None = None,
) -> pd.DataFrame:
    """Measured metrics (mean over seeds, ``±`` std when more than one seed) beside the paper's.

    ``specs`` must share one paper dataset. ``paper`` maps row label -> published metrics (and
    ``size``/``dim``); ``quoted`` maps row labels that the paper quotes from elsewhere (e.g.
    TransE from LibKGE) to their source: they appear with the published numbers only.
    Columns: ``source``, ``converged`` (:func:`convergence_mark` of the row's runs), then per metric
    ``<m>`` (measured), ``<m> ±`` (std, several seeds only), ``<m> paper``, ``<m> Δ`` (measured −
    paper). ``size`` is the non-zero parameter count of the model read.
    """
    paper = paper or {}
    quoted = quoted or {}
    labels: list[str] = []
    for spec in specs:
        if spec.row not in labels:
            labels.append(spec.row)
    n_seeds = max((sum(1 for s in specs if s.row == label) for label in labels), default=1)
    rows = []
    for label in list(quoted) + labels:
        published_row = paper.get(label, {}) or {}
        group = [s for s in specs if s.row == label]
        row: dict = {"row": label}
        if label in quoted and not group:
            row["source"] = f"quoted ({quoted[label]}, via paper)"
        else:
            row["source"] = "measured"
        group_records = [record_for(spec, records) for spec in group]
        row["converged"] = convergence_mark(group_records)
        values: dict[str, list[float]] = {m: [] for m in metrics}
        sizes, dims = [], []
        for spec, record in zip(group, group_records):
            model = model_name(spec, record)
            result = record["test"][model][subset]
            for m in metrics:
                values[m].append(result[m])
            sizes.append(record["parameter_counts"][model]["nonzero"])
            dims.append(model_dim(record, model))
        for m in metrics:
            mean, std = _mean_std(values[m])
            row[m] = mean
            if n_seeds > 1:
                row[f"{m} ±"] = std
            ref = published_row.get(m)
            row[f"{m} paper"] = math.nan if ref is None else float(ref)
            row[f"{m} Δ"] = mean - float(ref) if ref is not None and values[m] else math.nan
        if size:
            row["size"] = _mean_std(sizes)[0] if sizes else math.nan
            ref = published_row.get("size")
            row["size paper"] = math.nan if ref is None else float(ref)
        if dim:
            row["dim"] = _mean_std(dims)[0] if dims else math.nan
            ref = published_row.get("dim")
            row["dim paper"] = math.nan if ref is None else float(ref)
        row["seeds"] = len(group)
        rows.append(row)
    frame = pd.DataFrame(rows).set_index("row")
    frame.index.name = None
    return frame


def stats_mismatches(stats: pd.DataFrame, expected: pd.DataFrame) -> pd.DataFrame:
    """Differences ``stats - expected`` on the entries ``expected`` lists (datasets in both, its
    columns), only the datasets where one differs; empty when everything matches."""
    compared = stats[expected.columns].loc[expected.index.intersection(stats.index)]
    difference = (compared - expected.loc[compared.index]).fillna(0)
    return difference[(difference != 0).any(axis=1)]


def long_tail_comparison(summary: dict, paper: dict) -> pd.DataFrame:
    """The long-tail split (``LongTailSplit.summary()``) against the paper's Sec. 4.2 counts
    (``published("metasd", "long_tail")``): rows ``measured``, ``paper``, ``Δ``."""
    columns = ["long_tail_relations", "share_of_relation_types", "share_of_train", "test_triples"]
    frame = pd.DataFrame(
        {
            "measured": {c: summary[c] for c in columns},
            "paper": {"long_tail_relations": paper["relations"],
                      "share_of_relation_types": paper["share_of_relation_types"],
                      "share_of_train": paper["share_of_train"], "test_triples": float("nan")},
        }
    ).T
    frame.loc["Δ"] = frame.loc["measured"] - frame.loc["paper"]
    frame.columns = ["relations", "share of relation types", "share of train", "triples (test)"]
    return frame


def thresholds_for_count(counts: Sequence[int], k: int) -> tuple[float, float]:
    """``(low, high)``: exactly ``k`` of the relations (train triples per relation, ``counts``)
    have fewer than ``t`` training triples for every ``low <= t <= high``."""
    counts = sorted(counts)
    if not 0 < k <= len(counts):
        raise ValueError(f"cannot select {k} of {len(counts)} relations")
    return counts[k - 1] + 1, counts[k] if k < len(counts) else float("inf")


def threshold_search(counts: Sequence[int], k: int, threshold: int) -> str:
    """Which thresholds give the paper's ``k`` long-tail relations, and how many the profile's
    ``threshold`` gives (below / at most), as two lines of text."""
    counts = sorted(counts)
    low, high = thresholds_for_count(counts, k)
    return (
        f"{k} relations have fewer than t training triples for {low} <= t <= {high}\n"
        f"relations with < {threshold} triples: {sum(c < threshold for c in counts)}; "
        f"with <= {threshold}: {sum(c <= threshold for c in counts)}"
    )


# --- text -------------------------------------------------------------------------------------------
def formatted(frame: pd.DataFrame, precision: int = 4) -> pd.DataFrame:
    """``frame`` as strings: metrics with ``precision`` decimals, differences (``Δ``) signed,
    counts (size, dim, seeds, triples, relations, bytes, integer columns) as integers with
    thousands separators, missing values as ``-``."""

    def number(x, decimals: int, signed: bool = False) -> str:
        if x is None or (isinstance(x, float) and math.isnan(x)):
            return "-"
        if not isinstance(x, (int, float)):
            return str(x)
        if decimals == 0:
            return f"{x:,.0f}"
        return f"{x:+.{decimals}f}" if signed else f"{x:.{decimals}f}"

    counts = ("size", "dim", "seeds", "triples", "relations", "bytes", "count", "parameters", "disk bytes",
              "memory bytes")
    out = pd.DataFrame(index=frame.index)
    for column in frame.columns:
        name = str(column)
        values = frame[column]
        if name.startswith(counts) or name in (
            "entities", "entities_in_train", "train", "valid", "test", "valid_unseen_entity", "test_unseen_entity",
        ) or pd.api.types.is_integer_dtype(values):
            out[column] = [number(x, 0) for x in values]
        elif name.endswith("Δ"):
            out[column] = [number(x, precision, signed=True) for x in values]
        elif pd.api.types.is_numeric_dtype(values):
            out[column] = [number(x, precision) for x in values]
        else:
            out[column] = ["-" if x is None or (isinstance(x, float) and math.isnan(x)) else str(x) for x in values]
    return out


def format_table(frame: pd.DataFrame, precision: int = 4) -> str:
    """Fixed-precision text of a table (see :func:`formatted`), followed by :func:`budget_note`
    when rows are marked as not converged. Deterministic: nbval compares it."""
    text = formatted(frame, precision)
    body = text.to_string(justify="right") if len(text.columns) else frame.to_string()
    note = budget_note(frame)
    return f"{body}\n{note}" if note else body


# --- per-bucket, per-size, per-run frames ---------------------------------------------------------------
def bucket_table(
    record: dict, model: str, relation_counts: dict[str, int], edges: Sequence[int], metrics: Sequence[str] = ("MRR",)
) -> pd.DataFrame:
    """Test metrics per relation-frequency bucket ``[edges[i], edges[i+1])`` (train triples per
    relation), each the triple-weighted mean of the per-relation metrics (exact: a relation's
    tail and head directions have the same number of triples)."""
    per_relation = record["test"][model]["per_relation"]
    rows = []
    bounds = list(edges) + [math.inf]
    for low, high in zip(bounds[:-1], bounds[1:]):
        chosen = [r for r in per_relation if low <= relation_counts[r] < high]
        triples = sum(per_relation[r]["triples"] for r in chosen)
        row = {"bucket": f"[{low}, {high})" if high != math.inf else f">= {low}", "relations": len(chosen),
               "triples": triples}
        for m in metrics:
            row[m] = (
                sum(per_relation[r][m] * per_relation[r]["triples"] for r in chosen) / triples if triples else math.nan
            )
        rows.append(row)
    return pd.DataFrame(rows).set_index("bucket")


def bucket_frame(
    specs: Sequence[RunSpec],
    records: dict[str, dict],
    relation_counts: dict[str, int],
    edges: Sequence[int],
    metric: str = "MRR",
) -> pd.DataFrame:
    """``metric`` per relation-frequency bucket (rows) for every table row (columns, labelled
    with :data:`DAGGER` when one of the row's runs hit its budget: :func:`marked_label`), mean
    over seeds, with each bucket's relation and test-triple counts."""
    columns: dict[str, list[pd.Series]] = {}
    used: dict[str, list[dict]] = {}
    base = None
    for spec in specs:
        record = record_for(spec, records)
        frame = bucket_table(record, model_name(spec, record), relation_counts, edges, (metric,))
        base = frame[["relations", "triples"]] if base is None else base
        columns.setdefault(spec.row, []).append(frame[metric])
        used.setdefault(spec.row, []).append(record)
    out = base.copy()
    for label, series in columns.items():
        out[marked_label(label, used[label])] = pd.concat(series, axis=1).mean(axis=1)
    return out


def size_accuracy_frame(specs: Sequence[RunSpec], records: dict[str, dict], metric: str = "MRR") -> pd.DataFrame:
    """One row per (recipe, rank) of Figure 1: non-zero size, dimension and test ``metric``
    (mean over seeds), and whether its runs converged (:func:`convergence_mark`)."""
    rows: dict[tuple, dict] = {}
    for spec in specs:
        record = record_for(spec, records)
        model = model_name(spec, record)
        key = (spec.recipe, spec.row)
        entry = rows.setdefault(key, {"recipe": spec.recipe, "row": spec.row, "size": [], "dim": [], metric: [],
                                      "records": []})
        entry["records"].append(record)
        entry["size"].append(record["parameter_counts"][model]["nonzero"])
        entry["dim"].append(model_dim(record, model))
        entry[metric].append(record["test"][model]["all"][metric])
    frame = pd.DataFrame(
        [
            {"row": e["row"], "recipe": e["recipe"], "size": _mean_std(e["size"])[0], "dim": _mean_std(e["dim"])[0],
             metric: _mean_std(e[metric])[0], "seeds": len(e[metric]), "converged": convergence_mark(e["records"])}
            for e in rows.values()
        ]
    ).set_index("row")
    frame.index.name = None
    return frame


def runs_frame(specs: Sequence[RunSpec], records: dict[str, dict]) -> pd.DataFrame:
    """One line per distinct (run, model) behind ``specs``: the model read, the selected epoch
    (chosen on the selected model's validation MRR), the epoch training stopped at and whether the
    convergence rule stopped it (:func:`convergence_mark`), this model's validation MRR at the
    selected epoch (deterministic), and the mean seconds per training epoch (timing)."""
    rows, seen = [], set()
    for spec in specs:
        record = record_for(spec, records)
        key = (spec.run_name, spec.model)
        if key in seen:
            continue
        seen.add(key)
        model = model_name(spec, record)
        selected = [h for h in record["history"] if h["epoch"] == record["selected_epoch"] and "valid" in h]
        valid = selected[0]["valid"][model]["MRR"] if selected else math.nan
        rows.append(
            {
                "row": spec.row,
                "dataset": spec.paper_dataset,
                "seed": spec.seed,
                "run": spec.run_name,
                "model": model,
                "selected_epoch": record["selected_epoch"],
                "max_epochs": record["config"]["max_epochs"],
                "stopped_epoch": record.get("stopped_epoch",
                                            record["history"][-1]["epoch"] if record["history"] else 0),
                "converged": convergence_mark([record]),
                "valid MRR": valid,
                "s/epoch": record["seconds_per_epoch"],
            }
        )
    return pd.DataFrame(rows).set_index("row").rename_axis(None)


def valid_curves(specs: Sequence[RunSpec], records: dict[str, dict], metric: str = "MRR") -> pd.DataFrame:
    """Validation ``metric`` by epoch (rows) of each spec's model (columns ``row`` or
    ``row/seed`` when there are several seeds), from the records' histories. ``attrs["budget_hit"]``
    says per column whether its run hit its epoch budget (:func:`budget_hit`; the figure marks it)."""
    seeds = {s.seed for s in specs}
    series, hit = {}, {}
    for spec in specs:
        record = record_for(spec, records)
        model = model_name(spec, record)
        points = {h["epoch"]: h["valid"][model][metric] for h in record["history"] if "valid" in h}
        column = spec.row if len(seeds) == 1 else f"{spec.row}/s{spec.seed}"
        series[column], hit[column] = pd.Series(points), budget_hit(record)
    frame = pd.DataFrame(series)
    frame.index.name = "epoch"
    frame.attrs["budget_hit"] = hit
    return frame
