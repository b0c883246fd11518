"""Notebook 07's runs and tables in one object (:class:`OfficialResults`)."""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from ..tables import DAGGER, budget_hit, marked_label
from .cells import MEASURED, dataset_table, missing_cells, reading, run_cells, selection_table, source_point


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
            cells = {recipe: [run_cells(self.records[s.run_name], block) if s.run_name in self.records
                              else missing_cells(block)
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
                 f"(threshold {self.block['threshold']} on the {self.block['rule_model']}'s test MRR "
                 "where the rule uses one)"]
        for s in self.specs:
            record = self.records.get(s.run_name)
            hit = record is not None and budget_hit(record)
            stop = f"stopped by the epoch budget (not converged {DAGGER})" if hit else "converged"
            state = (f"selected epoch {record['selected_epoch']} of {record['stopped_epoch']}, {stop}"
                     if record else "not trained yet")
            lines.append(f"  {s.paper_dataset:<10} {s.row:<16} s{s.seed}: {state}")
        if self.missing:
            lines.append(f"train the missing runs with: scripts/train_runs.py --profile {self.profile_name} "
                         '--match "notebook 07"')
        return "\n".join(lines)

    def timings(self) -> str:
        """Run names and seconds per training epoch (machine-dependent)."""
        return "\n".join(f"{name}: {r['seconds_per_epoch']:.1f} s/epoch" for name, r in self.records.items())

    def short_title(self, label: str) -> str:
        """``FB15k-237``, or ``FB15k-237 (UMLS stand-in)`` when its runs train another benchmark."""
        trained = {s.config.dataset for s in self.specs if s.paper_dataset == label}
        return label if trained <= {label} else f"{label} ({'/'.join(sorted(trained))} stand-in)"

    def reading(self) -> str:
        return "\n".join(reading(self.titles[ds], frame, self.block, self.published.get(ds))
                         for ds, frame in self.tables.items())

    def figure(self):
        """MRR (valid-selected) against the non-zero parameters read, one panel per dataset: colour =
        recipe, marker = eval mode, filled = training rate, hollow = the other rate; grey diamond =
        the dense source, star = the published MetaSD (its size as published). Datasets without a
        trained run get no panel (unless none has one). A recipe with a run that stopped at its epoch
        budget in a panel drawn is labelled † (:func:`~kgdistill.study.tables.marked_label`), and a note
        under the figure says in which panels its points are unconverged."""
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullFormatter

        from ..figures import add_notes

        labels, rates = list(self.block["recipes"]), [f"{float(r):g}" for r in self.block["eval_rates"]]
        # no empty panel
        shown = {ds: f for ds, f in self.tables.items() if f["cell"].eq(MEASURED).any()} or self.tables
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
        drawn = {label: {ds: self.recipe_records(ds, label) for ds in shown} for label in labels}
        handles = [plt.Line2D([], [], color=f"C{i}", marker="o", ls="",
                              label=marked_label(label, [r for rs in drawn[label].values() for r in rs]))
                   for i, label in enumerate(labels)]
        handles += [plt.Line2D([], [], color="k", marker=m, ls="", mfc=f, label=t) for m, f, t in (
            ("o", "k", "pruned"), ("s", "k", "official_dense"), ("o", "none", f"rate {rates[-1]}"),
            ("D", "0.55", "dense source"), ("*", "k", "published MetaSD"))
        ][: None if any(map(self.published.get, shown)) else -1]
        ncol = len(handles) if len(shown) > 1 else 4  # one row above several panels, two above one
        fig.tight_layout(rect=(0, 0, 1, 0.9 if ncol == len(handles) else 0.8))
        fig.legend(handles=handles, loc="upper center", ncol=ncol, fontsize=8, frameon=False, handletextpad=0.2)
        hit = {label: [self.short_title(ds) for ds, rs in panels.items() if any(map(budget_hit, rs))]
               for label, panels in drawn.items()}
        hit = "; ".join(f"{label} in {', '.join(where)}" for label, where in hit.items() if where)
        add_notes(fig, [f"{DAGGER} not converged (a run stopped at its epoch budget): {hit}" if hit else ""])
        return fig

    def recipe_records(self, dataset: str, recipe: str) -> list[dict]:
        """The trained runs' records of one recipe (table label) on one dataset."""
        return [self.records[s.run_name] for s in self.specs
                if s.paper_dataset == dataset and s.row == recipe and s.run_name in self.records]
