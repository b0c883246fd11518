"""Notebook 07: the paper-equations recipe against the official code's, evaluated and selected both ways.

The profile section ``official_code`` (see :data:`SCHEMA_NODE`, :func:`section`) names the
datasets, the recipes (table label -> profile recipe; typically ``MetaSD (paper equations)`` and
``MetaSD (official code)``, docs/official_code_audit.md), the student evaluation modes and rates,
and the test-set rule; optional ``small_graphs`` add a small benchmark trained with the same
recipes; ``train_missing: false`` makes the notebook read the records that exist instead of
training the missing runs. :func:`official_specs` turns it into runs;
:func:`check_official_section` rejects, at profile load time, a mode or rate the recipes do not evaluate.

Each run's *cells* (:func:`run_cells`) are its student's test metrics and the non-zero
parameters the scorer reads, for every eval mode x eval rate x selection:

``validation``
    the validation-selected epoch (our rule): the record's ``student_eval`` rows, stored for every
    mode and rate at that epoch.
``test``
    the epoch the section's ``test_rule`` picks from the per-evaluation TEST metrics
    (:func:`kgdistill.study.official.selection.selection_summary`; default the official ``metasd.py`` rule: the
    last evaluation whose dense source's test MRR exceeds 0.3948). The history stores test metrics
    of the pruned student at the training rate only, so the other modes and rates exist at that
    epoch only when it is the validation-selected one; otherwise the cell is *not available*
    (never reconstructed). These rows measure the official rule's optimism; every other table of
    the study selects on validation only.

"""
from .cells import (  # noqa: F401
    MEASURED,
    NO_EPOCH,
    NOT_STORED,
    NOT_TRAINED,
    SELECTION_LABELS,
    dataset_table,
    missing_cells,
    reading,
    run_cells,
    selection_table,
    source_point,
)
from .results import OfficialResults  # noqa: F401
from .section import (  # noqa: F401
    DEFAULTS,
    OFFICIAL_SECTION,
    RULE_MODELS,
    SCHEMA_NODE,
    SELECTIONS,
    TEST_RULES,
    check_official_section,
    official_specs,
    section,
)
