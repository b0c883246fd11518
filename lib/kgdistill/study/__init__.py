"""The study layer: profiles, run plans, records -> tables and figures, and one module (or folder)
per notebook section. ``from kgdistill import study as S`` is the notebooks' facade
(:mod:`kgdistill.study.facade`, loaded on first use): ``S.Study``, ``S.save_table``, ...

Importing this package registers the profile sections that notebook modules own
(``official_code``, ``equal_size``, ``distile``, ``distile_in_table1``) with
:mod:`kgdistill.study.profile`, which itself knows none of them.
"""
from __future__ import annotations

import importlib

# the notebook sections register themselves with kgdistill.study.profile
from . import equal_size, official  # noqa: F401
from .distile import grid, in_table1  # noqa: F401


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    return getattr(importlib.import_module(f"{__name__}.facade"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(importlib.import_module(f"{__name__}.facade").__all__))
