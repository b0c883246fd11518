"""Student evaluation modes: official_dense and pruned against hand-computed scores, read counts by
hand, evaluation at another pruning rate without touching the model, input errors naming fields."""
from __future__ import annotations

import math

import pytest
import torch

from kgdistill.core.evaluation import evaluation_report
from kgdistill.core.models import build_model
from kgdistill.core.pruning import kept_count, magnitude_mask
from kgdistill.metasd.evalmodes import (
    EVAL_MODES,
    GAMMAS_FIELD,
    MODES_FIELD,
    columns_read,
    evaluate_student,
    masks_at_rate,
    read_counts,
    student_scorer,
    validate_eval_options,
)

N_ENT, N_REL, RANK = 7, 3, 4


def _pruned_model(name: str, gamma: float = 0.6, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(name, N_ENT, N_REL, RANK, init_scale=1.0).double()
    model.set_masks(magnitude_mask(model.prunable(), gamma))
    return model


def _queries(seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack(
        [
            torch.randint(N_ENT, (6,), generator=g),
            torch.randint(2 * N_REL, (6,), generator=g),
            torch.randint(N_ENT, (6,), generator=g),
        ],
        1,
    )


def _brute_force(name: str, head_table, relation_table, candidate_table, queries) -> torch.Tensor:
    """Scores (B, N) written out per backbone formula, one (query, candidate) pair at a time."""
    k = RANK
    out = torch.zeros(len(queries), N_ENT, dtype=torch.float64)
    for b, (h, r, _) in enumerate(queries.tolist()):
        hv, rv = head_table[h], relation_table[r]
        for t in range(N_ENT):
            tv = candidate_table[t]
            if name == "ComplEx":  # Re(<h, r, conj(t)>)
                h_re, h_im, r_re, r_im, t_re, t_im = hv[:k], hv[k:], rv[:k], rv[k:], tv[:k], tv[k:]
                s = ((h_re * r_re - h_im * r_im) * t_re + (h_re * r_im + h_im * r_re) * t_im).sum()
            elif name == "CP":  # <h_lhs, r, t_rhs>
                s = (hv[:k] * rv * tv[k:]).sum()
            else:  # RESCAL: h^T M_r t
                s = hv @ rv.view(k, k) @ tv
            out[b, t] = s
    return out


@pytest.mark.parametrize("name", ["ComplEx", "CP", "RESCAL"])
def test_official_dense_masks_the_query_and_scores_against_the_dense_entity_table(name):
    model = _pruned_model(name)
    e_masked, r_masked = model.entity * model.entity_mask, model.relation * model.relation_mask
    q = _queries()
    expected = _brute_force(name, e_masked.detach(), r_masked.detach(), model.entity.detach(), q)
    with torch.no_grad():
        got = student_scorer(model, "official_dense")(q)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    # and it is neither the pruned student nor the dense source
    with torch.no_grad():
        assert not torch.allclose(got, model.score_tails(q, masked=True))
        assert not torch.allclose(got, model.score_tails(q))


@pytest.mark.parametrize("name", ["ComplEx", "CP", "RESCAL"])
def test_pruned_mode_masks_every_table(name):
    model = _pruned_model(name)
    e_masked, r_masked = model.entity * model.entity_mask, model.relation * model.relation_mask
    q = _queries()
    expected = _brute_force(name, e_masked.detach(), r_masked.detach(), e_masked.detach(), q)
    with torch.no_grad():
        got = student_scorer(model, "pruned")(q)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
        assert torch.equal(got, model.score_tails(q, masked=True))  # the library's masked scoring, bit for bit


@pytest.mark.parametrize("name", ["ComplEx", "CP", "RESCAL"])
def test_with_all_weights_kept_both_modes_are_the_dense_model(name):
    model = _pruned_model(name)
    ones = {"entity": torch.ones_like(model.entity, dtype=torch.bool),
            "relation": torch.ones_like(model.relation, dtype=torch.bool)}
    q = _queries()
    with torch.no_grad():
        for mode in EVAL_MODES:
            torch.testing.assert_close(student_scorer(model, mode, masks=ones)(q), model.score_tails(q))


def test_columns_read_per_backbone():
    for name, query_e, cand_e in [("ComplEx", "1" * 8, "1" * 8), ("CP", "11110000", "00001111"),
                                  ("RESCAL", "1111", "1111")]:
        q_cols, c_cols, r_cols = columns_read(_pruned_model(name))
        assert "".join(str(int(x)) for x in q_cols) == query_e
        assert "".join(str(int(x)) for x in c_cols) == cand_e
        assert bool(r_cols.all())


def test_read_counts_by_hand_complex():
    # 3 entities, 1 relation (2 rows with its reciprocal), rank 2: entity (3, 4), relation (2, 4)
    model = build_model("ComplEx", 3, 1, 2).double()
    with torch.no_grad():
        # 10 non-zeros
        model.entity.copy_(torch.tensor([[1.0, 0.0, 2.0, 3.0], [4.0, 5.0, 0.0, 6.0], [7.0, 8.0, 9.0, 1.0]]))
        model.relation.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]))
    m_e = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)  # 6 kept
    m_r = torch.tensor([[0, 0, 1, 0], [1, 0, 0, 0]], dtype=torch.bool)  # 2 kept
    model.set_masks({"entity": m_e, "relation": m_r})
    pruned = read_counts(model, "pruned")
    assert (pruned["entity"], pruned["relation"], pruned["total"], pruned["dense"]) == (6, 2, 8, 20)
    assert pruned["fraction"] == pytest.approx(8 / 20)
    # official_dense: the whole dense entity table's non-zeros (10; masked query rows are a subset) + 2
    dense = read_counts(model, "official_dense")
    assert (dense["entity"], dense["relation"], dense["total"]) == (10, 2, 12)


def test_read_counts_by_hand_cp():
    # CP rank 2: entity rows [lhs | rhs] (3, 4), relation (2, 2); queries read lhs (masked), candidates rhs (dense)
    model = build_model("CP", 3, 1, 2).double()
    with torch.no_grad():
        model.entity.copy_(torch.tensor([[1.0, 2.0, 0.0, 3.0], [4.0, 0.0, 5.0, 6.0], [7.0, 8.0, 9.0, 0.0]]))
        model.relation.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    m_e = torch.tensor([[1, 0, 0, 1], [0, 0, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    m_r = torch.tensor([[0, 1], [0, 0]], dtype=torch.bool)
    model.set_masks({"entity": m_e, "relation": m_r})
    assert read_counts(model, "pruned")["total"] == 6 + 1
    # lhs kept positions: row0 col0, row2 cols 0,1 -> 3; rhs non-zeros: (0,3) (1,2) (1,3) (2,2) -> 4; relation 1
    dense = read_counts(model, "official_dense")
    assert (dense["entity"], dense["relation"], dense["total"]) == (3 + 4, 1, 8)


def test_rate_08_keeps_ceil_02_p_and_leaves_the_model_alone():
    model = _pruned_model("ComplEx", gamma=0.9)
    mask_before = {"entity": model.entity_mask.clone(), "relation": model.relation_mask.clone()}
    weights_before = {"entity": model.entity.detach().clone(), "relation": model.relation.detach().clone()}
    total = model.entity.numel() + model.relation.numel()
    masks = masks_at_rate(model, 0.8)
    assert sum(int(m.sum()) for m in masks.values()) == kept_count(total, 0.8) == math.ceil(0.2 * total)
    counts = read_counts(model, "pruned", gamma=0.8)
    assert counts["total"] == kept_count(total, 0.8)
    q = _queries()
    with torch.no_grad():
        s = student_scorer(model, "official_dense", gamma=0.8)(q)
    assert (torch.equal(model.entity_mask, mask_before["entity"])
            and torch.equal(model.relation_mask, mask_before["relation"]))
    assert (torch.equal(model.entity, weights_before["entity"])
            and torch.equal(model.relation, weights_before["relation"]))
    # the rate-0.8 scorer is the scorer of the 0.8 mask
    with torch.no_grad():
        assert torch.equal(s, student_scorer(model, "official_dense", masks=masks)(q))


def test_evaluate_student_at_another_rate_equals_installing_that_mask(umls):
    torch.manual_seed(0)
    model = build_model("ComplEx", umls.n_entities, umls.n_relations, 8, init_scale=0.1)
    model.set_masks(magnitude_mask(model.prunable(), 0.9))
    trained_mask = model.entity_mask.clone()
    result = evaluate_student(model, umls, "official_dense", gamma=0.8, split="valid")
    assert torch.equal(model.entity_mask, trained_mask)
    assert result["mode"] == "official_dense" and result["gamma"] == 0.8
    assert result["kept_fraction"] == pytest.approx(0.2, abs=1e-3)
    # by hand: a copy with the 0.8 mask installed, scored query-masked against the dense table
    copy = build_model("ComplEx", umls.n_entities, umls.n_relations, 8)
    copy.load_state_dict({"entity": model.entity.detach(), "relation": model.relation.detach()}, strict=False)
    copy.set_masks(magnitude_mask(copy.prunable(), 0.8))
    e_m, r_m = copy.entity * copy.entity_mask, copy.relation * copy.relation_mask

    def by_hand(q):
        return copy._query(e_m[q[:, 0]], r_m[q[:, 1]]) @ copy.entity.T

    with torch.no_grad():
        expected = evaluation_report(by_hand, umls, "valid")["all"]
    assert result["metrics"]["all"] == pytest.approx(expected)
    dense_read = result["read"]
    assert dense_read["entity"] == int((model.entity != 0).sum())  # ComplEx: the whole dense entity table
    pruned = evaluate_student(model, umls, "pruned", split="valid")
    assert (pruned["gamma"] is None
            and pruned["read"]["total"] == int(model.entity_mask.sum() + model.relation_mask.sum()))


def test_bad_inputs_name_the_field_and_the_choices():
    dense = build_model("ComplEx", N_ENT, N_REL, RANK)
    for mode in EVAL_MODES:
        with pytest.raises(ValueError, match=f"{MODES_FIELD}.*pruned student"):
            student_scorer(dense, mode)
    with pytest.raises(ValueError, match=MODES_FIELD):
        read_counts(dense, "official_dense")
    pruned = _pruned_model("ComplEx")
    with pytest.raises(ValueError, match=rf"{MODES_FIELD}.*'sparse'.*\['pruned', 'official_dense'\]"):
        student_scorer(pruned, "sparse")
    for bad in (0, 0.0, 1, 1.0, 1.5, -0.2, float("nan"), "x"):
        with pytest.raises(ValueError, match=rf"{GAMMAS_FIELD}.*\(0, 1\)"):
            student_scorer(pruned, "pruned", gamma=bad)
    with pytest.raises(ValueError, match=rf"{GAMMAS_FIELD}.*\(0, 1\)"):
        masks_at_rate(pruned, None)  # student_scorer's gamma=None means "the trained mask"
    with pytest.raises(ValueError, match="do not fit"):
        student_scorer(pruned, "pruned",
                       masks={"entity": torch.ones(2, 2, dtype=torch.bool), "relation": pruned.relation_mask})


def test_validate_eval_options_before_training():
    validate_eval_options(("pruned", "official_dense"), (0.8,), pruned_student=True)
    validate_eval_options(("pruned",), (), pruned_student=False)
    with pytest.raises(ValueError, match=rf"{MODES_FIELD}.*official_dense.*pruned student"):
        validate_eval_options(("pruned", "official_dense"), pruned_student=False)
    with pytest.raises(ValueError, match=rf"{GAMMAS_FIELD}.*pruned student"):
        validate_eval_options(("pruned",), (0.8,), pruned_student=False)
    with pytest.raises(ValueError, match=rf"{GAMMAS_FIELD}.*outside \(0, 1\)"):
        validate_eval_options(("pruned",), (1.0,), pruned_student=True)
    with pytest.raises(ValueError, match=r"my_modes.*choose from"):
        validate_eval_options(("dense",), modes_field="my_modes")
