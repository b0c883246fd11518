"""The fused per-chunk kernels of the low-precision 1-vs-all step (kgdistill.core.chunk_kernels).

Compiled (torch.compile on CPU) and eager they compute the same fp32 quantities within 1e-6;
the eager functions equal the unfused reference formulas; ``KGDISTILL_COMPILE=0`` and a failing
compile both run the eager function (the latter with a warning).
"""
from __future__ import annotations

import pytest
import torch

from kgdistill import RunConfig, run
from kgdistill.core import chunk_kernels as K


@pytest.fixture(autouse=True)
def compiling(monkeypatch):
    """Compiled kernels here (tests/conftest.py runs the eager twins elsewhere)."""
    monkeypatch.delenv(K.COMPILE_ENV, raising=False)


def _scores(rows=24, n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = (torch.randn(rows, n, generator=g) * 3).bfloat16()
    b = (torch.randn(rows, n, generator=g) * 3).bfloat16()
    targets = torch.randint(0, n, (rows,), generator=g)
    coef = torch.rand(rows, generator=g) / rows
    return a, b, targets, coef


def _close(x, y, tol=1e-6):
    x, y = x.float(), y.float()
    return float((x - y).abs().max()) <= tol * max(1.0, float(y.abs().max()))


def test_the_ce_kernel_is_the_weighted_cross_entropy_and_its_logit_gradient():
    a, _, t, coef = _scores()
    loss, matrix = K.ce_chunk(a, t, coef)
    log_p = a.float().log_softmax(1)
    want = -(log_p[torch.arange(len(t)), t] * coef).sum()
    grad = log_p.exp() * coef[:, None]
    grad[torch.arange(len(t)), t] -= coef
    assert _close(loss, want) and matrix.dtype == torch.bfloat16 and _close(matrix, grad.bfloat16(), 1e-2)


@pytest.mark.parametrize("train_b", [True, False])
def test_the_distillation_kernel_matches_its_formula(train_b):
    a, b, t, coef = _scores(seed=1)
    la, lb = a.float().log_softmax(1), b.float().log_softmax(1)
    rows = torch.arange(len(t))
    want_a = 0.3 * -(la[rows, t] * coef).sum() + 0.7 * (lb.exp() * (lb - la)).sum() / 50
    loss_a, loss_b, m_a, m_b = K.distillation_chunk(a, b, t, coef, 0.3, 0.6, 50, train_b)
    grad_a = la.exp() * (0.3 * coef + 0.7 / 50)[:, None] - lb.exp() * 0.7 / 50
    grad_a[rows, t] -= 0.3 * coef
    assert _close(loss_a, want_a, 1e-5) and _close(m_a, grad_a.bfloat16(), 1e-2)
    assert (m_b is not None) == train_b and (float(loss_b) != 0) == train_b


def test_the_teacher_logit_kernel_ignores_a_per_row_shift_of_the_tangent():
    a, b, _, _ = _scores(seed=2)
    g = K.teacher_logit_chunk(a, b, 0.5)
    shifted = K.teacher_logit_chunk(a, (b.float() + torch.arange(len(b))[:, None]).bfloat16(), 0.5)
    p = a.float().softmax(1)
    want = 0.5 * p * (b.float() - (p * b.float()).sum(1, keepdim=True))
    assert _close(g, want.bfloat16(), 1e-2) and float((g.float() - shifted.float()).abs().max()) < 0.05 * float(
        g.float().abs().max())


@pytest.mark.parametrize("name", ["ce_chunk", "distillation_chunk", "teacher_logit_chunk"])
def test_compiled_and_eager_kernels_agree(name, monkeypatch):
    monkeypatch.delenv(K.COMPILE_ENV, raising=False)
    a, b, t, coef = _scores(rows=40, n=257, seed=3)
    args = {"ce_chunk": (a, t, coef), "distillation_chunk": (a, b, t, coef, 0.4, 0.7, 80, True),
            "teacher_logit_chunk": (a, b, 0.25)}[name]
    kernel = {"ce_chunk": K.fused_ce_chunk, "distillation_chunk": K.fused_distillation_chunk,
              "teacher_logit_chunk": K.fused_teacher_logit_chunk}[name]
    assert K.compiling()
    compiled, eager = kernel(*args), kernel.eager(*args)
    pairs = [(compiled, eager)] if name == "teacher_logit_chunk" else zip(compiled, eager)
    for got, want in pairs:
        if want is None:
            assert got is None
            continue
        assert got.dtype == (torch.float32 if want.dim() == 0 else torch.bfloat16)
        # fp32 losses within 1e-6; the compiled bf16 matrix is the eager fp32 one rounded once
        assert _close(got, want, 1e-6) if want.dim() == 0 else _close(got, want.bfloat16(), 8e-3)
    assert kernel.compiled is not None


def test_the_environment_switch_and_a_failing_compile_run_the_eager_function(monkeypatch):
    a, _, t, coef = _scores()
    want = K.ce_chunk(a, t, coef)
    monkeypatch.setenv(K.COMPILE_ENV, "0")
    kernel = K._Kernel(K.ce_chunk, K._ce_chunk_eager)
    assert not K.compiling() and _close(kernel(a, t, coef)[1], want[1].float(), 8e-3) and kernel.compiled is None
    monkeypatch.delenv(K.COMPILE_ENV)

    def broken(fn, **kwargs):
        def fail(*args):
            raise RuntimeError("no C++ compiler")
        return fail

    monkeypatch.setattr(torch, "compile", broken)
    monkeypatch.setitem(K._STATE, "failed", False)
    with pytest.warns(RuntimeWarning, match="running it eagerly"):
        got = K._Kernel(K.ce_chunk, K._ce_chunk_eager)(a, t, coef)
    assert _close(got[1], want[1].float(), 8e-3) and not K.compiling()


def test_a_dispatch_mode_runs_the_eager_twin_and_keeps_compiling(monkeypatch):
    """The kernel counter of kgdistill.study.costs runs steps under a Python dispatch mode, which
    Dynamo does not trace: the eager twin runs then, and later calls compile as before."""
    from kgdistill.study.costs import count_kernels

    monkeypatch.delenv(K.COMPILE_ENV, raising=False)
    monkeypatch.setitem(K._STATE, "failed", False)
    a, _, t, coef = _scores()
    kernel = K._Kernel(K.ce_chunk, K._ce_chunk_eager)
    assert count_kernels(lambda: kernel(a, t, coef)) > 0
    assert kernel.compiled is None and K.compiling()
    kernel(a, t, coef)
    assert kernel.compiled is not None


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "eager"])
def test_the_bf16_metasd_fast_path_trains_deterministically(compiled, tmp_path, nations, monkeypatch):
    """The fast path of the meta trainer (chunked, bf16 products, the chunk kernels compiled or
    eager): the same config and seed on one CPU give the same history and test numbers, and the
    compiled and eager kernels land on the same MRR within 1e-3 after two epochs."""
    if not compiled:
        monkeypatch.setenv(K.COMPILE_ENV, "0")
    config = RunConfig(dataset="Nations", method="metasd", rank=8, batch_size=64, max_epochs=2, eval_every=1,
                       learning_rate=0.1, regularizer="DURA_W", reg_weight=0.01, one_vs_all="chunked", chunk_rows=16,
                       precision="bf16")
    first = run(config, tmp_path / "a", device="cpu", dataset=nations)
    again = run(config, tmp_path / "b", device="cpu", dataset=nations)
    untimed = lambda r: [{k: v for k, v in h.items() if "seconds" not in k} for h in r["history"]]  # noqa: E731
    assert first["test"] == again["test"] and untimed(first) == untimed(again)
    assert K.compiling() == compiled and first["precision"] == "bf16"
    _MRR[compiled] = first["test"]["student"]["all"]["MRR"]
    if len(_MRR) == 2:
        assert abs(_MRR[True] - _MRR[False]) < 1e-3


_MRR: dict = {}
