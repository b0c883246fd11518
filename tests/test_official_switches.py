"""The official MetaSD code's training choices as RunConfig switches, each against a hand computation
(docs/official_code_audit.md, "Hand computations for the tests"), and the record fields of the audit."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kgdistill import RunConfig, run
from kgdistill.metasd.distill_losses import distillation_kl
from kgdistill.metasd.distillation import DistillationLearner
from kgdistill.metasd.objective import fit_loss

TINY = dict(dataset="Nations", rank=8, batch_size=64, max_epochs=2, eval_every=1, regularizer="DURA_W", reg_weight=1e-2,
            learning_rate=0.1, init_scale=0.1)


def learner_for(data, method="metasd", **overrides):
    torch.manual_seed(0)
    return DistillationLearner(RunConfig(method=method, **(TINY | overrides)), data, torch.device("cpu"))


def _kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) by hand, mean over rows."""
    return (p * (p.log() - q.log())).sum(-1).mean()


def test_official_kl_mix_matches_the_hand_formula():
    z_t = torch.tensor([[1.0, 2.0, 0.5, -1.0, 0.0], [0.3, -0.2, 2.5, 1.0, -1.5]])
    z_s = torch.tensor([[0.2, 1.0, 1.5, -0.5, 0.1], [1.3, 0.2, 0.5, -1.0, 0.5]])
    temp = 3.0
    p_t, p_s = torch.softmax(z_t / temp, -1), torch.softmax(z_s / temp, -1)
    log_t, log_s = F.log_softmax(z_t / temp, -1), F.log_softmax(z_s / temp, -1)
    # virtual step (learner = virtual student S'): 3·KL(T‖S') + KL(S'‖T), no T²
    virtual = distillation_kl(log_s, log_t, temp, "official", True, virtual=True, squared=False)
    assert virtual == pytest.approx(float(3 * _kl(p_t, p_s) + _kl(p_s, p_t)), rel=1e-6)
    # Actual-Train: the learner first, for the student and for the teacher alike
    student = distillation_kl(log_s, log_t, temp, "official", True, squared=False)
    teacher = distillation_kl(log_t, log_s, temp, "official", False, squared=False)
    assert student == pytest.approx(float(3 * _kl(p_s, p_t) + _kl(p_t, p_s)), rel=1e-6)
    assert teacher == pytest.approx(float(3 * _kl(p_t, p_s) + _kl(p_s, p_t)), rel=1e-6)
    assert student != pytest.approx(float(virtual), rel=1e-3)  # the call-site order matters
    squared = distillation_kl(log_s, log_t, temp, "official", True, squared=True)
    assert squared == pytest.approx(float(student) * temp**2, rel=1e-6)


def test_unit_loss_weighting_is_the_plain_sum(nations):
    learner = learner_for(nations, loss_weighting="unit", kl_mode="official", temperature=3.0,
                          kl_temperature_squared=False)
    batch = nations.reciprocal(nations.train)[:32]
    s_terms = learner.terms(learner.student, batch, masked=True)
    t_terms = learner.terms(learner.modules["teacher"], batch)
    t_log_p = learner.target_log_p(t_terms)
    loss = learner.student_objective(s_terms, t_log_p)
    s_log_p = F.log_softmax(s_terms.scores / 3.0, -1)
    expected = s_terms.fit + distillation_kl(s_log_p, t_log_p, 3.0, "official", True, squared=False) + s_terms.penalty
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    hand_fit = F.cross_entropy(s_terms.scores, batch[:, 2])
    # rp_weight 0: the tail CE alone
    assert float(s_terms.fit.detach()) == pytest.approx(float(hand_fit.detach()), rel=1e-6)


def test_teacher_warm_step_is_one_plain_adagrad_step_first(nations):
    batch = nations.reciprocal(nations.train)[:64]
    a = learner_for(nations, "dml")
    b = learner_for(nations, "dml", teacher_warm_step=True)
    # on A by hand: the source's baseline objective, one step of its own Actual-Train Adagrad
    loss, _ = fit_loss(a.modules["teacher"], batch, a.config, a.class_weights)
    a.optimizers["actual"].zero_grad(set_to_none=True)
    loss.backward()
    a.optimizers["actual"].step()
    a.optimizers["actual"].zero_grad(set_to_none=True)
    a.train_step(batch)
    out = b.train_step(batch)
    assert float(out["warm"]) == pytest.approx(float(loss.detach()))
    for x, y in zip(a.modules["teacher"].parameters(), b.modules["teacher"].parameters()):
        assert torch.equal(x, y)
    teacher_entity = b.modules["teacher"].entity
    assert int(b.optimizers["actual"].state[teacher_entity]["step"]) == 2


def test_quiz_head_is_the_first_rows_in_file_order(umls):
    learner = learner_for(umls, quiz_selection="head", dataset="UMLS")
    assert len(learner.quiz) == 208 == int(0.02 * 2 * len(umls.train))  # 2% of the reciprocal array
    assert torch.equal(learner.quiz, umls.train[:208])  # = the first 4% of train.txt, forward only


def test_whole_quiz_meta_step_is_the_mean_of_chunk_means(nations):
    learner = learner_for(nations, quiz_per_meta_step="all", quiz_batch_size=2, gamma=0.5)
    for module in learner.modules.values():
        module.double()
    learner.recompute_mask()
    batch = nations.reciprocal(nations.train)[:16]
    quiz = nations.reciprocal(nations.train)[100:105]  # 5 triples: chunks 2, 2, 1
    loss, grads, _ = learner.meta_gradient(batch, quiz)
    single = learner_for(nations, gamma=0.5)
    for module in single.modules.values():
        module.double()
    single.recompute_mask()
    parts = [single.meta_gradient(batch, chunk) for chunk in quiz.split(2)]
    assert float(loss) == pytest.approx(sum(float(p[0]) for p in parts) / 3, rel=1e-9)
    for i, g in enumerate(grads):
        torch.testing.assert_close(g, sum(p[1][i] for p in parts) / 3, rtol=1e-9, atol=1e-12)
    whole = learner_for(nations, quiz_per_meta_step="all", quiz_batch_size=10, gamma=0.5)  # one chunk
    for module in whole.modules.values():
        module.double()
    whole.recompute_mask()
    _, g_whole, _ = whole.meta_gradient(batch, quiz)
    _, g_single, _ = single.meta_gradient(batch, quiz)
    for x, y in zip(g_whole, g_single):
        torch.testing.assert_close(x, y)


def test_soft_mask_in_training_only(nations):
    learner = learner_for(nations, soft_mask_epsilon=1e-8, gamma=0.5)
    source = learner.modules["teacher"]
    source.mask_epsilon = 1e-8
    entity, relation = source.tables(masked=True)
    assert torch.equal(entity, torch.where(source.entity_mask, source.entity, source.entity * 1e-8))
    # a loss through the pruned branch: pruned weights get 1e-8 × the effective gradient, kept ones
    # all of it (1 + 1e-8 == 1 in float32)
    entity.retain_grad()
    batch = nations.reciprocal(nations.train)[:32]
    scores = source._query(entity[batch[:, 0]], relation[batch[:, 1]]) @ source._candidates(entity).T
    F.cross_entropy(scores, batch[:, 2]).backward()
    kept, pruned = source.entity_mask, ~source.entity_mask
    assert torch.equal(source.entity.grad[kept], entity.grad[kept])
    torch.testing.assert_close(source.entity.grad[pruned], entity.grad[pruned] * 1e-8)
    assert entity.grad[pruned].abs().sum() > 0
    source.mask_epsilon = 0.0
    seen = []
    original = type(source).tables

    def spy(self, masked=False):
        seen.append(self.mask_epsilon if masked else None)
        return original(self, masked)

    type(source).tables = spy
    try:
        learner.train_epoch(1, torch.Generator().manual_seed(0))
    finally:
        type(source).tables = original
    assert 1e-8 in seen and source.mask_epsilon == 0.0  # soft in training, hard again for evaluation


@pytest.mark.parametrize("changes, field", [
    (dict(method="dml", quiz_selection="head"), "quiz_selection"),
    (dict(method="kd", quiz_per_meta_step="all"), "quiz_per_meta_step"),
    (dict(method="metasd_wo_p", soft_mask_epsilon=1e-8), "soft_mask_epsilon"),
    (dict(method="dml", student_eval_modes=("official_dense",)), "student_eval_modes"),
    (dict(method="metasd", student_eval_modes=("dense",)), "student_eval_modes"),
    (dict(method="metasd", student_eval_gammas=(1.2,)), "student_eval_gammas"),
    (dict(method="metasd", student_eval_gammas=(0.0,)), "student_eval_gammas"),
    (dict(method="metasd", kl_mode="official", meta_order="simultaneous"), "meta_order"),
    (dict(method="metasd", loss_weighting="sum"), "loss_weighting"),
])
def test_switches_that_do_not_apply_fail_before_training(changes, field):
    extra = {"teacher": RunConfig(**TINY).to_dict()} if changes.get("method") == "kd" else {}
    with pytest.raises(ValueError, match=f"'{field}'"):
        RunConfig(**(TINY | changes | extra))


def test_switches_at_their_default_keep_every_hash():
    config = RunConfig(method="metasd", **TINY)
    assert config.replace(kl_temperature_squared=True, loss_weighting="alpha_beta", quiz_selection="random",
                          student_eval_modes=["pruned", "official_dense"]).config_hash() == config.config_hash()
    assert config.replace(student_eval_gammas=(0.8,)).config_hash() != config.config_hash()
    assert RunConfig.from_dict(config.to_dict() | {"student_eval_gammas": [0.8]}).student_eval_gammas == (0.8,)


def test_records_hold_the_student_evaluations_and_the_test_history(nations, runs_dir):
    config = RunConfig(method="metasd", student_eval_gammas=(0.8,), test_history=True, gamma=0.5, **TINY)
    record = run(config, runs_dir, device="cpu", dataset=nations)
    rows = {(r["mode"], r["gamma"]): r for r in record["student_eval"]}
    assert set(rows) == {("pruned", 0.5), ("official_dense", 0.5), ("pruned", 0.8), ("official_dense", 0.8)}
    assert rows[("pruned", 0.5)]["metrics"]["MRR"] == pytest.approx(record["test"]["student"]["all"]["MRR"])
    dense_read = rows[("official_dense", 0.5)]["read"]["total"]
    assert dense_read > rows[("pruned", 0.5)]["read"]["total"] == record["parameter_counts"]["student"]["nonzero"]
    assert rows[("pruned", 0.8)]["read"]["total"] < rows[("pruned", 0.5)]["read"]["total"]
    evaluations = [h for h in record["history"] if "valid" in h]
    assert all(set(h["test"]) == set(h["valid"]) for h in evaluations)
    assert record["selected_epoch"] == max(evaluations, key=lambda h: h["valid"]["student"]["MRR"])["epoch"]
