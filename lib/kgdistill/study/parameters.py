"""Notebook parameters: the names a notebook declares, and refusing the names it does not.

papermill only warns ("Passed unknown parameter: result_dir") when ``-p`` names a parameter the
notebook's cell tagged ``parameters`` does not assign, then runs the notebook with its defaults:
a typo quietly writes (and trains) somewhere else. Two checks close that gap:

* :func:`declared_parameters` / :func:`check_parameters`: ``scripts/reproduce.py`` checks the
  parameters it will pass against each notebook's tagged cell before running anything;
* :func:`check_injected_parameters`: inside a kernel that papermill started directly
  (``papermill in.ipynb out.ipynb -p result_dir X``), :class:`kgdistill.study.Study` - built in
  every notebook's first cell after the parameters - compares the names of papermill's
  injected cell (its first line is ``# Parameters``) with those of the cell executed just before
  it (the tagged cell, where papermill puts its cell after), and stops the notebook naming the
  closest declared name. Outside such a kernel it does nothing.
"""
from __future__ import annotations

import ast
import json
import os
import sys
from pathlib import Path
from typing import Iterable

from ..protocol.configbase import unknown_keys_message

#: the first line of the cell papermill injects (``papermill.translators.Translator.codify``)
INJECTED_MARK = "# Parameters"
#: names papermill itself may inject (``--inject-paths``), declared by no notebook
PAPERMILL_NAMES = frozenset({"PAPERMILL_INPUT_PATH", "PAPERMILL_OUTPUT_PATH"})


class UnknownParameterError(ValueError):
    """A parameter name the notebook does not declare (a typo would otherwise be ignored)."""


def assigned_names(source: str) -> list[str]:
    """The names a cell's top-level statements assign (``x = ...``, ``x: int = ...``), in order."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    names: list[str] = []
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) else []
        for target in targets:
            for leaf in ast.walk(target):
                if isinstance(leaf, ast.Name) and leaf.id not in names:
                    names.append(leaf.id)
    return names


def declared_parameters(notebook: str | os.PathLike) -> list[str]:
    """The names assigned in the notebook's cell tagged ``parameters`` (empty when it has none)."""
    cells = json.loads(Path(notebook).read_text())["cells"]
    for cell in cells:
        if cell.get("cell_type") == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            source = cell["source"]
            return assigned_names(source if isinstance(source, str) else "".join(source))
    return []


def check_parameters(given: Iterable[str], declared: Iterable[str], where: str, outcome: str = "nothing was run"
                     ) -> None:
    """Raise :class:`UnknownParameterError` when ``given`` has a name that ``declared`` lacks,
    naming the closest declared one (``where``: the notebook; ``outcome``: what happens now)."""
    declared = list(declared)
    unknown = sorted(set(given) - set(declared) - PAPERMILL_NAMES)
    if unknown:
        raise UnknownParameterError(f"{where}: {unknown_keys_message(unknown, declared, what='notebook parameter')} "
                                    f"(those its cell tagged 'parameters' assigns); {outcome}")


def injected_cells(history: list[str]) -> tuple[str, str] | None:
    """``(declared cell, injected cell)``: papermill's last injected cell in a kernel's input
    history (``In``) and the cell executed just before it; None when there is none."""
    for index in range(len(history) - 1, 0, -1):
        source = history[index] or ""
        if source.splitlines()[:1] == [INJECTED_MARK]:
            return history[index - 1] or "", source
    return None


def check_injected_parameters() -> None:
    """In a kernel whose history holds papermill's injected cell, refuse injected names that the
    tagged parameters cell before it does not assign (:func:`check_parameters`)."""
    if "IPython" not in sys.modules:
        return
    from IPython import get_ipython

    shell = get_ipython()
    history = getattr(shell, "user_ns", {}).get("In") if shell is not None else None
    found = injected_cells(list(history)) if isinstance(history, list) else None
    if found is None:
        return
    declared, injected = found
    check_parameters(assigned_names(injected), assigned_names(declared), "papermill -p",
                     "the notebook stops before it reads or writes anything")
