"""Notebook 07: the paper-equations recipe against the official code's, evaluated and selected both ways.

The profile section ``official_code`` (see :data:`SCHEMA_NODE`, :func:`section`) names the
datasets, the recipes (table label -> profile recipe; typically ``MetaSD (paper equations)`` and
``MetaSD (official code)``, docs/official_code_audit.md), the student evaluation modes and rates,
and the test-set rule; optional ``small_graphs`` add a small benchmark trained with the same
recipes; ``train_missing: false`` makes the notebook read the records that exist instead of
training the missing runs. :func:`kgdistill.profile.official_specs` turns it into runs;
:func:`check_section` rejects, at profile load time, a mode or rate the recipes do not evaluate.

Each run's *cells* (:func:`run_cells`) are its student's test metrics and the non-zero
parameters the scorer reads, for every eval mode x eval rate x selection:

``validation``
    the validation-selected epoch (our rule): the record's ``student_eval`` rows, stored for every
    mode and rate at that epoch.
``test``
    the epoch the section's ``test_rule`` picks from the per-evaluation TEST metrics
    (:func:`kgdistill.selection.selection_summary`; default the official ``metasd.py`` rule: the
    last evaluation whose dense source's test MRR exceeds 0.3948). The history stores test metrics
    of the pruned student at the training rate only, so the other modes and rates exist at that
    epoch only when it is the validation-selected one; otherwise the cell is *not available*
    (never reconstructed). These rows measure the official rule's optimism; every other table of
    the study selects on validation only.

Imports nothing that imports :mod:`kgdistill.profile` (which imports this module).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from .evalmodes import EVAL_MODES
from .selection import OFFICIAL_TEST_MRR_THRESHOLD, RULES, selection_summary

SECTION = "official_code"
#: the section's keys for :data:`kgdistill.profile.SCHEMA` (``None``: any value; ``"RunConfig"``:
#: RunConfig fields)
SCHEMA_NODE: dict = {
    "datasets": None, "seeds": None, "recipes": {"*": None}, "eval_modes": None, "eval_rates": None,
    "test_rule": None, "threshold": None, "rule_model": None, "train_missing": None,
    "small_graphs": {"*": {"data": None, "base": None, "seeds": None, "config": "RunConfig"}},
}
DEFAULTS: dict = {"eval_modes": list(EVAL_MODES), "eval_rates": [0.9, 0.8], "test_rule": "official_last",
                  "threshold": OFFICIAL_TEST_MRR_THRESHOLD, "rule_model": "teacher", "small_graphs": {}}
#: rules that select on the test set (``validation`` is the other selection)
TEST_RULES = tuple(r for r in RULES if r != "validation")
RULE_MODELS = ("student", "teacher")
METRICS = ("MRR", "H@1", "H@3", "H@10")
SELECTIONS = ("validation", "test")


def section(profile: Mapping[str, Any]) -> dict:
    """The profile's ``official_code`` section with :data:`DEFAULTS` filled in."""
    block = profile.get(SECTION)
    if not block:
        raise KeyError(f"profile {profile.get('name')} has no section {SECTION!r}")
    return {**DEFAULTS, **block}


def check_section(profile_name: str, block: Mapping[str, Any], specs: Sequence) -> None:
    """Fail before any training when the section asks for something its runs cannot give.

    ``block``: :func:`section`; ``specs``: its runs (objects with ``.config``, ``.recipe``,
    ``.paper_dataset``). Raises ``ValueError`` naming ``official_code.<key>`` (or the config field)
    and the fix: a mode outside :data:`~kgdistill.evalmodes.EVAL_MODES` or not in a recipe's
    ``student_eval_modes``, a rate that is neither a recipe's training ``gamma`` nor one of its
    ``student_eval_gammas``, a recipe without a pruned student or without ``test_history``, an
    unknown test rule / rule model, a non-numeric threshold.
    """
    where = f"profile {profile_name}: {SECTION}"
    if not block.get("recipes"):
        raise ValueError(f"{where}.recipes: give at least one 'label: recipe' pair")
    for mode in block["eval_modes"]:
        if mode not in EVAL_MODES:
            raise ValueError(f"{where}.eval_modes: unknown student evaluation mode {mode!r}; choose from {list(EVAL_MODES)}")
    rates = [_rate(r, f"{where}.eval_rates") for r in block["eval_rates"]]
    if not rates or not block["eval_modes"]:
        raise ValueError(f"{where}: eval_modes and eval_rates need at least one entry each")
    if block["test_rule"] not in TEST_RULES:
        raise ValueError(f"{where}.test_rule: {block['test_rule']!r} is not a test-set rule; choose from {list(TEST_RULES)}")
    if block["rule_model"] not in RULE_MODELS:
        raise ValueError(f"{where}.rule_model: {block['rule_model']!r}; choose 'teacher' (the dense source, as the "
                         f"official code) or 'student'")
    threshold = block["threshold"]
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise ValueError(f"{where}.threshold: a test MRR is needed (the official code: {OFFICIAL_TEST_MRR_THRESHOLD}), got {threshold!r}")
    for spec in specs:
        config = spec.config  # builds and validates the RunConfig
        run = f"recipe {spec.recipe!r} on {spec.paper_dataset}"
        if config.switches["student"] != "pruned":
            raise ValueError(f"{where}.recipes: {run} has method {config.method!r}; the table evaluates a pruned "
                             f"student (metasd, metasd_wo_m)")
        if not config.test_history:
            raise ValueError(f"{where}: {run} needs config field 'test_history': true (test metrics at every "
                             f"evaluation, for the test-selected rows)")
        for mode in block["eval_modes"]:
            if mode not in config.student_eval_modes:
                raise ValueError(f"{where}.eval_modes: {run} does not evaluate mode {mode!r} (config field "
                                 f"'student_eval_modes' is {list(config.student_eval_modes)}); add it there or drop it here")
        available = [config.gamma, *config.student_eval_gammas]
        for rate in rates:
            if not any(math.isclose(rate, g) for g in available):
                raise ValueError(f"{where}.eval_rates: rate {rate} does not apply to {run}: it is neither its training "
                                 f"'gamma' ({config.gamma}) nor one of its 'student_eval_gammas' "
                                 f"{list(config.student_eval_gammas)}; add it to student_eval_gammas or drop it here")


def _rate(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
        raise ValueError(f"{where}: pruning rate {value!r} is outside (0, 1); give the fraction pruned, e.g. 0.8")
    return float(value)


# --- one run's cells ------------------------------------------------------------------------------
#: ``status`` of a cell: its numbers exist, or why not
MEASURED, NOT_STORED, NO_EPOCH, NOT_TRAINED = "measured", "not stored at that epoch", "rule selects no epoch", "run not trained yet"
SELECTION_LABELS = {"validation": "valid", "official_last": "test: official rule (last)",
                    "official_first": "test: official rule (first)", "final": "final epoch", "max_test": "test: max"}


def _cell(mode: str, rate: float, selection: str, epoch: int | None, metrics: Mapping | None, read: Mapping | None,
          status: str) -> dict:
    values = {m: float(metrics[m]) if metrics else math.nan for m in METRICS}
    return {"mode": mode, "rate": rate, "selection": selection, "epoch": epoch, **values,
            "read": int(read["total"]) if read else None, "dense": int(read["dense"]) if read else None, "status": status}


def run_cells(record: Mapping[str, Any], block: Mapping[str, Any]) -> list[dict]:
    """The cells of one pruned-student run: for each ``eval_modes`` x ``eval_rates`` x
    (``validation``, ``test``) a dict ``{mode, rate, selection, epoch, MRR, H@1, H@3, H@10, read,
    dense, status}`` (``read``: non-zero parameters the scorer reads, ``dense``: the source's P).

    Validation cells come from ``record["student_eval"]`` (the validation-selected epoch). The test
    cell takes the epoch of ``block["test_rule"]`` (:func:`~kgdistill.selection.selection_summary`
    on the history's test metrics, ``threshold``/``rule_model`` from the block): when that is the
    validation-selected epoch, the same numbers; at another epoch only the pruned student at the
    training rate is stored (the history), anything else is ``NOT_STORED``; a rule that selects
    nothing gives ``NO_EPOCH``. The pruned mode reads exactly the mask's ⌈(1−γ)·P⌉ positions at
    every epoch, so its read count is the validation cell's.
    """
    if "student_eval" not in record:
        raise ValueError(f"record {record.get('run_name')} has no 'student_eval': it was trained before pruned students "
                         f"stored their evaluation modes; retrain it")
    gamma = float(record["config"]["gamma"])
    stored = {(row["mode"], round(float(row["gamma"]), 9)): row for row in record["student_eval"]}
    summary = selection_summary(record, "student", block["threshold"], block["rule_model"])
    valid_epoch, pick = summary["validation"]["epoch"], summary[block["test_rule"]]
    cells = []
    for mode in block["eval_modes"]:
        for rate in map(float, block["eval_rates"]):
            row = stored.get((mode, round(rate, 9)))
            if row is None:
                raise ValueError(f"record {record.get('run_name')} has no student_eval row for mode {mode!r} at rate {rate}; "
                                 f"it has {sorted(stored)} (config fields 'student_eval_modes', 'student_eval_gammas')")
            cells.append(_cell(mode, rate, "validation", valid_epoch, row["metrics"], row["read"], MEASURED))
            if pick["epoch"] is None:
                cells.append(_cell(mode, rate, "test", None, None, None, NO_EPOCH))
            elif pick["epoch"] == valid_epoch:
                cells.append(_cell(mode, rate, "test", valid_epoch, row["metrics"], row["read"], MEASURED))
            elif mode == "pruned" and math.isclose(rate, gamma):
                cells.append(_cell(mode, rate, "test", pick["epoch"], pick, row["read"], MEASURED))
            else:
                cells.append(_cell(mode, rate, "test", pick["epoch"], None, None, NOT_STORED))
    return cells


def missing_cells(block: Mapping[str, Any]) -> list[dict]:
    """The cells of a run without a record (all ``NOT_TRAINED``)."""
    return [_cell(mode, float(rate), sel, None, None, None, NOT_TRAINED)
            for mode in block["eval_modes"] for rate in block["eval_rates"] for sel in SELECTIONS]


# --- a dataset's table ------------------------------------------------------------------------------
def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _std(values: Sequence[float]) -> float:
    if len(values) < 2:
        return math.nan
    mean = _mean(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def dataset_table(cells_by_recipe: Mapping[str, Sequence[Sequence[dict]]], block: Mapping[str, Any],
                  published_row: Mapping[str, Any] | None = None):
    """One dataset's table: a row per recipe label x mode x rate x selection, the mean over seeds.

    ``cells_by_recipe``: label -> one :func:`run_cells` list per seed (same order). A cell is
    shown only when every seed has it (else its status, numbers ``NaN``). Columns: ``eval``,
    ``rate``, ``selected on``, ``epoch`` (per seed, ``/``-joined), ``MRR`` (``MRR ±``: std over
    seeds when more than one), ``H@1``, ``H@3``, ``H@10``, ``parameters read`` (mean non-zero
    parameters the scorer reads), ``read / source`` (of the dense source's P), ``runs``, ``cell``.
    ``published_row`` (published.yaml's MetaSD row) adds a last row ``MetaSD (published)`` with
    the columns ``<metric> paper`` and ``size paper``, empty on the measured rows.
    """
    import pandas as pd

    n_seeds = max((len(runs) for runs in cells_by_recipe.values()), default=1)
    rows, index = [], []
    for label, runs in cells_by_recipe.items():
        for position in range(len(runs[0]) if runs else 0):
            group = [cells[position] for cells in runs]
            first = group[0]
            statuses = [c["status"] for c in group if c["status"] != MEASURED]
            missing = NOT_TRAINED if NOT_TRAINED in statuses else next(iter(statuses), None)
            row = {"eval": first["mode"], "rate": f"{first['rate']:g}",
                   "selected on": "valid" if first["selection"] == "validation" else SELECTION_LABELS[block["test_rule"]],
                   "epoch": "/".join("-" if c["epoch"] is None else str(c["epoch"]) for c in group)}
            for metric in METRICS:
                values = [c[metric] for c in group]
                row[metric] = math.nan if missing else _mean(values)
                if metric == "MRR" and n_seeds > 1:
                    row["MRR ±"] = math.nan if missing else _std(values)
            row["parameters read"] = math.nan if missing else _mean([c["read"] for c in group])
            row["read / source"] = math.nan if missing else _mean([c["read"] / c["dense"] for c in group])
            row["runs"] = len(group)
            row["cell"] = missing or MEASURED
            rows.append(row)
            index.append(label)
    frame = pd.DataFrame(rows, index=index)
    if published_row:
        paper = {"eval": "as published", "rate": "0.9", "selected on": "-", "epoch": "-", "runs": 0, "cell": "published"}
        paper.update({f"{m} paper": float(published_row[m]) for m in METRICS})
        paper["size paper"] = float(published_row["size"])
        frame = pd.concat([frame, pd.DataFrame([paper], index=["MetaSD (published)"])])
    return frame


def selection_table(records: Mapping[str, Mapping[str, Any]], block: Mapping[str, Any]):
    """Every selection rule of :mod:`kgdistill.selection` for each run (``records``: row label ->
    record, e.g. ``"official code s0"``): epoch, the student's validation and test MRR there,
    and ``optimism`` = its test MRR minus the validation-selected one."""
    import pandas as pd

    rows, index = [], []
    for label, record in records.items():
        summary = selection_summary(record, "student", block["threshold"], block["rule_model"])
        for rule, values in summary.items():
            rows.append({"rule": SELECTION_LABELS[rule], "epoch": "-" if values["epoch"] is None else str(values["epoch"]),
                         "valid MRR": values["valid_MRR"], "MRR": values["MRR"], "H@10": values["H@10"],
                         "optimism": values["optimism"]})
            index.append(label)
    return pd.DataFrame(rows, index=index, columns=["rule", "epoch", "valid MRR", "MRR", "H@10", "optimism"])


def source_point(records: Sequence[Mapping[str, Any]]) -> dict:
    """The dense source (``teacher``) at the validation-selected epoch, mean over ``records``:
    ``{"MRR", "parameters"}`` (its non-zero parameters), the reference point of the figure."""
    return {"MRR": _mean([r["test"]["teacher"]["all"]["MRR"] for r in records]),
            "parameters": _mean([r["parameter_counts"]["teacher"]["nonzero"] for r in records])}


# --- what the tables say ----------------------------------------------------------------------------
def _value(frame, label: str, mode: str, rate: float, selection: str, column: str = "MRR") -> float:
    """One number of a :func:`dataset_table` (NaN when the row is absent or not available)."""
    if label not in frame.index:
        return math.nan
    rows = frame.loc[[label]]
    chosen = rows[(rows["eval"] == mode) & (rows["rate"] == f"{rate:g}") & ((rows["selected on"] == "valid") == (selection == "validation"))]
    return float(chosen[column].iloc[0]) if len(chosen) else math.nan


def _signed(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:+.4f}"


def reading(title: str, frame, block: Mapping[str, Any], published_row: Mapping[str, Any] | None = None) -> str:
    """A few sentences with the numbers of one dataset's table (4 decimals; deterministic)."""
    labels = list(block["recipes"])
    rates = [float(r) for r in block["eval_rates"]]
    train, other = rates[0], (rates[1] if len(rates) > 1 else None)
    modes = list(block["eval_modes"])
    lines = [f"{title}:"]
    if frame.empty or frame["cell"].isin([NOT_TRAINED, "published"]).all():
        return "\n".join(lines + ["  no run of this dataset is trained yet."])

    def per_recipe(fn) -> str:
        return ", ".join(f"{_signed(fn(label))} ({label})" for label in labels)

    if "official_dense" in modes and "pruned" in modes:
        ratio = [_value(frame, l, "official_dense", train, "validation", "parameters read") /
                 _value(frame, l, "pruned", train, "validation", "parameters read") for l in labels]
        lines.append(f"  official_dense minus pruned MRR at rate {train:g} (valid-selected): "
                     + per_recipe(lambda l: _value(frame, l, "official_dense", train, "validation")
                                  - _value(frame, l, "pruned", train, "validation"))
                     + f"; it reads {' / '.join('n/a' if math.isnan(x) else f'{x:.1f}x' for x in ratio)} as many parameters "
                     + f"({' / '.join(_fraction(frame, l, 'official_dense', train) for l in labels)} of the source).")
    if other is not None:
        lines.append(f"  rate {other:g} minus rate {train:g}, pruned, valid-selected: MRR "
                     + per_recipe(lambda l: _value(frame, l, "pruned", other, "validation") - _value(frame, l, "pruned", train, "validation"))
                     + ".")
    if len(labels) > 1:
        a, b = labels[0], labels[1]
        delta = [_value(frame, b, m, r, "validation") - _value(frame, a, m, r, "validation") for m in modes for r in rates]
        lines.append(f"  {b} minus {a}, valid-selected MRR, " + ", ".join(
            f"{m} {r:g}: {_signed(d)}" for (m, r), d in zip([(m, r) for m in modes for r in rates], delta)) + ".")
    optimism = per_recipe(lambda l: _value(frame, l, "pruned", train, "test") - _value(frame, l, "pruned", train, "validation"))
    no_epoch = frame[(frame["eval"] == "pruned") & (frame["rate"] == f"{train:g}") & (frame["cell"] == NO_EPOCH)]
    lines.append(f"  {SELECTION_LABELS[block['test_rule']]} minus valid selection, pruned {train:g}: MRR {optimism}"
                 + (f" (n/a for {', '.join(dict.fromkeys(no_epoch.index))}: the rule selects no evaluation)." if len(no_epoch) else "."))
    if published_row:
        read = _fraction(frame, labels[-1], modes[-1], rates[-1])
        lines.append(f"  published MetaSD: MRR {float(published_row['MRR']):.4f} at size {float(published_row['size']):,.0f} "
                     f"(10% of a rank-2000 source); {labels[-1]} in {modes[-1]} mode at rate {rates[-1]:g} reads {read} "
                     f"of its source here.")
    return "\n".join(lines)


def _fraction(frame, label: str, mode: str, rate: float) -> str:
    x = _value(frame, label, mode, rate, "validation", "read / source")
    return "n/a" if math.isnan(x) else f"{x:.1%}"


# --- everything notebook 07 shows ---------------------------------------------------------------------
class OfficialResults:
    """Notebook 07's runs and tables (:meth:`kgdistill.study.Study.official_code`).

    ``specs`` (the section's runs), ``records`` (run name -> record, the runs trained so far),
    ``tables`` / ``selection`` (dataset label -> :func:`dataset_table` / :func:`selection_table`),
    ``sources`` (dataset label -> :func:`source_point`), ``titles``, ``published``.
    """

    def __init__(self, block: Mapping[str, Any], specs: Sequence, records: Mapping[str, dict],
                 titles: Mapping[str, str], published: Mapping[str, Mapping | None], profile_name: str = "<profile>"):
        self.block, self.specs, self.records, self.profile_name = dict(block), list(specs), dict(records), profile_name
        self.titles, self.published = dict(titles), dict(published)
        self.tables, self.selection, self.sources = {}, {}, {}
        for label in dict.fromkeys(s.paper_dataset for s in self.specs):
            specs_here = [s for s in self.specs if s.paper_dataset == label]
            cells = {recipe: [run_cells(self.records[s.run_name], block) if s.run_name in self.records else missing_cells(block)
                              for s in specs_here if s.row == recipe] for recipe in block["recipes"]}
            self.tables[label] = dataset_table(cells, block, self.published.get(label))
            found = {f"{s.row} s{s.seed}": self.records[s.run_name] for s in specs_here if s.run_name in self.records}
            self.selection[label] = selection_table(found, block)
            self.sources[label] = {recipe: source_point([self.records[s.run_name] for s in specs_here
                                                         if s.row == recipe and s.run_name in self.records])
                                   for recipe in block["recipes"]}

    @property
    def missing(self) -> list[str]:
        """Run names of the section without a finished record."""
        return [s.run_name for s in self.specs if s.run_name not in self.records]

    def describe(self) -> str:
        """Which runs, how many trained, each one's selected epoch and stop (deterministic)."""
        lines = [f"{len(self.records)} of {len(self.specs)} run(s) trained; test rule: {self.block['test_rule']} "
                 f"(threshold {self.block['threshold']} on the {self.block['rule_model']}'s test MRR where the rule uses one)"]
        for s in self.specs:
            record = self.records.get(s.run_name)
            state = (f"selected epoch {record['selected_epoch']} of {record['stopped_epoch']}, "
                     f"{'converged' if record.get('converged') else 'stopped by the epoch budget (not converged)'}"
                     if record else "not trained yet")
            lines.append(f"  {s.paper_dataset:<10} {s.row:<16} s{s.seed}: {state}")
        if self.missing:
            lines.append(f'train the missing runs with: scripts/train_runs.py --profile {self.profile_name} --match "notebook 07"')
        return "\n".join(lines)

    def timings(self) -> str:
        """Run names and seconds per training epoch (machine-dependent)."""
        return "\n".join(f"{name}: {r['seconds_per_epoch']:.1f} s/epoch" for name, r in self.records.items())

    def short_title(self, label: str) -> str:
        """``FB15k-237``, or ``FB15k-237 (UMLS stand-in)`` when its runs train another benchmark."""
        trained = {s.config.dataset for s in self.specs if s.paper_dataset == label}
        return label if trained <= {label} else f"{label} ({'/'.join(sorted(trained))} stand-in)"

    def reading(self) -> str:
        return "\n".join(reading(self.titles[ds], frame, self.block, self.published.get(ds)) for ds, frame in self.tables.items())

    def figure(self):
        """MRR (valid-selected) against the non-zero parameters read, one panel per dataset: colour =
        recipe, marker = eval mode, filled = training rate, hollow = the other rate; grey diamond =
        the dense source, star = the published MetaSD (its size as published). Datasets without a
        trained run get no panel (unless none has one)."""
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullFormatter

        labels, rates = list(self.block["recipes"]), [f"{float(r):g}" for r in self.block["eval_rates"]]
        shown = {ds: f for ds, f in self.tables.items() if f["cell"].eq(MEASURED).any()} or self.tables  # no empty panel
        fig, axes = plt.subplots(1, len(shown), figsize=(4.2 * len(shown), 3.6), squeeze=False)
        for ax, (ds, frame) in zip(axes[0], shown.items()):
            valid = frame[(frame["selected on"] == "valid") & (frame["cell"] == MEASURED)]
            for i, label in enumerate(labels):
                rows = valid.loc[[label]] if label in valid.index else valid.iloc[:0]
                for _, row in rows.iterrows():
                    filled = row["rate"] == rates[0]
                    ax.scatter(row["parameters read"], row["MRR"], marker="o" if row["eval"] == "pruned" else "s", s=42,
                               color=f"C{i}", facecolors=f"C{i}" if filled else "none", linewidths=1.4)
                source = self.sources[ds].get(label, {})
                if not math.isnan(source.get("MRR", math.nan)):
                    ax.scatter(source["parameters"], source["MRR"], marker="D", s=30, color="0.55")
            paper = self.published.get(ds)
            if paper:
                ax.scatter(float(paper["size"]), float(paper["MRR"]), marker="*", s=120, color="k")
            ax.set(xscale="log", xlabel="non-zero parameters read", ylabel="test MRR", title=self.short_title(ds))
            ax.xaxis.set_minor_formatter(NullFormatter())
        handles = [plt.Line2D([], [], color=f"C{i}", marker="o", ls="", label=label) for i, label in enumerate(labels)]
        handles += [plt.Line2D([], [], color="k", marker=m, ls="", mfc=f, label=t) for m, f, t in (
            ("o", "k", "pruned"), ("s", "k", "official_dense"), ("o", "none", f"rate {rates[-1]}"),
            ("D", "0.55", "dense source"), ("*", "k", "published MetaSD"))][: None if any(map(self.published.get, shown)) else -1]
        ncol = len(handles) if len(shown) > 1 else 4  # one row above several panels, two above one
        fig.tight_layout(rect=(0, 0, 1, 0.9 if ncol == len(handles) else 0.8))
        fig.legend(handles=handles, loc="upper center", ncol=ncol, fontsize=8, frameon=False, handletextpad=0.2)
        return fig
