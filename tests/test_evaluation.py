"""Filtered evaluation against a brute-force python reference, for every tie policy."""
from __future__ import annotations

import math

import pytest
import torch

from kgdistill.core.evaluation import (
    TIE_POLICIES,
    evaluate,
    evaluation_report,
    filtered_ranks,
    metrics_from_ranks,
    two_direction_metrics,
)
from kgdistill.core.models import build_model

METRICS = ("MRR", "MR", "H@1", "H@3", "H@10")


class TableScorer:
    """Scores from a fixed (N, 2R, N) table; returns a fresh tensor as filtered_ranks requires."""

    def __init__(self, table: torch.Tensor):
        self.table = table
        self.calls = 0

    def __call__(self, queries: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.table[queries[:, 0], queries[:, 1]].clone()


def _known(ds) -> dict[tuple[int, int], set[int]]:
    known: dict[tuple[int, int], set[int]] = {}
    for split in ("train", "valid", "test"):
        for h, r, t in ds.split(split).tolist():
            known.setdefault((h, r), set()).add(t)
            known.setdefault((t, r + ds.n_relations), set()).add(h)
    return known


def _reference_ranks(table: torch.Tensor, queries: torch.Tensor, known) -> dict[str, list[float]]:
    """Loops over entities: 1 + #(non-answer entities scoring >= / > the target)."""
    out = {p: [] for p in TIE_POLICIES}
    for a, r, t in queries.tolist():
        scores = table[a, r].tolist()
        target = scores[t]
        answers = known[(a, r)]
        ge = gt = 1
        for e, s in enumerate(scores):
            if e == t or e in answers:
                continue
            ge += s >= target
            gt += s > target
        out["pessimistic"].append(float(ge))
        out["optimistic"].append(float(gt))
        out["realistic"].append((ge + gt) / 2)
    return out


def _tied_table(ds, kind: str, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (ds.n_entities, 2 * ds.n_relations, ds.n_entities)
    if kind == "rounded":  # N(0,1) rounded to one decimal: many ties
        return torch.round(torch.randn(shape, generator=g) * 10) / 10
    return torch.randint(0, 4, shape, generator=g).float()  # only four distinct scores


@pytest.fixture(scope="module")
def umls_reference(umls):
    known = _known(umls)
    tables = {kind: _tied_table(umls, kind) for kind in ("rounded", "coarse")}
    queries = umls.queries("test")
    refs = {kind: _reference_ranks(tables[kind], queries, known) for kind in tables}
    return tables, queries, refs


@pytest.mark.parametrize("kind", ["rounded", "coarse"])
@pytest.mark.parametrize("tie_policy", TIE_POLICIES)
def test_filtered_ranks_equal_brute_force(umls, umls_reference, kind, tie_policy):
    tables, queries, refs = umls_reference
    expected = torch.tensor(refs[kind][tie_policy], dtype=torch.float64)
    for batch_size in (1000, 37):
        ranks = filtered_ranks(TableScorer(tables[kind]), queries, umls.filters, tie_policy, batch_size)
        assert ranks.dtype == torch.float64 and ranks.shape == (len(queries),)
        assert torch.equal(ranks, expected), (kind, tie_policy, batch_size)


def test_tie_policies_order_and_ties_exist(umls_reference):
    _, _, refs = umls_reference
    for kind in refs:
        pes, opt = torch.tensor(refs[kind]["pessimistic"]), torch.tensor(refs[kind]["optimistic"])
        assert bool((opt <= pes).all())
        assert int((opt < pes).sum()) > 100  # the fixture did produce many ties with the target


def test_constant_and_oracle_scorers(nations):
    known = _known(nations)
    queries = nations.queries("valid")
    n_ent = nations.n_entities
    constant = lambda q: torch.zeros(len(q), n_ent)  # noqa: E731
    expected_pes = torch.tensor([n_ent - len(known[(a, r)]) + 1 for a, r, _ in queries.tolist()], dtype=torch.float64)
    assert torch.equal(filtered_ranks(constant, queries, nations.filters, "pessimistic"), expected_pes)
    assert bool((filtered_ranks(constant, queries, nations.filters, "optimistic") == 1).all())
    assert torch.equal(filtered_ranks(constant, queries, nations.filters, "realistic"), (expected_pes + 1) / 2)

    def oracle(q):  # 1 on every known answer, 0 elsewhere: filtering leaves the target alone on top
        scores = torch.zeros(len(q), n_ent)
        for i, (a, r) in enumerate(q[:, :2].tolist()):
            scores[i, list(known[(a, r)])] = 1.0
        return scores

    for policy in TIE_POLICIES:
        assert bool((filtered_ranks(oracle, queries, nations.filters, policy) == 1).all())
    assert evaluate(oracle, nations, "valid")["MRR"] == 1.0


def test_metrics_from_ranks_by_hand():
    m = metrics_from_ranks(torch.tensor([1.0, 2.0, 4.0, 20.0]))
    # MRR = (1 + 1/2 + 1/4 + 1/20) / 4 = 1.8 / 4 = 0.45; MR = 27 / 4; hits: 1/4, 2/4, 3/4
    assert m == pytest.approx({"MRR": 0.45, "MR": 6.75, "H@1": 0.25, "H@3": 0.5, "H@10": 0.75})
    m = metrics_from_ranks(torch.tensor([1.5, 3.0]))  # realistic half ranks
    assert m == pytest.approx({"MRR": 0.5, "MR": 2.25, "H@1": 0.0, "H@3": 1.0, "H@10": 1.0})
    empty = metrics_from_ranks(torch.tensor([]))
    assert set(empty) == set(METRICS) and all(math.isnan(v) for v in empty.values())


def test_two_direction_metrics_by_hand():
    m = two_direction_metrics(torch.tensor([1.0, 2.0]), torch.tensor([4.0, 4.0]))
    # tail MRR 0.75, head 0.25 -> 0.5; MR 1.5 and 4 -> 2.75; H@1 0.5 and 0 -> 0.25; H@3 1 and 0 -> 0.5
    assert m == pytest.approx({"MRR": 0.5, "MR": 2.75, "H@1": 0.25, "H@3": 0.5, "H@10": 1.0})


@pytest.mark.parametrize("tie_policy", TIE_POLICIES)
def test_evaluate_is_the_mean_of_tail_and_head_metrics(umls, umls_reference, tie_policy):
    tables, queries, refs = umls_reference
    ref = torch.tensor(refs["rounded"][tie_policy], dtype=torch.float64)
    n = len(umls.test)
    tail, head = metrics_from_ranks(ref[:n]), metrics_from_ranks(ref[n:])
    got = evaluate(TableScorer(tables["rounded"]), umls, "test", tie_policy=tie_policy, batch_size=100)
    assert set(got) == set(METRICS)
    for k in METRICS:
        assert got[k] == pytest.approx((tail[k] + head[k]) / 2, abs=1e-12)
    # both directions have one query per triple, so the pooled mean agrees; the directions differ,
    # so a tail-only or head-only evaluation would fail the check above
    assert metrics_from_ranks(ref)["MRR"] == pytest.approx(got["MRR"], abs=1e-12)
    assert tail["MRR"] != pytest.approx(head["MRR"])


def test_report_subsets_and_per_relation_are_consistent(umls, umls_reference):
    tables, _, refs = umls_reference
    scorer = TableScorer(tables["rounded"])
    mask = umls.test[:, 1] < umls.n_relations // 2
    report = evaluation_report(
        scorer, umls, "test", "realistic", 200, subsets={"all": None, "low": mask, "high": ~mask}, per_relation=True
    )
    n = len(umls.test)
    assert report["all"] == evaluate(TableScorer(tables["rounded"]), umls, "test", "realistic")
    assert report["low"]["triples"] + report["high"]["triples"] == n
    assert report["low"]["triples"] == int(mask.sum())
    for k in METRICS:
        pooled = (report["low"][k] * report["low"]["triples"] + report["high"][k] * report["high"]["triples"]) / n
        assert pooled == pytest.approx(report["all"][k], abs=1e-12)
    sub = evaluate(TableScorer(tables["rounded"]), umls, "test", "realistic", subset=mask)
    assert sub == pytest.approx(report["low"])  # metrics + "triples"

    per_rel = report["per_relation"]
    used = sorted(set(umls.test[:, 1].tolist()))
    assert sorted(per_rel) == sorted(umls.relations[r] for r in used)
    assert sum(v["triples"] for v in per_rel.values()) == n
    for k in METRICS:
        weighted = sum(v[k] * v["triples"] for v in per_rel.values()) / n
        assert weighted == pytest.approx(report["all"][k], abs=1e-12)
    # one relation by hand from the reference ranks
    ref = torch.tensor(refs["rounded"]["realistic"], dtype=torch.float64)
    rel = used[0]
    sel = umls.test[:, 1] == rel
    want = two_direction_metrics(ref[:n][sel], ref[n:][sel])
    assert per_rel[umls.relations[rel]] == pytest.approx(want | {"triples": int(sel.sum())})


def test_model_scorer_and_batch_size_invariance(kinship):
    torch.manual_seed(0)
    model = build_model("ComplEx", kinship.n_entities, kinship.n_relations, 8, init_scale=0.1)
    a = evaluate(model.score_tails, kinship, "valid", batch_size=1000)
    b = evaluate(model.score_tails, kinship, "valid", batch_size=53)
    assert a == b
    assert 0 < a["MRR"] < 1 and 1 <= a["MR"] <= kinship.n_entities


def test_bad_arguments_raise(nations):
    scorer = lambda q: torch.zeros(len(q), nations.n_entities)  # noqa: E731
    with pytest.raises(ValueError, match="tie policy 'average'"):
        filtered_ranks(scorer, nations.queries("test"), nations.filters, tie_policy="average")
    with pytest.raises(ValueError, match="tie policy"):
        evaluate(scorer, nations, "test", tie_policy="random")
    with pytest.raises(ValueError, match="batch_size"):
        filtered_ranks(scorer, nations.queries("test"), nations.filters, batch_size=0)
    with pytest.raises(ValueError, match="split"):
        evaluate(scorer, nations, "dev")
