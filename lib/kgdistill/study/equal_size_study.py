"""Notebook 08's section (:meth:`kgdistill.study.Study.equal_size`): compression at equal size.

:class:`EqualSize` trains or reuses the section's runs (:func:`kgdistill.study.equal_size.section_runs`),
computes the rows that need no training from the trained weights (one-shot magnitude pruning of
the source, fp16/int8 copies of the source and of the dense-alone model; weights through
:func:`kgdistill.protocol.runner.load_best`, which retrains a run whose checkpoint was not committed: same
numbers on CPU), and gives per-seed measurements (:meth:`EqualSize.measurements`), the table of
one benchmark and source rank (:func:`summary_table`), the paired comparison of MetaSD with the
best equal-size alternative chosen on validation MRR (:meth:`EqualSize.comparisons`) and the
figure (:meth:`EqualSize.figure`).

The post-hoc rows of a source run are kept beside its record (:data:`POST_HOC`, committed like
the record): a fresh clone with the committed records rebuilds the notebook without retraining
the sources for their weights. The file is keyed by the run (its content-addressed folder), γ and
:data:`POST_HOC_VERSION` (bump it when :mod:`kgdistill.compression.oneshot` changes what it measures).

Bytes are those of the stored tensors, no file overhead: dense float32 tables 4 per parameter,
pruned students their CSR export (:func:`sparse_bytes`, the layout of :mod:`kgdistill.compression.sparse`),
quantized models :attr:`kgdistill.compression.oneshot.QuantizedTables.nbytes`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import pandas as pd

from ..core.models import backbone
from ..core.pruning import kept_count
from .equal_size import (
    ALTERNATIVES,
    EQUAL_SIZE_SECTION,
    METASD,
    ROW_BY_LABEL,
    ROWS,
    SOURCE,
    SectionRun,
    comparison_frame,
    paired_comparison,
    section_runs,
    shown_rows,
    sizes_from_stats,
    small_rank,
)
from .profile import NamedRunSpec, published
from .tables import DAGGER, budget_hit, convergence_mark, format_table, marked_label, runs_frame

#: the post-hoc rows of a source run, beside its record (read instead of recomputing them)
POST_HOC = "post_hoc.json"
#: bumped when the post-hoc measurements change meaning (files of another version are recomputed)
POST_HOC_VERSION = 1

#: columns of a measurements frame (one line per benchmark, source rank, row and seed)
MEASURED = ("size", "bytes", "valid MRR", "MRR", "H@1", "H@10", "MRR official-dense",
            "parameters read (official-dense)")
#: methods whose selected model is the pruned source (stored sparse; official-dense evaluation in the record)
PRUNED_METHODS = ("metasd", "metasd_wo_m", "prune_finetune")
#: the equal-size figure's source points: hollow, larger, drawn over the rows at their size
SOURCE_STYLE = {"markersize": 9, "markerfacecolor": "none", "markeredgewidth": 1.6, "zorder": 4}


def benchmark_sizes(names: Sequence[str]) -> dict[str, tuple[int, int]]:
    """``{benchmark: (entities, relations)}`` from the known dataset statistics (``published.yaml``,
    checked against the archives by notebook 00)."""
    sizes = sizes_from_stats(published("datasets", "stats"))
    return {name: sizes[name] for name in names}


def sparse_bytes(nonzero: int, tables: Sequence[tuple[int, int]]) -> int:
    """Bytes of the CSR tensors :func:`kgdistill.compression.sparse.export_sparse` stores for ``nonzero`` kept
    weights over ``tables`` (rows, columns): float32 values, int16 column indices (int32 beyond
    32,767 columns), int32 row pointers (rows + 1 per table)."""
    column_bytes = 2 if max(width for _, width in tables) <= 32767 else 4
    return nonzero * (4 + column_bytes) + sum(4 * (rows + 1) for rows, _ in tables)


def summary_table(measurements: pd.DataFrame, rows: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean over seeds of one benchmark and source rank's measurements (columns ``row``, ``seed``,
    ``converged`` (bool) and :data:`MEASURED`): per row its ``basis``, ``converged``
    (:func:`kgdistill.study.tables.convergence_mark`: a dagger when a run behind it hit its budget),
    ``size`` (non-zero parameters), ``bytes``, test ``MRR`` ± std over seeds, ``H@1``, ``H@10``,
    ``valid MRR`` (what the comparison selects on), the official-dense evaluation of pruned students
    (``MRR official-dense`` and the non-zero parameters it reads) and ``seeds``. ``rows`` orders
    (and picks) the rows."""
    out = []
    for label in rows or [r.label for r in ROWS]:
        group = measurements[measurements["row"] == label]
        if group.empty:
            continue
        entry = {"row": label, "basis": ROW_BY_LABEL[label].basis, "converged": convergence_mark(_stops(group))}
        for column in MEASURED:
            entry[column] = group[column].mean()
        entry["MRR ±"] = group["MRR"].std(ddof=1) if len(group) > 1 else math.nan
        entry["seeds"] = len(group)
        out.append(entry)
    frame = pd.DataFrame(out).set_index("row").rename_axis(None)
    return frame[["basis", "converged", "size", "bytes", "MRR", "MRR ±", "H@1", "H@10", "valid MRR",
                  "MRR official-dense", "parameters read (official-dense)", "seeds"]]


def _stops(lines: pd.DataFrame) -> list[dict]:
    """Measurement lines (a bool ``converged`` column) as the stop reasons ``convergence_mark`` reads."""
    return [{"stop_reason": "plateau" if converged else "budget"} for converged in lines["converged"]]


@dataclass
class EqualSize:
    """The ``equal_size`` section of a :class:`~kgdistill.study.Study`'s profile: its runs
    (trained or reused at construction; with the section's ``train_missing: false`` only the
    records that exist are read), then measurements, tables, comparisons and the figure."""

    study: object  # the kgdistill.study.Study it belongs to
    planned: list[SectionRun]
    records: dict[str, dict]
    _measured: pd.DataFrame | None = field(default=None, repr=False)

    @classmethod
    def of(cls, study) -> "EqualSize":
        """The section's runs of ``study``'s profile, trained when missing (teachers first), or
        only those with a record when the section says ``train_missing: false``."""
        section = study.section(EQUAL_SIZE_SECTION)
        planned = section_runs(section, benchmark_sizes(section["datasets"]))
        if section.get("train_missing", True):
            return cls(study, planned, study.run([r.config for r in planned]))
        from ..protocol.runner import existing_record, run_dir_for

        found = {r.config.run_name(): existing_record(run_dir_for(r.config, study.runs_dir)) for r in planned}
        return cls(study, planned, {name: record for name, record in found.items() if record is not None})

    @property
    def runs(self) -> list[SectionRun]:
        """The planned runs whose records were read."""
        return [r for r in self.planned if r.config.run_name() in self.records]

    @property
    def missing(self) -> int:
        """Distinct planned runs without a record (0 unless ``train_missing: false``)."""
        return len({r.config.run_name() for r in self.planned} - set(self.records))

    @property
    def section(self) -> dict:
        return self.study.section(EQUAL_SIZE_SECTION)

    # --- deterministic text -------------------------------------------------------------------
    def sizes(self) -> pd.DataFrame:
        """Per benchmark and source rank: the source's parameters, the pruned student's non-zero
        count, and the rank and size of the dense model trained alone (at most that count)."""
        section, lines = self.section, []
        gamma = float(section.get("gamma", 0.9))
        for dataset, (n_e, n_r) in benchmark_sizes(section["datasets"]).items():
            for rank in section["source_ranks"]:
                name = self._source(dataset, rank, runs=self.planned).config.model
                model = backbone(name)
                dense = model.dense_size(n_e, n_r, int(rank))
                small = small_rank(name, n_e, n_r, int(rank), gamma)
                lines.append({"dataset": dataset, "source rank": int(rank), "source parameters": dense,
                              "student non-zeros": kept_count(dense, gamma), "dense-alone rank": small,
                              "dense-alone parameters": model.dense_size(n_e, n_r, small)})
        return pd.DataFrame(lines).set_index(["dataset", "source rank"])

    def describe(self) -> str:
        """The section's settings and sizes (deterministic: nbval compares it)."""
        s = self.section
        head = (f"profile {self.study.name}: {', '.join(s['datasets'])}; source ranks {list(s['source_ranks'])}, "
                f"gamma {s.get('gamma', 0.9)}, seeds {list(s['seeds'])}; {len(self.records)} runs")
        if self.missing:
            head += (f" read, {self.missing} not trained yet (train_missing: false; scripts/train_runs.py "
                     f"--profile {self.study.name} --match \"equal size (notebook 08)\" trains them)")
        return head + "\n" + format_table(self.sizes())

    def run_specs(self) -> list[NamedRunSpec]:
        """One :class:`~kgdistill.study.profile.NamedRunSpec` per trained row (``"KD r100"``), for run frames."""
        return [NamedRunSpec(r.label, r.dataset, r.seed, r.config.run_name()) for r in self.runs]

    def runs_frame(self) -> pd.DataFrame:
        """:func:`kgdistill.study.tables.runs_frame` of the section's runs (selected and stopping epochs,
        convergence, validation MRR, seconds per epoch)."""
        return runs_frame(self.run_specs(), self.records)

    # --- measurements ---------------------------------------------------------------------------
    def _source(self, dataset: str, rank: int, seed: int | None = None, row: str = SOURCE,
                runs: Sequence[SectionRun] | None = None) -> SectionRun:
        for r in self.runs if runs is None else runs:
            if (r.dataset, r.source_rank, r.row) == (dataset, int(rank), row) and seed in (None, r.seed):
                return r
        raise KeyError(f"no {row} run for {dataset} rank {rank} seed {seed}")

    def measurements(self) -> pd.DataFrame:
        """One line per benchmark, source rank, row and seed: ``converged`` (bool; a post-hoc row
        inherits it from the run whose weights it transforms), :data:`MEASURED` and ``run``."""
        if self._measured is None:
            lines = [self._trained(r) for r in self.runs]
            for dataset in self.section["datasets"]:
                for rank in self.section["source_ranks"]:
                    for seed in self.section["seeds"]:
                        lines += self._post_hoc(dataset, int(rank), int(seed))
            self._measured = pd.DataFrame(lines)
        return self._measured

    def _trained(self, r: SectionRun) -> dict:
        record = self.records[r.config.run_name()]
        model = record["selected_model"]
        counts, test = record["parameter_counts"][model], record["test"][model]["all"]
        official = [e for e in record.get("student_eval", [])
                    if e["mode"] == "official_dense" and math.isclose(e["gamma"], r.config.gamma)]
        n_e, n_r = benchmark_sizes([r.dataset])[r.dataset]
        cls, rank = backbone(r.config.model), record["dims"][model]
        if r.config.method in PRUNED_METHODS:
            stored = sparse_bytes(counts["nonzero"],
                                  [(n_e, cls.entity_width(rank)), (2 * n_r, cls.relation_width(rank))])
        else:
            stored = 4 * counts["dense"]
        return self._line(r.dataset, r.source_rank, r.row, r.seed, not budget_hit(record), counts["nonzero"], stored,
                          record["best_valid_mrr"], test, official[0]["metrics"]["MRR"] if official else math.nan,
                          official[0]["read"]["total"] if official else math.nan, record["run_name"])

    def _post_hoc(self, dataset: str, rank: int, seed: int) -> list[dict]:
        """The one-shot pruned source and the quantized copies of the source and the dense-alone model."""
        from ..compression.oneshot import SCHEMES

        gamma, wanted = float(self.section.get("gamma", 0.9)), self.section.get("quantize", SCHEMES)
        lines = []
        for of in dict.fromkeys(row.of for row in ROWS if row.of):
            try:
                run = self._source(dataset, rank, seed, of)
            except KeyError:  # not trained yet (train_missing: false)
                continue
            rows = [r for r in ROWS if r.of == of and (r.transform == "one_shot" or r.transform in wanted)]
            lines += self._post_hoc_rows(run, rows, dataset, rank, seed, gamma)
        return lines

    def _post_hoc_rows(
        self, run: SectionRun, rows: list, dataset: str, rank: int, seed: int, gamma: float
    ) -> list[dict]:
        """The lines of ``rows`` (transforms of ``run``'s weights): read from its :data:`POST_HOC`
        file when it holds them all, else computed from the weights and saved there."""
        from ..core.records import atomic_write_json, read_json
        from ..protocol.runner import run_dir_for

        path = run_dir_for(run.config, self.study.runs_dir) / POST_HOC
        keys = [f"{rank}|{row.label}" for row in rows]  # the rank-100 source is also rank 1000's dense-alone model
        saved = read_json(path) if path.exists() else {}
        if saved.get("version") != POST_HOC_VERSION or saved.get("gamma") != gamma:
            saved = {}
        cached = saved.get("lines", {})
        if all(key in cached for key in keys):
            return [cached[key] for key in keys]
        lines = self._compute_post_hoc(run, rows, dataset, rank, seed, gamma)
        cached.update(zip(keys, lines))
        atomic_write_json(path, {"version": POST_HOC_VERSION, "gamma": gamma, "lines": cached})
        return lines

    def _compute_post_hoc(
        self, run: SectionRun, rows: list, dataset: str, rank: int, seed: int, gamma: float
    ) -> list[dict]:
        """The lines of ``rows`` measured on ``run``'s best weights (retrained when not on disk)."""
        from ..compression.oneshot import one_shot_pruned, quantize
        from ..core.evaluation import evaluate
        from ..metasd.evalmodes import evaluate_student
        from ..protocol.runner import load_best

        data = self.study.dataset(dataset)
        config, record = run.config, self.records[run.config.run_name()]
        model, _ = load_best(config, self.study.runs_dir, data, "cpu", data_dir=self.study.data_dir)
        converged = not budget_hit(record)

        def scores(scorer) -> tuple[float, dict]:
            kwargs = {"tie_policy": config.tie_policy, "batch_size": config.eval_batch_size, "device": "cpu"}
            return evaluate(scorer, data, "valid", **kwargs)["MRR"], evaluate(scorer, data, "test", **kwargs)

        lines = []
        for row in rows:
            if row.transform == "one_shot":
                pruned = one_shot_pruned(model, gamma)
                valid, test = scores(lambda q, m=pruned: m.score_tails(q, masked=True))
                official = evaluate_student(pruned, data, "official_dense", None, "test", config.tie_policy,
                                            config.eval_batch_size)
                entity, relation = pruned.prunable().values()
                stored = sparse_bytes(pruned.parameter_counts()["nonzero"],
                                      [tuple(entity.shape), tuple(relation.shape)])
                lines.append(self._line(dataset, rank, row.label, seed, converged, pruned.parameter_counts()["nonzero"],
                                        stored, valid, test, official["metrics"]["all"]["MRR"],
                                        official["read"]["total"], record["run_name"]))
            else:
                tables = quantize(model, row.transform)
                dense = tables.dequantized_model()
                valid, test = scores(dense.score_tails)
                lines.append(self._line(dataset, rank, row.label, seed, converged, dense.parameter_counts()["nonzero"],
                                        tables.nbytes, valid, test, math.nan, math.nan, record["run_name"]))
        return lines

    @staticmethod
    def _line(dataset, rank, row, seed, converged, size, stored, valid, test, official, read, run) -> dict:
        return {"dataset": dataset, "source rank": rank, "row": row, "seed": seed, "converged": bool(converged),
                "size": int(size), "bytes": int(stored), "valid MRR": float(valid), "MRR": test["MRR"],
                "H@1": test["H@1"], "H@10": test["H@10"], "MRR official-dense": float(official),
                "parameters read (official-dense)": float(read), "run": run}

    # --- tables, comparison, figure -------------------------------------------------------------------
    def _part(self, dataset: str, rank: int) -> pd.DataFrame:
        frame = self.measurements()
        return frame[(frame["dataset"] == dataset) & (frame["source rank"] == int(rank))]

    def _parts(self) -> dict[tuple[str, int], pd.DataFrame]:
        parts = {(ds, int(rank)): self._part(ds, rank)
                 for ds in self.section["datasets"] for rank in self.section["source_ranks"]}
        return {key: part for key, part in parts.items() if not part.empty}

    def tables(self) -> dict[tuple[str, int], pd.DataFrame]:
        """``{(benchmark, source rank): summary_table}`` (mean ± std over seeds, convergence marks)."""
        return {key: summary_table(part, shown_rows(self.section)) for key, part in self._parts().items()}

    def complete_seeds(self, part: pd.DataFrame) -> pd.DataFrame:
        """The lines of ``part`` whose seed has MetaSD and every equal-size alternative (all of
        them unless some runs are not trained yet): the comparison's selection and pairs use these."""
        needed = {METASD, *ALTERNATIVES}
        seeds = [s for s, group in part.groupby("seed") if needed <= set(group["row"])]
        return part[part["seed"].isin(seeds)]

    def comparisons(self) -> pd.DataFrame:
        """MetaSD against the equal-size alternative with the best mean VALIDATION MRR, per
        benchmark and source rank: per-seed test-MRR differences, mean, 95% t-interval, verdict
        (:func:`kgdistill.study.equal_size.paired_comparison`), and ``converged`` over the compared
        runs of MetaSD and the alternative (:func:`~kgdistill.study.tables.convergence_mark`: † on a budget hit)."""
        complete = {key: self.complete_seeds(part) for key, part in self._parts().items()}
        complete = {key: part for key, part in complete.items() if not part.empty}
        if not complete:
            raise ValueError("no seed has MetaSD and every equal-size alternative yet; train the section's runs")
        results = {key: paired_comparison(part) for key, part in complete.items()}
        frame = comparison_frame(results)
        winners = []
        for key in results:  # the best equal-size row of all, MetaSD included, again on validation
            part = complete[key]
            means = part[part["row"].isin((METASD, *ALTERNATIVES))].groupby("row")["valid MRR"].mean()
            winners.append(means.idxmax())
        frame["best at equal size (valid)"] = winners
        compared = [complete[key][complete[key]["row"].isin((METASD, c["alternative"]))] for key, c in results.items()]
        frame.insert(frame.columns.get_loc("seeds") + 1, "converged", [convergence_mark(_stops(p)) for p in compared])
        return frame

    def figure(self):
        """Test MRR against non-zero parameters (log x), one panel per benchmark: the source (full
        size) and every equal-size row, mean over seeds with ± std error bars; colour = row,
        marker = source rank. The equal-size rows of one source rank share their x, so they are
        spread over ±15% of it to keep their bars apart. Sources are hollow, larger and on top:
        a rank-100 source sits at the size of the rank-1000 equal-size rows. The quantized rows
        (compared by bytes, at the source's parameter count) are left to the tables. A row with a run
        that hit its epoch budget is labelled † (:func:`~kgdistill.study.tables.marked_label`), with a note."""
        import matplotlib.pyplot as plt
        from matplotlib.ticker import EngFormatter, LogLocator, NullFormatter

        section, frame = self.section, self.measurements()
        rows = [label for label in shown_rows(section) if ROW_BY_LABEL[label].basis != "bytes"]
        equal = [label for label in rows if ROW_BY_LABEL[label].basis == "equal size"]
        ranks = [int(r) for r in section["source_ranks"]]
        markers, colors = "osD^v", plt.get_cmap("tab10")
        fig, axes = plt.subplots(1, len(section["datasets"]), figsize=(5.2 * len(section["datasets"]) + 1.6, 4.2),
                                 squeeze=False)
        drawn: set[str] = set()
        for ax, dataset in zip(axes[0], section["datasets"]):
            for i, label in enumerate(rows):
                spread = 1.04 ** (equal.index(label) - (len(equal) - 1) / 2) if label in equal else 1.0
                for j, rank in enumerate(ranks):
                    part = frame[(frame["dataset"] == dataset) & (frame["source rank"] == rank)
                                 & (frame["row"] == label)]
                    if part.empty:
                        continue
                    std = part["MRR"].std(ddof=1) if len(part) > 1 else 0.0
                    _ = ax.errorbar(part["size"].mean() * spread, part["MRR"].mean(), yerr=std, marker=markers[j % 5],
                                    color=colors(i % 10), linestyle="none", capsize=2,
                                    **(SOURCE_STYLE if label == SOURCE else {"markersize": 5}))
                    drawn.add(label)
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
            ax.xaxis.set_major_formatter(EngFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
            _ = ax.set(title=dataset, xlabel="non-zero parameters", ylabel="test MRR")
        # one legend for every row drawn in any panel (a row may exist in one panel only)
        for i, label in enumerate(rows):
            if label in drawn:
                style = SOURCE_STYLE if label == SOURCE else {}
                stops = _stops(frame[frame["row"] == label])
                _ = axes[0][-1].plot([], [], marker="o", color=colors(i % 10), linestyle="none",
                                     label=marked_label(label, stops), **style)
        for j, rank in enumerate(ranks):
            _ = axes[0][-1].plot([], [], marker=markers[j % 5], color="0.3", linestyle="none",
                                 label=f"source rank {rank}")
        _ = axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
        fig.tight_layout()
        if not frame[frame["row"].isin(drawn)]["converged"].all():
            from .figures import add_notes

            add_notes(fig, [f"{DAGGER} not converged: a run of this row stopped at its epoch budget"])
        return fig

    def stamp_records(self) -> list[dict]:
        """The records behind the section (for provenance stamps)."""
        return list(self.records.values())
