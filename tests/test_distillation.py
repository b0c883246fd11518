"""MetaSD / KD / DML trainer: meta-gradient, masks, ablation switches, frozen teacher, resume, sparse export."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kgdistill import RunConfig, load_dataset, run
from kgdistill.compression.sparse import SparseScorer, export_sparse, load_sparse
from kgdistill.core.evaluation import filtered_ranks
from kgdistill.core.models import build_model
from kgdistill.core.regularizers import regularize
from kgdistill.metasd.distill_losses import distillation_kl
from kgdistill.metasd.distillation import DistillationLearner

TINY = dict(dataset="Nations", rank=8, batch_size=64, max_epochs=2, eval_every=1, regularizer="N3", reg_weight=1e-2,
            learning_rate=0.1, init_scale=0.1)


@pytest.fixture(scope="module")
def nations():
    return load_dataset("Nations")


def learner_for(dataset, method, **overrides):
    config = RunConfig(method=method, **(TINY | overrides))
    torch.manual_seed(0)
    return DistillationLearner(config, dataset, torch.device("cpu"))


def teacher_params(learner):
    return [p.detach().clone() for p in learner.modules["teacher"].parameters()]


@pytest.mark.parametrize("kl_mode,temperature,extra", [
    ("target_first", 1.0, {}), ("target_first", 2.0, {}), ("paper", 2.0, {}),
    # the official code's recipe: 3:1 KL mix, no T², plain sums (docs/official_code_audit.md)
    ("official", 3.0, {"loss_weighting": "unit", "kl_temperature_squared": False}),
])
def test_meta_gradient_matches_finite_differences(nations, kl_mode, temperature, extra):
    learner = learner_for(nations, "metasd", rp_weight=0.5, gamma=0.5, temperature=temperature, kl_mode=kl_mode,
                          **extra)
    for module in learner.modules.values():
        module.double()
    teacher, c = learner.modules["teacher"], learner.config
    learner.recompute_mask()
    batch = nations.reciprocal(nations.train)[:16]
    quiz = nations.reciprocal(nations.train)[100:116]
    _, grads, _ = learner.meta_gradient(batch, quiz)

    # Independent reference: θ_S frozen, θ'_S(θ_T) built with plain autograd, quiz CE evaluated.
    theta_s = {k: v.detach().clone() for k, v in zip(("entity", "relation"), teacher.tables(masked=True))}
    masks = {"entity": teacher.entity_mask, "relation": teacher.relation_mask}

    def quiz_loss(entity_t: torch.Tensor, relation_t: torch.Tensor) -> float:
        with torch.no_grad():
            teacher.entity.copy_(entity_t)
            teacher.relation.copy_(relation_t)
        t_scores = teacher.score_tails(batch).detach()
        params = {k: v.clone().requires_grad_() for k, v in theta_s.items()}
        teacher_entity, teacher_relation = teacher.entity, teacher.relation
        # score the student with the frozen copy θ_S (masked), as Eq. 4
        ent, rel = params["entity"] * masks["entity"], params["relation"] * masks["relation"]
        h, r, t = ent[batch[:, 0]], rel[batch[:, 1]], ent[batch[:, 2]]
        tails = teacher._query(h, r) @ ent.T
        rels = teacher._pair(h, t) @ rel.T
        fit = F.cross_entropy(tails, batch[:, 2]) + c.rp_weight * F.cross_entropy(rels, batch[:, 1])
        fit_w, kl_w = (1.0, 1.0) if c.loss_weighting == "unit" else (c.alpha, 1 - c.alpha)
        loss = (fit_w * fit + kl_w * distillation_kl(F.log_softmax(tails / c.temperature, -1),
                                                     F.log_softmax(t_scores / c.temperature, -1),
                                                     c.temperature, c.kl_mode, True, virtual=True,
                                                     squared=c.kl_temperature_squared)
                + regularize(c.regularizer, teacher._factors(h, r, t), c.reg_weight))
        g = torch.autograd.grad(loss, [params["entity"], params["relation"]])
        ent_v = (params["entity"] - c.virtual_lr * g[0]) * masks["entity"]
        rel_v = (params["relation"] - c.virtual_lr * g[1]) * masks["relation"]
        q = teacher._query(ent_v[quiz[:, 0]], rel_v[quiz[:, 1]]) @ ent_v.T
        assert teacher_entity is teacher.entity and teacher_relation is teacher.relation
        return float(F.cross_entropy(q, quiz[:, 2]).detach())

    base_e, base_r = teacher.entity.detach().clone(), teacher.relation.detach().clone()
    generator = torch.Generator().manual_seed(1)
    direction_e = torch.randn(base_e.shape, generator=generator, dtype=torch.float64)
    direction_r = torch.randn(base_r.shape, generator=generator, dtype=torch.float64)
    eps = 1e-5
    numeric = (quiz_loss(base_e + eps * direction_e, base_r + eps * direction_r)
               - quiz_loss(base_e - eps * direction_e, base_r - eps * direction_r)) / (2 * eps)
    analytic = float((grads[0] * direction_e).sum() + (grads[1] * direction_r).sum())
    assert abs(analytic) > 1e-8, "meta-gradient vanished: θ'_S does not depend on θ_T"
    assert analytic == pytest.approx(numeric, rel=1e-4, abs=1e-9)


def test_mask_density_is_one_minus_gamma(nations):
    for gamma in (0.9, 0.75):
        learner = learner_for(nations, "metasd", gamma=gamma)
        learner.start_epoch(1)
        counts = learner.parameter_counts()["student"]
        assert counts["nonzero"] == math.ceil(round((1 - gamma) * counts["dense"], 9))
        assert learner.extra_record()["mask_density"] == pytest.approx(1 - gamma, abs=1 / counts["dense"])


def test_ablation_switches(nations):
    full = learner_for(nations, "metasd", rank=32)
    wo_p = learner_for(nations, "metasd_wo_p", rank=32)
    wo_m = learner_for(nations, "metasd_wo_m", rank=32)
    dml = learner_for(nations, "dml", rank=32)
    # P: the student is the masked source itself, or a separate model of at most the pruned size
    assert full.student is full.modules["teacher"] and wo_m.student is wo_m.modules["teacher"]
    for separate in (wo_p, dml):
        assert separate.student is not separate.modules["teacher"]
        assert separate.parameter_counts()["student"]["dense"] <= full.parameter_counts()["student"]["nonzero"]
    # M: only the meta variants have a quiz set and a meta optimizer
    assert "meta" in full.optimizers and "meta" in wo_p.optimizers
    assert "meta" not in wo_m.optimizers and "meta" not in dml.optimizers
    batch = nations.reciprocal(nations.train)[:64]

    def teacher_after_step(learner, quiz_shift=None):
        if quiz_shift is not None:
            learner.quiz = torch.roll(learner.quiz, quiz_shift, 0)
        learner.train_step(batch)
        return teacher_params(learner)

    # no meta step ⇒ θ_T is untouched by quiz data: a different quiz set changes nothing
    a = teacher_after_step(learner_for(nations, "metasd_wo_m"))
    b_learner = learner_for(nations, "metasd_wo_m")
    b_learner.quiz = torch.zeros(5, 3, dtype=torch.long)  # would change θ_T if it were used
    b = teacher_after_step(b_learner)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    # with the meta step, the quiz data reaches θ_T
    c = teacher_after_step(learner_for(nations, "metasd"), quiz_shift=0)
    d = teacher_after_step(learner_for(nations, "metasd"), quiz_shift=7)
    assert not all(torch.equal(x, y) for x, y in zip(c, d))
    # the meta step is the only difference between metasd and metasd_wo_m
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_kd_teacher_is_frozen(nations, tmp_path):
    teacher_config = RunConfig(**TINY)
    kd = RunConfig(method="kd", teacher=teacher_config.to_dict(), **TINY)
    torch.manual_seed(0)
    trained = build_model(teacher_config.model, nations.n_entities, nations.n_relations, teacher_config.rank)
    learner = DistillationLearner(kd, nations, torch.device("cpu"), teacher_state=trained.state_dict())
    assert all(torch.equal(x, y) for x, y in zip(teacher_params(learner), trained.parameters()))
    before = teacher_params(learner)
    student_before = [p.detach().clone() for p in learner.student.parameters()]
    for start in range(0, 256, 64):
        learner.train_step(nations.reciprocal(nations.train)[start : start + 64])
    assert all(torch.equal(x, y) for x, y in zip(before, teacher_params(learner)))
    assert not all(torch.equal(x, y) for x, y in zip(student_before, learner.student.parameters()))
    with pytest.raises(ValueError, match="teacher"):
        RunConfig(method="kd", **TINY)


def test_kl_directions():
    a, b = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([[0.0, 1.0, 0.5]])
    p_a, p_b = F.softmax(a, -1), F.softmax(b, -1)
    a, b = F.log_softmax(a, -1), F.log_softmax(b, -1)
    kl_b_a = float((p_b * (p_b.log() - p_a.log())).sum())  # KL(b ‖ a)
    kl_a_b = float((p_a * (p_a.log() - p_b.log())).sum())
    assert float(distillation_kl(a, b, 1.0, "target_first", True)) == pytest.approx(kl_b_a, rel=1e-5)
    assert float(distillation_kl(a, b, 1.0, "target_first", False)) == pytest.approx(kl_b_a, rel=1e-5)
    # paper: KL(S ‖ T) both ways; learner a as student → KL(a ‖ b); as teacher (b = S) → KL(b ‖ a)
    assert float(distillation_kl(a, b, 1.0, "paper", True)) == pytest.approx(kl_a_b, rel=1e-5)
    assert float(distillation_kl(a, b, 1.0, "paper", False)) == pytest.approx(kl_b_a, rel=1e-5)


def test_metasd_resume_equals_uninterrupted(tmp_path):
    config = RunConfig(method="metasd", **(TINY | {"max_epochs": 3}))
    whole = run(config, runs_dir=tmp_path / "a")
    assert run(config, runs_dir=tmp_path / "b", stop_after_epoch=1)["status"] == "interrupted"
    resumed = run(config, runs_dir=tmp_path / "b")
    assert resumed["test"] == whole["test"]
    assert resumed["selected_epoch"] == whole["selected_epoch"]
    assert [h.get("valid") for h in resumed["history"]] == [h.get("valid") for h in whole["history"]]
    for key in ("mask_density", "quiz_size"):
        assert resumed[key] == whole[key]
    assert set(whole["phase_seconds_per_epoch"]) >= {"virtual", "meta", "actual", "mask"}
    assert whole["parameter_counts"]["student"]["nonzero"] < whole["parameter_counts"]["teacher"]["dense"]


def test_sparse_export_round_trip(nations, tmp_path):
    learner = learner_for(nations, "metasd", rank=16)
    for start in range(0, 512, 64):
        learner.train_step(nations.reciprocal(nations.train)[start : start + 64])
    student = learner.modules["teacher"]
    info = export_sparse(student, tmp_path / "student.sparse")
    assert info["parameters"] == student.parameter_counts()["nonzero"]
    assert info["bytes"] < info["dense_bytes"]
    queries = nations.queries("test")
    expected = filtered_ranks(lambda q: student.score_tails(q, masked=True), queries, nations.filters)
    loaded = load_sparse(tmp_path / "student.sparse")
    assert torch.equal(filtered_ranks(lambda q: loaded.score_tails(q, masked=True), queries, nations.filters), expected)
    scorer = SparseScorer(tmp_path / "student.sparse")
    with torch.no_grad():
        assert torch.allclose(scorer(queries[:50]), student.score_tails(queries[:50], masked=True), atol=1e-5)
    with pytest.raises(ValueError, match="masks"):
        export_sparse(load_sparse(tmp_path / "student.sparse").__class__(5, 2, 4), tmp_path / "x")


def test_simultaneous_order_is_a_close_variant(nations):
    """meta_order="simultaneous" differs from Algorithm 1 only by the μ-sized meta update."""
    batch = nations.reciprocal(nations.train)[:64]
    results = {}
    for order in ("sequential", "simultaneous"):
        learner = learner_for(nations, "metasd", meta_order=order)
        before = teacher_params(learner)
        learner.train_step(batch)
        results[order] = [a - b for a, b in zip(teacher_params(learner), before)]
    for seq, sim in zip(results["sequential"], results["simultaneous"]):
        assert seq.abs().max() > 0
        assert torch.allclose(seq, sim, atol=1e-4)
    # with μ = 0 the two orders are the same computation
    updates = {}
    for order in ("sequential", "simultaneous"):
        learner = learner_for(nations, "metasd", meta_order=order, meta_lr=0.0)
        before = teacher_params(learner)
        learner.train_step(batch)
        updates[order] = [a - b for a, b in zip(teacher_params(learner), before)]
    for seq, sim in zip(updates["sequential"], updates["simultaneous"]):
        assert torch.allclose(seq, sim, atol=1e-6)


@pytest.mark.parametrize("weighted", [False, True])
def test_fused_distillation_loss_equals_autograd_composition(weighted):
    from kgdistill.metasd.distill_losses import distilled_cross_entropy
    from kgdistill.metasd.objective import Losses

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 9, generator=gen, dtype=torch.float64, requires_grad=True)
    other = F.log_softmax(torch.randn(6, 9, generator=gen, dtype=torch.float64), -1)
    targets = torch.tensor([0, 3, 8, 3, 1, 5])
    class_weights = torch.rand(9, generator=gen, dtype=torch.float64) + 0.1 if weighted else None
    zero = torch.zeros((), dtype=torch.float64)
    terms = Losses(zero, zero, logits, F.log_softmax(logits.detach(), -1), targets)
    fused = distilled_cross_entropy(terms, other, 0.3, class_weights)
    reference = 0.3 * F.cross_entropy(logits, targets, weight=class_weights) + 0.7 * distillation_kl(
        F.log_softmax(logits, -1), other, 1.0, "target_first", True)
    assert float(fused.detach()) == pytest.approx(float(reference.detach()), rel=1e-12)
    (g_fused,) = torch.autograd.grad(fused * 2.5, logits)
    (g_ref,) = torch.autograd.grad(reference * 2.5, logits)
    assert torch.allclose(g_fused, g_ref, atol=1e-12)
