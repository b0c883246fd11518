"""The study's rendered site: saved tables -> the MyST pages of a findings report (no torch, no I/O but reads).

Pure functions from a profile's saved tables (``results/<profile>/tables/*.csv``) to MyST markdown
text; ``scripts/build_report.py`` writes the pages, copies the executed notebooks beside them and
runs Sphinx (myst-nb, execution off). The site's source layout, which the links below assume:

* ``index.md``: the landing page, :func:`findings_page`, in the form of an ML Reproducibility
  Challenge report: scope, what was reproduced and what was not, the study's own findings
  ((a) :func:`equal_size_finding`, (b) :func:`official_code_finding`, (c) :func:`distile_stage2_finding`),
  provenance;
* ``tables.md``: every saved table (:func:`tables_page`), target ``table-<name>``, its csv for download;
* ``figures.md``: every saved figure (:func:`figures_page`), target ``figure-<name>``;
* ``notebooks/<name>.ipynb``: the executed notebooks (:func:`executed_notebooks` picks them).

Every number on the findings page is read from a csv when the site is built, never typed in; a
table that is missing or has no rows gives one line saying so (:meth:`Site.note`).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

#: a table's name prefix -> the notebook (number) that saves it
TABLE_NOTEBOOK = (("dataset_stats", "00"), ("long_tail_split", "00"), ("table1_", "01"), ("table2_", "02"),
                  ("long_tail_buckets", "02"), ("table3_", "03"), ("table4_", "04"), ("figure1_points", "05"),
                  ("footprint", "05"), ("distile_", "06"), ("official_code", "07"), ("equal_size", "08"))
NOT_TRAINED = "not trained yet"
DAGGER = "†"

SCOPE = """\
**MetaSD** (Li et al., Findings of EMNLP 2022) claims that a ComplEx source trained together with
its own 90%-pruned copy — the two teaching each other, with a meta-learning step that adapts the
source to the student — yields a student with 10% of the parameters that ranks better than
knowledge distillation (KD), mutual learning (DML) and dense models of the same size (Tables 1–4,
Figure 1 on FB15k-237 and WN18RR). **DistilE** (Zhu et al.) claims that a low-dimensional student
distilled in two stages (frozen teacher, then teacher and student adapting to each other) beats
the same model trained alone (Tables 3–6). This study re-implements both methods, recomputes
every table and figure of the MetaSD paper beside the published number, and asks three questions
of its own (below)."""


def fmt(value: object, digits: int = 4) -> str:
    """A number at fixed precision (``–`` for a missing one); text as it is."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, (int, float)):
        return f"{value:.{digits}f}"
    return str(value)


def label(kind: str, name: str) -> str:
    """The Sphinx target of a table or figure page section (lower case, as Sphinx stores labels)."""
    return f"{kind}-" + re.sub(r"[^a-z0-9_-]+", "-", name.lower())


def read_table(path: Path) -> pd.DataFrame | None:
    """A saved table's csv (its unnamed index column named ``row``), or None when the file is absent."""
    if not path.is_file():
        return None
    frame = pd.read_csv(path)
    return frame.rename(columns={c: "row" for c in frame.columns if str(c).startswith("Unnamed: 0")})


def notebook_of(table: str) -> str | None:
    """The number of the notebook that saves ``table`` (``"08"``), None for tables of scripts."""
    return next((nb for prefix, nb in TABLE_NOTEBOOK if table.startswith(prefix)), None)


def executed_notebooks(results_dir: Path, profile: str, root: Path) -> tuple[Path, list[Path]]:
    """The folder of a profile's executed notebooks and the notebooks in it, in order.

    ``results/<profile>/notebooks/*.ipynb`` (what ``scripts/reproduce.py`` writes; failed and
    running copies left out) when that folder holds any. Otherwise, for the smoke profile only,
    the committed ``notebooks/*.ipynb``, which are executed with the smoke profile (a fresh clone
    has no ``results/smoke/``: it is never committed). Any other profile without executed copies
    gives an empty list.
    """
    def found(folder: Path) -> list[Path]:
        return sorted(p for p in folder.glob("*.ipynb")
                      if not p.name.startswith(".") and not p.name.endswith(".failed.ipynb"))

    own = found(results_dir / "notebooks")
    if own or profile != "smoke":
        return results_dir / "notebooks", own
    return root / "notebooks", found(root / "notebooks")


@dataclass(frozen=True)
class Site:
    """What the site holds, for the links: the tables folder read, the figures and notebooks copied."""

    tables_dir: Path
    figures: tuple[str, ...] = ()
    notebooks: tuple[str, ...] = ()

    def table(self, name: str) -> pd.DataFrame | None:
        """The table ``name`` with at least one row, else None."""
        frame = read_table(self.tables_dir / f"{name}.csv")
        return None if frame is None or frame.empty else frame

    def note(self, name: str) -> str:
        """One line saying why ``name`` shows nothing: not saved, or saved without rows."""
        where = notebook_of(name)
        by = f" (written by {self.notebook_link(where)})" if where else ""
        if (self.tables_dir / f"{name}.csv").is_file():
            return f"*Table `{name}` has no rows in this profile{by}.*"
        return f"*Table `{name}` is not saved for this profile{by}: nothing to report.*"

    def table_link(self, name: str, text: str | None = None) -> str:
        """A link to the table's section of the tables page (plain text when it is not saved)."""
        if not (self.tables_dir / f"{name}.csv").is_file():
            return f"`{name}`"
        return f"{{ref}}`{text or name} <{label('table', name)}>`"

    def figure_link(self, name: str, text: str | None = None) -> str:
        """A link to the figure's section of the figures page ('' when the figure is absent)."""
        return f"{{ref}}`{text or name} <{label('figure', name)}>`" if name in self.figures else ""

    def notebook_link(self, number: str) -> str:
        """A link to the page of notebook ``number`` (``"08"``), or its name when it is not in the site."""
        stem = next((s for s in self.notebooks if s.startswith(f"{number}_")), None)
        return f"[notebook {number}](notebooks/{stem}.ipynb)" if stem else f"notebook {number}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A MyST pipe table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def interval(text: object) -> tuple[float, float]:
    """``"[-0.2327, -0.1720]"`` -> ``(-0.2327, -0.172)``; NaNs when it does not parse."""
    found = re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", str(text))
    return (float(found[0]), float(found[1])) if len(found) == 2 else (math.nan, math.nan)


def _row(frame: pd.DataFrame | None, name: str) -> pd.Series | None:
    if frame is None or "row" not in frame:
        return None
    hits = frame[frame["row"] == name]
    return None if hits.empty else hits.iloc[0]


def _budget(frame: pd.DataFrame | None) -> bool:
    """Whether any row of a table is marked † (a run stopped at its epoch budget)."""
    return frame is not None and frame.astype(str).apply(lambda col: col.str.contains(DAGGER)).any().any()


def equal_size_finding(site: Site) -> str:
    """(a) At equal non-zero count: MetaSD's pruned student against the best separately parameterised
    model (chosen on validation MRR), test MRR difference and its 95% interval, from notebook 08's
    ``equal_size_comparison`` and per-setting ``equal_size_<dataset>_r<rank>`` tables."""
    name = "equal_size_comparison"
    comparison = site.table(name)
    if comparison is None:
        return site.note(name)
    rows, below, above, marked = [], 0, 0, False
    for _, r in comparison.iterrows():
        setting = f"equal_size_{r['dataset']}_r{int(r['source rank'])}"
        per = site.table(setting)
        metasd, alt = _row(per, "MetaSD"), _row(per, str(r["best alternative (valid)"]))
        low, high = interval(r["95% interval"])
        below += high < 0
        above += low > 0
        mark = DAGGER if _budget(per) else ""
        marked |= bool(mark)
        title = f"{r['dataset']} / {int(r['source rank'])}"
        rows.append([site.table_link(setting, title) + mark,
                     fmt(metasd["size"], 0) if metasd is not None else "–",
                     fmt(metasd["MRR"]) if metasd is not None else "–", str(r["best alternative (valid)"]),
                     fmt(alt["MRR"]) if alt is not None else "–", fmt(r["test MRR Δ"]), str(r["95% interval"]),
                     fmt(r["seeds"], 0), str(r["verdict"])])
    n = len(rows)
    text = [f"MetaSD's pruned student against the best model of the same non-zero parameter count that is "
            f"parameterised separately (chosen on validation MRR among KD, DML, w/o P, a dense model trained "
            f"alone, one-shot pruning and prune + fine-tune), test MRR, paired by seed "
            f"({site.table_link(name)}, {site.notebook_link('08')}):", "",
            markdown_table(["dataset / source rank", "non-zeros", "MetaSD MRR", "best alternative", "its MRR",
                            "Δ test MRR (MetaSD − alt.)", "95% interval", "seeds", "verdict"], rows), "",
            f"In **{below} of {n}** settings the interval lies below 0 (the separately parameterised model is "
            f"better), in **{above} of {n}** above 0 (MetaSD better), in {n - below - above} it includes 0."]
    if marked:
        text.append(f"{DAGGER} a run of this setting stopped at its epoch budget (see its table).")
    if "equal_size_mrr_vs_size" in site.figures:
        text += ["", "```{figure} figures/equal_size_mrr_vs_size.png", ":width: 90%", "",
                 f"Test MRR against size ({site.figure_link('equal_size_mrr_vs_size', 'figure page')}).", "```"]
    return "\n".join(text)


def official_tables(tables_dir: Path) -> list[str]:
    """The names of notebook 07's main tables (``official_code_<dataset>``), selection tables left out."""
    return sorted(p.stem for p in tables_dir.glob("official_code_*.csv") if "_selection_" not in p.stem)


def official_code_finding(site: Site) -> str:
    """(b) The official code's evaluation: the pruned student scored as the paper's tables do
    (rate 0.9, pruned entity table) and as the official code does (rate 0.8, the unmasked entity
    table), the share of the source's parameters each reads, from notebook 07's tables."""
    names = official_tables(site.tables_dir)
    if not names:
        return site.note("official_code_<dataset>")
    rows, lines, shares = [], [], []
    for name in names:
        frame = site.table(name)
        if frame is None:
            lines.append(site.note(name))
            continue
        measured = frame[frame["cell"] == "measured"]
        if measured.empty:
            lines.append(f"*Table {site.table_link(name)}: no run trained yet ({len(frame)} rows "
                         f"'{NOT_TRAINED}' or published only).*")
            continue
        dataset = name.removeprefix("official_code_")
        for recipe, group in measured[measured["selected on"] == "valid"].groupby("row", sort=False):
            def cell(mode: str, rate: float) -> pd.Series | None:
                hit = group[(group["eval"] == mode) & (group["rate"].astype(float) == rate)]
                return None if hit.empty else hit.iloc[0]
            paper, official = cell("pruned", 0.9), cell("official_dense", 0.8)
            if official is not None:
                shares.append(float(official["read / source"]))
            rows.append([site.table_link(name, dataset), str(recipe),
                         *(["–", "–"] if paper is None else [fmt(paper["MRR"]), f"{paper['read / source']:.0%}"]),
                         *(["–", "–"] if official is None else [fmt(official["MRR"]),
                                                                f"{official['read / source']:.0%}"])])
    text = [f"The official MetaSD code evaluates the pruned student against the *unmasked* entity table and "
            f"at pruning rate 0.8 instead of the trained 0.9 ({site.notebook_link('07')}). Both recipes "
            f"(the paper's equations, the official code's training), selected on validation MRR:"]
    if rows:
        text += ["", markdown_table(["dataset", "recipe", "MRR: paper's evaluation (pruned, 0.9)", "parameters read",
                                     "MRR: official evaluation (dense, 0.8)", "parameters read"], rows)]
        text += ["", f"The official evaluation reads **{min(shares):.0%}–{max(shares):.0%}** of the source's "
                 f"parameters, not the 10% of the paper's size column."] if shares else []
    else:
        text += ["", "*No run of notebook 07 is trained for this profile.*"]
    if lines:
        text += [""] + [f"- {line}" for line in lines]
    if "official_code_mrr_vs_read" in site.figures:
        text += ["", f"MRR against parameters read: {site.figure_link('official_code_mrr_vs_read', 'figure')}."]
    return "\n".join(text)


def _pairs(frame: pd.DataFrame, first: str, second: str) -> list[tuple[str, int, pd.Series, pd.Series]]:
    """``(model, dim, row of first, row of second)`` for every (model, dim) with both methods measured."""
    out = []
    for (model, dim), group in frame.groupby(["model", "dim"], sort=False):
        a, b = group[group["method"] == first], group[group["method"] == second]
        if not a.empty and not b.empty and pd.notna(a.iloc[0]["MRR"]) and pd.notna(b.iloc[0]["MRR"]):
            out.append((str(model), int(dim), a.iloc[0], b.iloc[0]))
    return out


def _mark(row: pd.Series) -> str:
    return DAGGER if DAGGER in str(row.get("converged", "")) else ""


def distile_stage2_finding(site: Site) -> str:
    """(c) DistilE's stage 2 (teacher and student adapting to each other): Table 6's DS against its
    stage-1-only ablation (−S2), and Table 3's DS against the student trained alone (no-DS), each
    difference beside the paper's, from notebook 06's ``distile_table6`` and ``distile_table3``."""
    text = [f"From {site.notebook_link('06')}; differences of the tables' means (the notebook pairs them by "
            f"seed with 95% intervals)."]
    table6 = site.table("distile_table6")
    if table6 is None:
        text += ["", site.note("distile_table6")]
    else:
        pairs = _pairs(table6, "DS", "-S2")
        missing = int((table6["converged"].astype(str) == NOT_TRAINED).sum())
        rows = [[model, str(dim), fmt(ds["MRR"]) + _mark(ds), fmt(s1["MRR"]) + _mark(s1),
                 fmt(ds["MRR"] - s1["MRR"]), fmt(ds["MRR paper"] - s1["MRR paper"])] for model, dim, ds, s1 in pairs]
        hurt = sum(ds["MRR"] < s1["MRR"] for _, _, ds, s1 in pairs)
        text += ["", f"**Stage 2** ({site.table_link('distile_table6', 'Table 6')}: DS, both stages, against −S2, "
                 f"stage 1 only; {missing} of {len(table6)} rows not trained yet):"]
        if rows:
            text += ["", markdown_table(["model", "dim", "DS MRR", "−S2 MRR", "Δ (DS − −S2)", "Δ paper"], rows), "",
                     f"Stage 2 lowers the student's test MRR in **{hurt} of {len(rows)}** measured pairs "
                     f"(the paper: {sum(ds['MRR paper'] < s1['MRR paper'] for _, _, ds, s1 in pairs)} of "
                     f"{len(rows)})."]
        else:
            text += ["", "*No (model, dim) of Table 6 has both DS and −S2 measured yet.*"]
    table3 = site.table("distile_table3")
    if table3 is None:
        text += ["", site.note("distile_table3")]
    else:
        pairs = _pairs(table3, "DS", "no-DS")
        rows = [[model, str(dim), fmt(no["MRR"]) + _mark(no), fmt(ds["MRR"]) + _mark(ds), fmt(ds["MRR"] - no["MRR"]),
                 fmt(ds["MRR paper"] - no["MRR paper"])] for model, dim, ds, no in pairs]
        gains = sum(ds["MRR"] > no["MRR"] for _, _, ds, no in pairs)
        paper_gains = sum(ds["MRR paper"] > no["MRR paper"] for _, _, ds, no in pairs)
        text += ["", f"**Both stages against no distillation** ({site.table_link('distile_table3', 'Table 3')}):"]
        if rows:
            text += ["", markdown_table(["model", "dim", "no-DS MRR", "DS MRR", "Δ (DS − no-DS)", "Δ paper"], rows), "",
                     f"DS is above no-DS in **{gains} of {len(rows)}** pairs (the paper: {paper_gains} of "
                     f"{len(rows)})."]
        else:
            text += ["", "*No (model, dim) of Table 3 has both DS and no-DS measured yet.*"]
    if _budget(table6) or _budget(table3):
        text += ["", f"{DAGGER} the run stopped at its epoch budget: an unfinished training, not a result."]
    for figure in ("distile_table3_curves", "distile_figure2"):
        if figure in site.figures:
            text += ["", f"Figure: {site.figure_link(figure)}."]
    return "\n".join(text)


def coverage_table(site: Site) -> str:
    """Every saved table: rows, rows measured (an MRR), rows not trained yet, rows marked †."""
    rows = []
    for path in sorted(site.tables_dir.glob("*.csv")):
        frame = read_table(path)
        if frame is None:
            continue
        text = frame.astype(str)
        measured = str(int(frame["MRR"].notna().sum())) if "MRR" in frame else "–"
        missing = int(text.apply(lambda col: col.str.contains(NOT_TRAINED)).any(axis=1).sum())
        budget = int(text.apply(lambda col: col.str.contains(DAGGER)).any(axis=1).sum())
        number = notebook_of(path.stem)
        rows.append([site.table_link(path.stem), site.notebook_link(number) if number else "script",
                     str(len(frame)), measured, str(missing), str(budget)])
    if not rows:
        return f"*No table is saved for this profile (`{site.tables_dir.name}/` holds no csv).*"
    totals = [sum(int(r[i]) for r in rows if r[i] != "–") for i in (2, 3, 4, 5)]
    return "\n".join([markdown_table(["table", "from", "rows", "measured", NOT_TRAINED, f"{DAGGER} epoch budget"],
                                     rows), "", f"In all: {totals[0]} rows, {totals[1]} with a measured MRR, "
                      f"{totals[2]} not trained yet, {totals[3]} marked {DAGGER}."])


def guarded(finding: Callable[[Site], str], site: Site) -> str:
    """A finding's text, or one line naming the column it missed (a table saved in another layout)."""
    try:
        return finding(site)
    except KeyError as error:
        return f"*This finding could not be read from the saved tables: column {error} is missing.*"


def findings_page(profile: str, description: str, site: Site, provenance: list[str],
                  other_profiles: dict[str, int]) -> str:
    """The landing page: scope, what was reproduced and what not, findings (a)–(c), pages, provenance.

    ``other_profiles`` maps each profile's name to its number of run records (the paper and gpu
    profiles' zero is the reason their numbers are absent); ``provenance`` is a list of lines.
    """
    warning = ["```{warning}", "The smoke profile trains a tiny stand-in graph in minutes: its numbers exercise "
               "the code and say nothing about the papers.", "```", ""] if profile == "smoke" else []
    records = ", ".join(f"`{name}` {count}" for name, count in sorted(other_profiles.items()))
    toc = ["```{toctree}", ":maxdepth: 1", ":caption: Pages", ""]
    toc += [f"notebooks/{stem}" for stem in site.notebooks] + ["tables", "figures", "```"]
    return "\n".join([
        f"# Reproducing MetaSD and DistilE — findings (`{profile}` profile)", "", *warning,
        "## Scope of reproducibility", "", SCOPE, "",
        "## What was run", "",
        f"Profile `{profile}`: {description.strip()} One page per executed notebook follows (tables and figures "
        f"inline, each with its provenance footer); the saved tables and figures have pages of their own. Every "
        f"number on this page is read from `results/{profile}/tables/*.csv` when the site is built.", "",
        "## What was reproduced and what was not", "",
        "- **No GPU**: run records per profile: " + (records or "none") + ". The paper's settings (rank 2000, "
        "200–500 epochs) need a GPU; profiles without records are not reproduced here.",
        "- **CPU scale**: the ranks and epoch budgets of this profile are the description's above, far below the "
        "paper's; its tables test the mechanics and the early-training behaviour, not the converged numbers.",
        f"- **Unconverged runs** are marked {DAGGER}: the run stopped at its epoch budget before the convergence "
        f"rule; read its numbers as an unfinished training.",
        "- **Not trained yet**: rows whose runs have no record (too long for the CPU so far).", "",
        coverage_table(site), "",
        "## Findings of this study", "",
        "### (a) Equal size: a separately parameterised student against MetaSD's pruned one", "",
        guarded(equal_size_finding, site), "",
        "### (b) The official code's evaluation", "", guarded(official_code_finding, site), "",
        "### (c) DistilE's stage 2", "", guarded(distile_stage2_finding, site), "",
        "## Provenance", "", *[f"- {line}" for line in provenance], "", *toc, ""])


def tables_page(site: Site, shown: str | None = None) -> str:
    """Every saved table: its caption and text as saved (``<name>.md``), a link to its csv; ``shown``:
    the tables folder as the page names it (default: its absolute path)."""
    text = ["# Tables", "", f"The tables of `{shown or site.tables_dir}/` as saved (csv for download)."]
    paths = sorted(site.tables_dir.glob("*.csv"))
    if not paths:
        text += ["", "*No table is saved for this profile.*"]
    for path in paths:
        saved = path.with_suffix(".md")
        number = notebook_of(path.stem)
        body = saved.read_text().strip() if saved.is_file() else read_table(path).to_markdown(index=False)
        text += ["", f"({label('table', path.stem)})=", f"## {path.stem}", "",
                 f"{{download}}`{path.name} <tables/{path.name}>`"
                 + (f" · from {site.notebook_link(number)}" if number else ""), "", body]
    return "\n".join(text) + "\n"


def figures_page(site: Site) -> str:
    """Every saved figure (png)."""
    text = ["# Figures", "", "The figures as saved by the notebooks (each with its provenance footer)."]
    if not site.figures:
        text += ["", "*No figure is saved for this profile.*"]
    for name in site.figures:
        text += ["", f"({label('figure', name)})=", f"## {name}", "", f"![{name}](figures/{name}.png)"]
    return "\n".join(text) + "\n"
