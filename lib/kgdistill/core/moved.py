"""Where the modules of the flat layout (one folder of 36 modules, until December 2026) live now.

Used twice: :func:`kgdistill.core.records.load_torch` unpickles checkpoints and exported files
written by the old layout (they name classes by module path), and ``kgdistill.__getattr__`` keeps
``from kgdistill import figures`` (a submodule name of the old layout) working.
"""
from __future__ import annotations

#: old module (relative to ``kgdistill``) -> its module now
MOVED: dict[str, str] = {
    "environment": "core.environment",
    "datasets": "core.datasets",
    "models": "core.models",
    "regularizers": "core.regularizers",
    "pruning": "core.pruning",
    "evaluation": "core.evaluation",
    "records": "core.records",
    "configbase": "protocol.configbase",
    "loop": "protocol.loop",
    "runner": "protocol.runner",
    "config": "metasd.config",
    "training": "metasd.training",
    "distillation": "metasd.distillation",
    "metastep": "metasd.metastep",
    "distill_losses": "metasd.distill_losses",
    "evalmodes": "metasd.evalmodes",
    "compression": "compression.oneshot",
    "sparse": "compression.sparse",
    "profile": "study.profile",
    "tables": "study.tables",
    "outputs": "study.outputs",
    "latex": "study.latex",
    "figures": "study.figures",
    "study": "study.facade",
    "analysis": "study.analysis",
    "costs": "study.costs",
    "footprint": "study.footprint",
    "official": "study.official",
    "selection": "study.official.selection",
    "equal_size": "study.equal_size",
    "equal_size_study": "study.equal_size_study",
    "plan": "study.plan",
    "queue": "study.queue",
    "launch": "study.launch",
    "distile.grid": "study.distile.grid",
    "distile.curves": "study.distile.curves",
    "distile.claims": "study.distile.claims",
    "distile.in_table1": "study.distile.in_table1",
    "distile.planning": "study.distile.planning",
    "distile.experiments": "study.distile.experiments",
}


def current_module(name: str) -> str:
    """The module path of today's layout for ``name``, a module path of either layout
    (``kgdistill.config`` -> ``kgdistill.metasd.config``; unknown names are returned unchanged)."""
    prefix = "kgdistill."
    if not name.startswith(prefix):
        return name
    old = name[len(prefix):]
    return prefix + MOVED[old] if old in MOVED else name
