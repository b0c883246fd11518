"""The DistilE experiments a profile drives, in one place for notebooks and scripts.

A profile's ``distile:`` section drives notebook 06 (the DistilE paper's Tables 3-6 and Figures
2-3; :mod:`.grid`), its ``distile_in_table1:`` section adds DistilE as a row of the MetaSD
paper's Table 1 (notebook 01; :mod:`.in_table1`), and :mod:`.planning` lists the runs of both
before any is trained. This module re-exports what callers use from the three, so that
``from kgdistill.study.distile.experiments import DistilEStudy, table1_rows, distile_planned_runs`` keeps
working; it reads the profile through :mod:`kgdistill.study.profile`, never the notebook facade.
"""
from __future__ import annotations

from .grid import DISTILE_METRICS, LINK_TABLES, PAPER_STUDENT_DIMS, PAPER_TEACHER_DIM, DistilEStudy, compare, paper_dims
from .in_table1 import (
    TABLE1_DEFAULTS,
    TABLE1_SECTION,
    Table1Rows,
    check_table1_section,
    dim_within,
    dims_beside_metasd,
    kge_dense_size,
    metasd_sizes,
    table1_rows,
    table1_section,
)
from .planning import distile_planned_runs, table1_planned_runs

__all__ = [
    "LINK_TABLES", "DISTILE_METRICS", "PAPER_STUDENT_DIMS", "PAPER_TEACHER_DIM", "TABLE1_DEFAULTS", "TABLE1_SECTION",
    "DistilEStudy", "Table1Rows", "check_table1_section", "compare", "dim_within", "dims_beside_metasd",
    "kge_dense_size", "metasd_sizes", "paper_dims", "distile_planned_runs", "table1_planned_runs", "table1_rows",
    "table1_section",
]
