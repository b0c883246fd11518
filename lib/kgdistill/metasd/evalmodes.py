"""How a pruned student is evaluated: our ``pruned`` mode and the official code's ``official_dense``.

A pruned student is a :class:`kgdistill.core.models.KBCModel` (the trained *source* tables ``entity``
(N, d_e) and ``relation`` (2R, d_r)) with boolean masks installed (``set_masks``). Two ways of
ranking with it, both scorers mapping queries (B, ≥2) int64 ``(anchor, relation, ...)`` to scores
(B, N) over all entities, as :mod:`kgdistill.core.evaluation` expects:

``pruned`` (what our Table 1 reports)
    every table the scorer reads is masked: query side ``(E⊙M_E)[h]``, ``(R⊙M_R)[r]`` and the
    candidate table ``E⊙M_E``. Equal to ``model.score_tails(q, masked=True)`` and to the
    official "sparse mode" (``mask2sparse.py`` then ``metasd.py -sparse_infer``).
``official_dense`` (the official README's "dense mode", ``PruneRelComplEx.score``)
    query side masked, ``(E⊙M_E)[h]`` and ``(R⊙M_R)[r]``, but the candidates are the UNMASKED
    entity table ``E``; see ``docs/official_code_audit.md``, point 1.

Either mode can be evaluated with the mask the student was trained with or with a mask recomputed
by :func:`kgdistill.core.pruning.magnitude_mask` at another pruning rate γ from the same source weights
(the official scripts evaluate at γ = 0.8 a model trained at 0.9). Nothing here changes the model:
masks are passed to the scorers, never installed.

Input errors (unknown mode, a mode for a model without masks, a rate outside (0, 1)) are
``ValueError``s naming the config field (see :data:`MODES_FIELD`, :data:`GAMMAS_FIELD`) and the
valid choices, so a config can be checked before training with :func:`validate_eval_options`.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch

from ..core.datasets import KGDataset
from ..core.evaluation import Scorer, evaluation_report
from ..core.models import KBCModel
from ..core.pruning import magnitude_mask

#: Student evaluation modes, the default first.
EVAL_MODES = ("pruned", "official_dense")
#: Config fields the integration adds (docs/official_code_audit.md, "Switches to add"); errors name them.
MODES_FIELD = "student_eval_modes"
GAMMAS_FIELD = "student_eval_gammas"

Masks = dict[str, torch.Tensor]


# --- validation ---------------------------------------------------------------------------------
def check_mode(mode: str, field: str = MODES_FIELD) -> str:
    """Return ``mode`` if it is one of :data:`EVAL_MODES`, else raise naming ``field`` and the choices."""
    if mode not in EVAL_MODES:
        raise ValueError(
            f"config field {field!r}: unknown student evaluation mode {mode!r}; choose from {list(EVAL_MODES)}"
        )
    return mode


def check_gamma(gamma: float, field: str = GAMMAS_FIELD) -> float:
    """Return ``gamma`` as float if it is a pruning rate in the open interval (0, 1), else raise."""
    try:
        value = float(gamma)
    except (TypeError, ValueError):
        raise ValueError(f"config field {field!r}: pruning rate must be a number in (0, 1), got {gamma!r}") from None
    if not (math.isfinite(value) and 0.0 < value < 1.0):
        raise ValueError(
            f"config field {field!r}: pruning rate {gamma!r} is outside (0, 1); give the fraction of weights "
            f"PRUNED, e.g. 0.8 keeps 20% (the official scripts' evaluation rate)"
        )
    return value


def check_pruned(model: KBCModel, mode: str, field: str = MODES_FIELD) -> None:
    """Raise unless ``model`` is a pruned student (masks installed): no student mode applies otherwise."""
    check_mode(mode, field)
    if not model.has_masks:
        raise ValueError(
            f"config field {field!r}: evaluation mode {mode!r} needs a pruned student (a model with pruning masks "
            f"installed), but this {type(model).__name__} has none; the modes {list(EVAL_MODES)} apply only to "
            f"methods whose student is the pruned source (metasd, metasd_wo_m)"
        )


def validate_eval_options(
    modes: Iterable[str],
    gammas: Iterable[float] = (),
    pruned_student: bool = True,
    modes_field: str = MODES_FIELD,
    gammas_field: str = GAMMAS_FIELD,
) -> None:
    """Config-level check, before any training: every mode known, every rate in (0, 1), and a
    student mode other than the default ``("pruned",)`` or any extra rate only for a run whose
    student is the pruned source (``pruned_student``)."""
    modes, gammas = tuple(modes), tuple(gammas)
    for mode in modes:
        check_mode(mode, modes_field)
    for gamma in gammas:
        check_gamma(gamma, gammas_field)
    if not pruned_student:
        if any(m != "pruned" for m in modes):
            raise ValueError(
                f"config field {modes_field!r}: {[m for m in modes if m != 'pruned']} apply only to a pruned student "
                f"(methods metasd, metasd_wo_m); leave {modes_field!r} at its default ('pruned',) for this method"
            )
        if gammas:
            raise ValueError(
                f"config field {gammas_field!r}: evaluation pruning rates apply only to a pruned student "
                f"(methods metasd, metasd_wo_m); leave {gammas_field!r} empty for this method"
            )


# --- masks ----------------------------------------------------------------------------------------
def masks_at_rate(model: KBCModel, gamma: float, field: str = GAMMAS_FIELD) -> Masks:
    """Global magnitude masks at pruning rate ``gamma`` over the model's source tables, NOT installed.

    Keeps exactly ⌈(1 − γ)·P⌉ weights (P = entity + relation elements; ties broken by position);
    the masks are bool, shaped like the tables, on their device.
    """
    return magnitude_mask(model.prunable(), check_gamma(gamma, field))


def student_masks(model: KBCModel, gamma: float | None = None, mode: str = "pruned") -> Masks:
    """The masks a student evaluation uses: the installed ones (``gamma`` None) or recomputed at ``gamma``."""
    check_pruned(model, mode)
    if gamma is None:
        return {"entity": model.entity_mask, "relation": model.relation_mask}
    return masks_at_rate(model, gamma)


# --- scorers ------------------------------------------------------------------------------------
def student_scorer(
    model: KBCModel, mode: str = "pruned", gamma: float | None = None, masks: Masks | None = None
) -> Scorer:
    """Scorer (queries (B, ≥2) -> scores (B, N)) of the student in ``mode``.

    ``masks`` (bool, keyed ``entity``/``relation``) override the installed ones; else ``gamma``
    recomputes them (:func:`masks_at_rate`); else the installed masks are used. The scorer reads
    the model's current weights at every call (nothing is snapshotted or written).
    """
    check_pruned(model, mode)
    if masks is None:
        masks = student_masks(model, gamma, mode)
    m_e, m_r = masks["entity"], masks["relation"]
    if m_e.shape != model.entity.shape or m_r.shape != model.relation.shape:
        raise ValueError(
            f"masks of shapes {tuple(m_e.shape)}, {tuple(m_r.shape)} do not fit the tables "
            f"{tuple(model.entity.shape)}, {tuple(model.relation.shape)}; compute them with masks_at_rate(model, gamma)"
        )

    def score(queries: torch.Tensor) -> torch.Tensor:
        h, r = queries[:, 0], queries[:, 1]
        entity, relation = model.entity, model.relation
        query = model._query(entity[h] * m_e[h], relation[r] * m_r[r])
        table = entity * m_e if mode == "pruned" else entity
        return query @ model._candidates(table).T

    return score


def evaluate_student(
    model: KBCModel,
    dataset: KGDataset,
    mode: str = "pruned",
    gamma: float | None = None,
    split: str = "test",
    tie_policy: str = "pessimistic",
    batch_size: int = 500,
    subsets: dict[str, torch.Tensor | None] | None = None,
    per_relation: bool = False,
) -> dict:
    """Filtered metrics of the student in ``mode`` (at ``gamma`` if given) and what it reads.

    Returns ``{"mode", "gamma" (None = the trained mask), "kept_fraction" (of the mask), "read"
    (:func:`read_counts`), "metrics" (:func:`kgdistill.core.evaluation.evaluation_report`: "all" and
    any ``subsets``)}``. The model is left exactly as it was.
    """
    masks = student_masks(model, gamma, mode)
    scorer = student_scorer(model, mode, masks=masks)
    with torch.no_grad():
        report = evaluation_report(
            scorer, dataset, split, tie_policy, batch_size, subsets=subsets, per_relation=per_relation,
            device=model.entity.device,
        )
    kept = sum(int(m.count_nonzero()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    return {
        "mode": mode,
        "gamma": None if gamma is None else float(gamma),
        "kept_fraction": kept / total,
        "read": read_counts(model, mode, masks=masks),
        "metrics": report,
    }


def student_eval_rows(
    model: KBCModel,
    dataset: KGDataset,
    modes: Iterable[str],
    gammas: Iterable[float],
    train_gamma: float,
    tie_policy: str = "pessimistic",
    batch_size: int = 500,
) -> list[dict]:
    """Test evaluation of a pruned student in each of ``modes``, at its training rate and at each
    extra rate of ``gammas``: rows ``{mode, gamma, metrics (all), read}`` as records store them."""
    rows = []
    for gamma in (None, *gammas):
        for mode in modes:
            result = evaluate_student(model, dataset, mode, gamma, "test", tie_policy, batch_size)
            rows.append({"mode": mode, "gamma": float(train_gamma if gamma is None else gamma),
                         "metrics": result["metrics"]["all"], "read": result["read"]})
    return rows


# --- what each mode reads -----------------------------------------------------------------------
@torch.no_grad()
def read_counts(model: KBCModel, mode: str = "pruned", gamma: float | None = None, masks: Masks | None = None) -> dict:
    """Number of parameter values the student's scorer in ``mode`` reads over a whole evaluation.

    Every entity can be a query anchor (tail queries read heads, head queries are reciprocal tail
    queries reading tails) and every relation row a query relation, so a full evaluation reads:

    * ``pruned``: the kept (mask-true) positions of the entity columns used by the query or the
      candidates, plus the kept positions of the relation table = the mask's non-zeros
      (for CP, ComplEx and RESCAL every column is used).
    * ``official_dense``: the entity columns read as candidates come from the DENSE table, so all
      their non-zero weights count; entity columns read only on the query side (CP's lhs half)
      count their kept positions; plus the kept positions of the relation table (relations are
      read only, masked, on the query side). For ComplEx and RESCAL that is
      ``nnz(E) + |M_R|``: the whole dense entity table, ~97% of P on FB15k-237 at rank 2000.

    A position counted for both sides is counted once. Returns ``{"entity", "relation", "total",
    "dense" (P, all elements of both tables), "fraction" (total / P)}``.
    """
    if masks is None:
        masks = student_masks(model, gamma, mode)
    check_pruned(model, mode)
    query_cols, candidate_cols, relation_cols = columns_read(model)
    m_e, m_r = masks["entity"].bool(), masks["relation"].bool()
    if mode == "pruned":
        entity_read = m_e & (query_cols | candidate_cols)
    else:
        entity_read = (m_e & query_cols) | ((model.entity != 0) & candidate_cols)
    relation_read = m_r & relation_cols
    n_entity, n_relation = int(entity_read.count_nonzero()), int(relation_read.count_nonzero())
    dense = model.entity.numel() + model.relation.numel()
    return {"entity": n_entity, "relation": n_relation, "total": n_entity + n_relation, "dense": dense,
            "fraction": (n_entity + n_relation) / dense}


def columns_read(model: KBCModel) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Which table columns the backbone's kernels depend on: ``(entity columns read by the query,
    entity columns read as candidates, relation columns read by the query)``, bool (d_e,), (d_e,),
    (d_r,) on the tables' device. Found by differentiating the kernels at a random point (a column
    whose derivative vanishes there is unused; the chance of an accidental zero is nil)."""
    g = torch.Generator().manual_seed(0)
    d_e, d_r = model.entity.shape[1], model.relation.shape[1]
    with torch.enable_grad():
        h = (torch.rand(3, d_e, generator=g, dtype=torch.float64) + 0.5).requires_grad_()
        r = (torch.rand(3, d_r, generator=g, dtype=torch.float64) + 0.5).requires_grad_()
        e = (torch.rand(4, d_e, generator=g, dtype=torch.float64) + 0.5).requires_grad_()
        query = model._query(h, r)
        g_h, g_r = torch.autograd.grad(
            (query * (torch.rand(query.shape, generator=g, dtype=torch.float64) + 0.5)).sum(), (h, r)
        )
        cand = model._candidates(e)
        (g_e,) = torch.autograd.grad(
            (cand * (torch.rand(cand.shape, generator=g, dtype=torch.float64) + 0.5)).sum(), (e,)
        )
    device = model.entity.device
    return ((g_h != 0).any(0).to(device), (g_e != 0).any(0).to(device), (g_r != 0).any(0).to(device))
