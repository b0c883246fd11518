"""The chunked 1-vs-all cross-entropy (kgdistill.core.onevsall) against the autograd reference.

fp32 chunks agree with ``F.cross_entropy`` over the full score matrix within 1e-5 (relative), bf16
score products within 2e-2; the chunk size changes nothing beyond rounding; class weights, RP,
pruning masks and a batch smaller than a chunk are covered; the baseline learner's chunked step
trains deterministically and lands where the autograd step lands.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kgdistill import RunConfig, run
from kgdistill.core.models import BACKBONES, build_model
from kgdistill.core.onevsall import chunk_rows_for, softmax_cross_entropy
from kgdistill.core.pruning import magnitude_mask
from kgdistill.metasd.objective import baseline_loss, chunked_fit_loss, fit_loss


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm().clamp_min(1e-30))


def _operands(b=37, n=211, d=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    query = (torch.randn(b, d, generator=g) * 0.5).requires_grad_()
    candidates = (torch.randn(n, d, generator=g) * 0.5).requires_grad_()
    targets = torch.randint(0, n, (b,), generator=g)
    weights = torch.rand(n, generator=g) + 0.1
    return query, candidates, targets, weights


def _reference(query, candidates, targets, weights=None):
    loss = F.cross_entropy(query @ candidates.T, targets, weight=weights)
    return (loss, *torch.autograd.grad(loss, (query, candidates)))


def _chunked(query, candidates, targets, weights=None, **kwargs):
    rows = weights[targets] if weights is not None else None
    loss = softmax_cross_entropy(query, candidates, targets, rows, **kwargs)
    return (loss, *torch.autograd.grad(loss, (query, candidates)))


@pytest.mark.parametrize("weighted", [False, True], ids=["mean", "class-weighted"])
@pytest.mark.parametrize("chunk", [1, 5, 16, 37, 512], ids=lambda c: f"chunk{c}")
def test_fp32_chunks_equal_the_full_matrix_cross_entropy(weighted, chunk):
    query, candidates, targets, weights = _operands()
    w = weights if weighted else None
    for got, want in zip(_chunked(query, candidates, targets, w, chunk_rows=chunk),
                         _reference(query, candidates, targets, w)):
        assert rel(got, want) < 1e-5


def test_bf16_products_stay_within_2e_2_of_fp32():
    query, candidates, targets, weights = _operands(b=64, n=500, d=64)
    reference = _reference(query, candidates, targets, weights)
    got = _chunked(query, candidates, targets, weights, chunk_rows=16, product_dtype=torch.bfloat16)
    for g, r in zip(got, reference):
        assert rel(g, r) < 2e-2
    assert rel(got[1], reference[1]) > 0  # the products really ran in bf16


def test_the_chunk_size_changes_nothing_beyond_rounding():
    query, candidates, targets, _ = _operands(b=100, n=300)
    one = _chunked(query, candidates, targets, chunk_rows=100)
    for chunk in (3, 32, 64):
        for a, b in zip(_chunked(query, candidates, targets, chunk_rows=chunk), one):
            assert rel(a, b) < 1e-6


def test_the_backward_scales_by_the_upstream_gradient():
    query, candidates, targets, _ = _operands()
    loss = 3.0 * softmax_cross_entropy(query, candidates, targets, chunk_rows=8)
    gq, gc = torch.autograd.grad(loss, (query, candidates))
    ref = _reference(query, candidates, targets)
    assert rel(gq, 3 * ref[1]) < 1e-5 and rel(gc, 3 * ref[2]) < 1e-5


def test_shapes_that_do_not_match_are_named():
    with pytest.raises(ValueError, match="share d"):
        softmax_cross_entropy(torch.zeros(4, 3), torch.zeros(5, 2), torch.zeros(4, dtype=torch.long))


def test_chunk_rows_follow_the_entity_count_on_cpu_and_take_the_batch_elsewhere():
    assert chunk_rows_for(14541, 1000) == 128          # FB15k-237: 128 rows of fp32 scores ~ 7.4 MB
    assert chunk_rows_for(40943, 1000) == 64           # WN18RR
    assert chunk_rows_for(135, 1000) == 512            # a small graph: capped
    assert chunk_rows_for(135, 100) == 100             # never more than the batch
    assert chunk_rows_for(10**7, 1000) == 16           # never fewer than 16
    assert chunk_rows_for(14541, 1000, "meta") == 1000  # not a CPU: the whole batch


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
@pytest.mark.parametrize("masked", [False, True], ids=["dense", "masked"])
def test_chunked_fit_loss_equals_fit_loss_with_rp_weights_and_masks(backbone, masked, nations):
    torch.manual_seed(0)
    model = build_model(backbone, nations.n_entities, nations.n_relations, rank=6, init_scale=0.3)
    if masked:
        model.set_masks(magnitude_mask(model.prunable(), 0.5))
    config = RunConfig(dataset="Nations", model=backbone, rank=6, rp_weight=0.5, regularizer="N3", reg_weight=0.05)
    batch = nations.reciprocal(nations.train)[:50]
    weights = nations.entity_frequency_weights()
    params = list(model.parameters())
    want, _ = fit_loss(model, batch, config, weights, masked=masked)
    want_grads = torch.autograd.grad(want, params)
    got = chunked_fit_loss(model, batch, config.replace(one_vs_all="chunked", chunk_rows=7), weights, masked=masked)
    got_grads = torch.autograd.grad(got, params)
    assert rel(got, want) < 1e-5
    for g, w in zip(got_grads, want_grads):
        assert rel(g, w) < 1e-5


def test_baseline_loss_takes_the_configured_path(nations):
    torch.manual_seed(0)
    model = build_model("ComplEx", nations.n_entities, nations.n_relations, rank=4, init_scale=0.3)
    batch = nations.reciprocal(nations.train)[:20]
    config = RunConfig(dataset="Nations", rank=4)
    assert torch.equal(baseline_loss(model, batch, config), fit_loss(model, batch, config)[0])  # bit for bit
    chunked = config.replace(one_vs_all="chunked")
    assert torch.equal(baseline_loss(model, batch, chunked), chunked_fit_loss(model, batch, chunked))


def test_the_new_fields_leave_every_existing_hash_alone_and_are_checked():
    config = RunConfig(dataset="UMLS", rank=8)
    assert "one_vs_all" not in config.identity() and "chunk_rows" not in config.identity()
    assert config.replace(one_vs_all="chunked").config_hash() != config.config_hash()
    with pytest.raises(ValueError, match="'meta_order': the chunked meta step is sequential only"):
        RunConfig(dataset="UMLS", method="metasd", one_vs_all="chunked", meta_order="simultaneous")
    with pytest.raises(ValueError, match="'chunk_rows': applies only to one_vs_all 'chunked'"):
        RunConfig(dataset="UMLS", chunk_rows=64)


SMALL = dict(dataset="Kinship", rank=16, batch_size=512, max_epochs=6, eval_every=2, regularizer="DURA_W",
             reg_weight=1e-2, learning_rate=0.3, init_scale=0.1)


def test_the_chunked_baseline_trains_deterministically_to_the_autograd_result(tmp_path, kinship):
    autograd = run(RunConfig(**SMALL), tmp_path / "a", device="cpu", dataset=kinship)
    chunked = RunConfig(**SMALL, one_vs_all="chunked", chunk_rows=64)
    first = run(chunked, tmp_path / "b", device="cpu", dataset=kinship)
    again = run(chunked, tmp_path / "c", device="cpu", dataset=kinship)
    assert first["test"] == again["test"]  # same config and seed on one CPU: the same numbers
    mrr = lambda r: r["test"]["model"]["all"]["MRR"]  # noqa: E731
    assert abs(mrr(first) - mrr(autograd)) < 2e-3


def _distillation_reference(student, teacher, targets, alpha, beta, weights=None):
    """The autograd path's fused objective: w·CE + (1 − w)·KL(other ‖ own), other detached."""
    (qs, cs), (qt, ct) = student, teacher
    zs, zt = qs @ cs.T, qt @ ct.T
    ls, lt = F.log_softmax(zs, 1), F.log_softmax(zt, 1)
    kl = lambda p_log, q_log: F.kl_div(q_log, p_log, reduction="batchmean", log_target=True)  # noqa: E731 KL(p ‖ q)
    loss_s = alpha * F.nll_loss(ls, targets, weight=weights) + (1 - alpha) * kl(lt.detach(), ls)
    loss_t = beta * F.nll_loss(lt, targets, weight=weights) + (1 - beta) * kl(ls.detach(), lt)
    return loss_s, loss_t


@pytest.mark.parametrize("weighted", [False, True], ids=["mean", "class-weighted"])
@pytest.mark.parametrize("product", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_mutual_distillation_equals_the_autograd_objective(weighted, product):
    from kgdistill.core.onevsall import mutual_distillation

    qs, cs, targets, weights = _operands(b=45, n=300, d=8, seed=1)
    qt, ct, _, _ = _operands(b=45, n=300, d=20, seed=2)
    w = weights if weighted else None
    ref_s, ref_t = _distillation_reference((qs, cs), (qt, ct), targets, 0.3, 0.6, w)
    want = [*torch.autograd.grad(ref_s, (qs, cs)), *torch.autograd.grad(ref_t, (qt, ct))]
    rows = weights[targets] if weighted else None
    got_s, got_t = mutual_distillation((qs, cs), (qt, ct), targets, 0.3, 0.6, row_weights=rows, chunk_rows=16,
                                       product_dtype=product)
    got = [*torch.autograd.grad(got_s, (qs, cs), retain_graph=True), *torch.autograd.grad(got_t, (qt, ct))]
    tol = 1e-5 if product == torch.float32 else 2e-2
    assert rel(got_s, ref_s) < tol and rel(got_t, ref_t) < tol
    for g, r in zip(got, want):
        assert rel(g, r) < tol


def test_bf16_keeps_the_distillation_gradient_that_rounded_logits_lose():
    """Large logits (up to ~35) and a student near its teacher: a bf16 product's output rounding
    (0.06 at a logit of 20) would swamp p_S − p_T. The shifted operands and the one-hot part inside
    the rounded matrix keep the KD gradient within 2e-2 of fp32, about half the error of the plain
    bf16 recipe (logits rounded to bf16, then log-softmax and KL in fp32)."""
    from kgdistill.core.onevsall import mutual_distillation

    g = torch.Generator().manual_seed(0)
    qt, ct = torch.randn(64, 32, generator=g) * 1.2, torch.randn(500, 32, generator=g) * 1.2
    targets = (qt @ ct.T).argmax(1)
    qs = (qt + 0.24 * torch.randn(64, 32, generator=g)).requires_grad_()
    cs = (ct + 0.24 * torch.randn(500, 32, generator=g)).requires_grad_()

    def kd_grads(dtype):
        loss, _ = mutual_distillation((qs, cs), (qt, ct), targets, 0.2, 0.2, train_teacher=False, chunk_rows=16,
                                      product_dtype=dtype)
        return torch.autograd.grad(loss, (qs, cs))

    reference, fast = kd_grads(torch.float32), kd_grads(torch.bfloat16)
    log_ps = (qs.bfloat16() @ cs.bfloat16().T).float().log_softmax(1)
    log_pt = (qt.bfloat16() @ ct.bfloat16().T).float().log_softmax(1)
    plain = 0.2 * F.nll_loss(log_ps, targets) + 0.8 * F.kl_div(log_ps, log_pt, log_target=True, reduction="batchmean")
    for got, rounded, want in zip(fast, torch.autograd.grad(plain, (qs, cs)), reference):
        assert rel(got, want) < 2e-2 < rel(rounded, want)
        assert rel(got, want) < 0.6 * rel(rounded, want)


def test_a_frozen_teacher_gets_no_loss_and_no_gradient():
    from kgdistill.core.onevsall import mutual_distillation

    qs, cs, targets, _ = _operands(b=20, n=50, d=6, seed=3)
    qt, ct, _, _ = _operands(b=20, n=50, d=6, seed=4)
    ref_s, _ = _distillation_reference((qs, cs), (qt, ct), targets, 0.5, 0.5)
    loss_s, loss_t = mutual_distillation((qs, cs), (qt.detach(), ct.detach()), targets, 0.5, 0.5, train_teacher=False)
    assert float(loss_t.detach()) == 0.0 and rel(loss_s, ref_s) < 1e-5
    for g, r in zip(torch.autograd.grad(loss_s, (qs, cs)), torch.autograd.grad(ref_s, (qs, cs))):
        assert rel(g, r) < 1e-5


@pytest.mark.parametrize("method", ["dml", "metasd_wo_m", "kd", "prune_finetune", "metasd", "metasd_wo_p"])
def test_a_chunked_learner_step_equals_the_autograd_step(method, nations, tmp_path):
    """One step of each method on the chunked path (fp32): same losses and same updated weights."""
    from kgdistill.protocol.runner import make_trainer

    base = dict(dataset="Nations", rank=8, batch_size=64, rp_weight=0.5, entity_weights=True, init_scale=0.3,
                learning_rate=0.1, regularizer="DURA_W", reg_weight=0.01, alpha=0.3, beta=0.6)
    teacher_state = None
    if method in ("kd", "prune_finetune"):
        teacher = RunConfig(**{**base, "max_epochs": 2})
        record = run(teacher, tmp_path, device="cpu", dataset=nations)
        base["teacher"] = teacher.to_dict()
        teacher_state = torch.load(tmp_path / record["run_name"] / "best.pt", weights_only=False)["models"]["model"]
    batch = nations.reciprocal(nations.train)[:64]
    results = {}
    for path in ("autograd", "chunked"):
        config = RunConfig(**base, method=method, one_vs_all=path, **({"chunk_rows": 16} if path == "chunked" else {}))
        torch.manual_seed(0)
        learner = make_trainer(config, nations, torch.device("cpu"), teacher_state)
        losses = learner.train_step(batch)
        results[path] = (losses, {k: [p.detach().clone() for p in m.parameters()] for k, m in learner.modules.items()})
    (loss_a, params_a), (loss_c, params_c) = results["autograd"], results["chunked"]
    assert loss_a.keys() == loss_c.keys()
    for key in loss_a:
        assert rel(loss_c[key], loss_a[key]) < 1e-5, key
    for name in params_a:
        for a, c in zip(params_a[name], params_c[name]):
            assert rel(c, a) < 1e-5, name


def test_the_chunked_distillation_step_refuses_objectives_it_does_not_compute():
    with pytest.raises(ValueError, match="default objective only"):
        RunConfig(dataset="UMLS", method="dml", one_vs_all="chunked", kl_mode="paper")
    RunConfig(dataset="UMLS", method="dml", one_vs_all="chunked")  # the default objective is fine


@pytest.mark.parametrize("method", ["metasd", "metasd_wo_p"])
@pytest.mark.parametrize("quiz", ["batch", "all"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_chunked_meta_gradient_equals_the_closed_form_one(method, quiz, precision, nations):
    """The meta-gradient (virtual step, quiz direction, teacher-logit gradient) on the chunked path
    equals metastep's closed form in fp32 (itself checked against finite differences in
    test_distillation): within 1e-5 with fp32 products, 2e-2 with bf16 ones."""
    from kgdistill.protocol.runner import make_trainer

    base = dict(dataset="Nations", method=method, rank=8, batch_size=64, rp_weight=0.5, entity_weights=True,
                init_scale=0.3, learning_rate=0.1, regularizer="DURA_W", reg_weight=0.01, alpha=0.3, beta=0.6,
                quiz_per_meta_step=quiz, quiz_batch_size=16, virtual_lr=0.5)
    batch = nations.reciprocal(nations.train)[:64]
    out = {}
    for path in ("autograd", "chunked"):
        torch.manual_seed(0)
        fast = {"chunk_rows": 8, "precision": precision} if path == "chunked" else {"precision": "fp32"}
        learner = make_trainer(RunConfig(**base, one_vs_all=path, **fast), nations, torch.device("cpu"))
        quiz_batch = learner.sample_quiz()
        loss, grads, _ = learner.meta_gradient(batch, quiz_batch)
        out[path] = (loss, grads)
    (loss_a, grads_a), (loss_c, grads_c) = out["autograd"], out["chunked"]
    tol = 1e-5 if precision == "fp32" else 2e-2
    assert rel(loss_c, loss_a) < tol
    assert any(g is not None and float(g.abs().max()) > 0 for g in grads_a)
    errors = [rel(c, a) for a, c in zip(grads_a, grads_c) if a is not None]
    assert all((a is None) == (c is None) for a, c in zip(grads_a, grads_c))
    assert max(errors) < tol
    if precision == "bf16":
        assert max(errors) > 1e-6  # the meta-gradient's products really ran in bf16
