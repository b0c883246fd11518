"""Backbones: every scoring path against an explicit per-triple formula; masks; sizes."""
from __future__ import annotations

import pytest
import torch

from kgdistill.core.models import BACKBONES, CP, RESCAL, ComplEx, build_model, rank_for_budget

N_ENT, N_REL, RANK = 7, 3, 4


def _model(name: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(name, N_ENT, N_REL, RANK, init_scale=0.5).double()


def _reference_score(model, entity: torch.Tensor, relation: torch.Tensor, h: int, r: int, t: int) -> float:
    """The textbook score of one triple, written independently of the model's kernels."""
    k = model.rank
    if isinstance(model, CP):
        # entity rows are [lhs | rhs]: Σ_i h_lhs[i] · r[i] · t_rhs[i]
        return sum(float(entity[h, i] * relation[r, i] * entity[t, k + i]) for i in range(k))
    if isinstance(model, ComplEx):
        # rows are [real | imaginary]: Re(Σ_i h_i · r_i · conj(t_i))
        hc = torch.complex(entity[h, :k], entity[h, k:])
        rc = torch.complex(relation[r, :k], relation[r, k:])
        tc = torch.complex(entity[t, :k], entity[t, k:])
        return float(torch.sum(hc * rc * torch.conj(tc)).real)
    if isinstance(model, RESCAL):
        # hᵀ M_r t with M_r the (k, k) row-major reshaping of relation row r
        M = relation[r].reshape(k, k)
        return sum(float(entity[h, i] * M[i, j] * entity[t, j]) for i in range(k) for j in range(k))
    raise AssertionError(type(model))


def _all_queries() -> torch.Tensor:
    """Every (h, r, t) with r over the 2R (reciprocal included) relation rows."""
    grid = torch.cartesian_prod(torch.arange(N_ENT), torch.arange(2 * N_REL), torch.arange(N_ENT))
    return grid


@pytest.mark.parametrize("name", ["CP", "ComplEx", "RESCAL"])
def test_scores_match_explicit_formula(name):
    model = _model(name)
    E, R = model.entity.detach(), model.relation.detach()
    triples = _all_queries()
    expected = torch.tensor([_reference_score(model, E, R, h, r, t) for h, r, t in triples.tolist()],
                            dtype=torch.float64)
    with torch.no_grad():
        got_triples = model.score_triples(triples)
        tails = model.score_tails(triples[:, :2])
        relations = model.score_relations(triples)
    assert got_triples.shape == (len(triples),)
    torch.testing.assert_close(got_triples, expected, rtol=1e-12, atol=1e-12)
    assert tails.shape == (len(triples), N_ENT)
    torch.testing.assert_close(tails[torch.arange(len(triples)), triples[:, 2]], expected, rtol=1e-12, atol=1e-12)
    # score_relations ranks every relation row r' for (h, ?, t)
    assert relations.shape == (len(triples), 2 * N_REL)
    lookup = expected.view(N_ENT, 2 * N_REL, N_ENT)
    torch.testing.assert_close(relations, lookup[triples[:, 0], :, triples[:, 2]], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["CP", "ComplEx", "RESCAL"])
def test_forward_returns_tails_relations_and_factors(name):
    model = _model(name)
    batch = torch.tensor([[0, 1, 2], [3, 5, 6], [6, 0, 0]])
    tails, rels, factors = model(batch, relation_prediction=True)
    torch.testing.assert_close(tails, model.score_tails(batch))
    torch.testing.assert_close(rels, model.score_relations(batch))
    assert model(batch)[1] is None
    E, R, k = model.entity, model.relation, RANK
    h, r, t = E[batch[:, 0]], R[batch[:, 1]], E[batch[:, 2]]
    if name == "CP":
        expected = (h[:, :k], r, t[:, k:])
    elif name == "ComplEx":
        mod = lambda x: torch.abs(torch.complex(x[:, :k], x[:, k:]))  # noqa: E731
        expected = (mod(h), mod(r), mod(t))
    else:
        expected = (h, r.reshape(-1, k, k), t)
    for got, want in zip(factors, expected):
        torch.testing.assert_close(got, want)


def _random_masks(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {
        "entity": torch.rand(model.entity.shape, generator=g) < 0.5,
        "relation": torch.rand(model.relation.shape, generator=g) < 0.5,
    }


@pytest.mark.parametrize("name", ["CP", "ComplEx", "RESCAL"])
def test_masked_scoring_equals_scoring_masked_tables(name):
    model = _model(name)
    masks = _random_masks(model)
    with pytest.raises(RuntimeError, match="set_masks"):
        model.score_tails(torch.tensor([[0, 0]]), masked=True)
    model.set_masks(masks)
    reference = build_model(name, N_ENT, N_REL, RANK).double()
    with torch.no_grad():
        reference.entity.copy_(model.entity * masks["entity"])
        reference.relation.copy_(model.relation * masks["relation"])
    triples = _all_queries()
    with torch.no_grad():
        torch.testing.assert_close(model.score_tails(triples, masked=True), reference.score_tails(triples))
        torch.testing.assert_close(model.score_triples(triples, masked=True), reference.score_triples(triples))
        torch.testing.assert_close(model.score_relations(triples, masked=True), reference.score_relations(triples))
        tails, rels, _ = model(triples, masked=True, relation_prediction=True)
        torch.testing.assert_close(tails, reference.score_tails(triples))
        torch.testing.assert_close(rels, reference.score_relations(triples))
        # unmasked scoring still uses the dense weights, which were not overwritten
        assert not torch.allclose(model.score_tails(triples), reference.score_tails(triples))
    # gradients flow only into the kept weights
    loss = model.score_tails(triples, masked=True).sum()
    loss.backward()
    assert bool((model.entity.grad[~masks["entity"]] == 0).all())
    assert bool((model.relation.grad[~masks["relation"]] == 0).all())
    model.set_masks(None)
    assert not model.has_masks


@pytest.mark.parametrize("name,widths", [("CP", (2 * RANK, RANK)), ("ComplEx", (2 * RANK, 2 * RANK)),
                                         ("RESCAL", (RANK, RANK * RANK))])
def test_parameter_counts_dense_and_nonzero(name, widths):
    model = _model(name)
    assert model.entity.shape == (N_ENT, widths[0])
    assert model.relation.shape == (2 * N_REL, widths[1])
    dense = N_ENT * widths[0] + 2 * N_REL * widths[1]
    assert model.parameter_counts() == {"dense": dense, "nonzero": dense}
    with torch.no_grad():
        model.entity[0].zero_()
    assert model.parameter_counts() == {"dense": dense, "nonzero": dense - widths[0]}
    masks = _random_masks(model)
    model.set_masks(masks)
    kept = int(masks["entity"].sum() + masks["relation"].sum())
    assert model.parameter_counts() == {"dense": dense, "nonzero": kept}


def test_build_model_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown model 'TransE'"):
        build_model("TransE", 5, 2, 4)
    for rank in (0, -3):
        for name in BACKBONES:
            with pytest.raises(ValueError, match="rank"):
                build_model(name, 5, 2, rank)


def test_init_scale_sets_the_spread():
    torch.manual_seed(0)
    small = build_model("ComplEx", 500, 10, 20, init_scale=1e-3)
    torch.manual_seed(0)
    big = build_model("ComplEx", 500, 10, 20, init_scale=0.5)
    torch.testing.assert_close(big.entity, small.entity * 500)
    assert float(big.entity.detach().std()) == pytest.approx(0.5, rel=0.05)


@pytest.mark.parametrize("name", ["CP", "ComplEx", "RESCAL"])
@pytest.mark.parametrize("n_ent,n_rel", [(50, 7), (14541, 237), (40943, 11)])
def test_rank_for_budget_is_the_largest_fitting_rank(name, n_ent, n_rel):
    def dense(rank: int) -> int:  # the built model's own count, not the class formula
        with torch.device("meta"):
            model = build_model(name, n_ent, n_rel, rank)
        return model.entity.numel() + model.relation.numel()

    budgets = [dense(1), dense(1) + 1]
    for rank in (2, 3, 5, 17, 64, 100, 317, 1000):
        budgets += [dense(rank) - 1, dense(rank), dense(rank) + 1]
    budgets += [6_000_000, 15_000_000, 1_234_567]
    for budget in budgets:
        if budget < dense(1):
            continue
        rank = rank_for_budget(name, n_ent, n_rel, budget)
        assert dense(rank) <= budget, (budget, rank)
        assert dense(rank + 1) > budget, (budget, rank)


def test_rank_for_budget_dense_count_matches_built_model():
    for name in BACKBONES:
        rank = rank_for_budget(name, 30, 4, 5000)
        assert build_model(name, 30, 4, rank).parameter_counts()["dense"] <= 5000
        assert build_model(name, 30, 4, rank + 1).parameter_counts()["dense"] > 5000


def test_rank_for_budget_rejects_an_unknown_backbone():
    with pytest.raises(ValueError, match="unknown model 'TransE'.*ComplEx"):
        rank_for_budget("TransE", 10, 2, 1000)


def test_a_new_backbone_needs_only_its_class(monkeypatch):
    """Budgets come from the class's own widths: a backbone defined in one place just works."""

    class Diagonal(CP):  # DistMult-like: one table width per rank
        name = "Diagonal"

        @staticmethod
        def entity_width(rank: int) -> int:
            return rank

        def _candidates(self, entity):
            return entity

        def _query(self, h, r):
            return h * r

    monkeypatch.setitem(BACKBONES, "Diagonal", Diagonal)
    assert Diagonal.dense_size(30, 4, 7) == 30 * 7 + 8 * 7
    assert rank_for_budget("Diagonal", 30, 4, 30 * 7 + 8 * 7) == 7
    assert build_model("Diagonal", 30, 4, 7).parameter_counts()["dense"] == Diagonal.dense_size(30, 4, 7)
