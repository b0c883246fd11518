"""The elementwise part of one chunk of the low-precision 1-vs-all step, fused into one kernel each.

:mod:`kgdistill.core.onevsall` runs the score products in bf16; between them, each chunk's rows
go through log-softmax, the losses and the logit gradient in fp32. In eager PyTorch that is a
dozen passes over a (rows, N) array (each a few MB, beyond L2), and on the project's EPYC they
took as long as the products (measured with ``benchmarks/train_speed.py`` and the profiler:
log-softmax, exp, the KL's temporaries, the fp32 -> bf16 copy). Here each chunk's elementwise
work is one function, compiled by ``torch.compile`` (Inductor's C++ backend: a few loops over
the rows with the reductions fused in) on CPU tensors; elsewhere, or where compiling fails (no
C++ compiler), or with ``KGDISTILL_COMPILE=0``, an eager twin with in-place steps runs instead.
Both compute the same quantities in fp32; they differ only in fp32 rounding order (tested within
1e-6), so a run keeps one of them throughout (the choice is made once per process).

Each function takes the chunk's bf16 scores (shifted by a per-row constant: see onevsall) and
returns the fp32 loss terms and the logit-gradient matrix for the next products (bf16 from the
compiled formula, fp32 from the eager twin: the caller's bf16 buffer rounds it).
"""
from __future__ import annotations

import os
import warnings

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode

#: environment switch: "0" runs the kernels eagerly (e.g. to compare, or where compiling is slow)
COMPILE_ENV = "KGDISTILL_COMPILE"


def ce_chunk(scores: torch.Tensor, targets: torch.Tensor, coef: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of one chunk. ``scores`` (r, N) bf16, ``targets`` (r,) int64, ``coef`` (r,)
    fp32 row weights of the batch mean. Returns ``(−Σ_i c_i log p_i,y_i`` (fp32 scalar),
    ``c ⊙ (P − E_y)`` (r, N) bf16)."""
    s = scores.float()
    log_z = torch.logsumexp(s, 1, keepdim=True)
    log_py = s.gather(1, targets[:, None]) - log_z
    loss = -(log_py.squeeze(1) * coef).sum()
    onehot = torch.arange(s.shape[1], device=s.device)[None, :] == targets[:, None]
    matrix = torch.exp(s - log_z) * coef[:, None] - onehot * coef[:, None]
    return loss, matrix.to(scores.dtype)


def distillation_chunk(
    scores_a: torch.Tensor, scores_b: torch.Tensor, targets: torch.Tensor, coef: torch.Tensor,
    weight_a: float, weight_b: float, batch: int, train_b: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Two models' distillation losses on one chunk (see onevsall's ``mutual_distillation``):
    L_a = w_a·CE(a) + (1 − w_a)·KL(p_b ‖ p_a) and, if ``train_b``, L_b with a and b swapped
    (KL summed over the chunk's rows and divided by the ``batch`` size B). Returns
    ``(L_a, L_b, ∂L_a/∂z_a, ∂L_b/∂z_b)`` (fp32 scalars, (r, N) bf16 matrices; L_b's are 0 and
    None unless ``train_b``)."""
    la = torch.log_softmax(scores_a.float(), 1)
    lb = torch.log_softmax(scores_b.float(), 1)
    pa, pb = la.exp(), lb.exp()
    onehot = (torch.arange(la.shape[1], device=la.device)[None, :] == targets[:, None]).float()

    def side(log_own, log_other, p_own, p_other, weight):
        ce = -(log_own.gather(1, targets[:, None]).squeeze(1) * coef).sum()
        kl = (p_other * (log_other - log_own)).sum() / batch
        matrix = (p_own * (weight * coef + (1 - weight) / batch)[:, None] - p_other * ((1 - weight) / batch)
                  - onehot * (weight * coef)[:, None])
        return weight * ce + (1 - weight) * kl, matrix.to(scores_a.dtype)

    loss_a, matrix_a = side(la, lb, pa, pb, weight_a)
    if not train_b:
        return loss_a, torch.zeros((), device=la.device), matrix_a, None
    loss_b, matrix_b = side(lb, la, pb, pa, weight_b)
    return loss_a, loss_b, matrix_a, matrix_b


def teacher_logit_chunk(scores_t: torch.Tensor, tangent: torch.Tensor, scale: float) -> torch.Tensor:
    """MetaSD's closed-form gradient of the teacher's logits on one chunk:
    G = scale · p_T ⊙ (u − ⟨p_T, u⟩) with p_T = softmax(``scores_t``) and u = ``tangent`` (both
    (r, N) bf16, each shifted by a per-row constant, which G does not see). Returns G in bf16."""
    p = torch.softmax(scores_t.float(), 1)
    u = tangent.float()
    return (p * (u - (p * u).sum(1, keepdim=True)) * scale).to(scores_t.dtype)


def _ce_chunk_eager(scores, targets, coef):
    """:func:`ce_chunk` in place, for eager execution (fp32 matrix: the caller rounds it)."""
    rows = torch.arange(len(targets), device=targets.device)
    log_p = torch.log_softmax(scores, 1, dtype=torch.float32)
    loss = -(log_p[rows, targets] * coef).sum()
    matrix = log_p.exp_().mul_(coef[:, None])
    matrix[rows, targets] -= coef
    return loss, matrix


def _distillation_chunk_eager(scores_a, scores_b, targets, coef, weight_a, weight_b, batch, train_b):
    """:func:`distillation_chunk` with in-place steps, for eager execution (fp32 matrices)."""
    rows = torch.arange(len(targets), device=targets.device)
    log_p = [torch.log_softmax(s, 1, dtype=torch.float32) for s in (scores_a, scores_b)]
    p = [lp.exp() for lp in log_p]
    out = []
    for own, weight in ((0, weight_a), (1, weight_b))[: 1 + bool(train_b)]:
        other = 1 - own
        kl = (p[other] * (log_p[other] - log_p[own])).sum() / batch
        loss = weight * -(log_p[own][rows, targets] * coef).sum() + (1 - weight) * kl
        matrix = (p[own] * (weight * coef + (1 - weight) / batch)[:, None]).sub_(p[other], alpha=(1 - weight) / batch)
        matrix[rows, targets] -= weight * coef
        out.append((loss, matrix))
    if not train_b:
        out.append((torch.zeros((), device=scores_a.device), None))
    return out[0][0], out[1][0], out[0][1], out[1][1]


def _teacher_logit_chunk_eager(scores_t, tangent, scale):
    """:func:`teacher_logit_chunk` in place, for eager execution (fp32 G)."""
    p = torch.softmax(scores_t, 1, dtype=torch.float32)
    u = tangent.float()
    return u.sub_((p * u).sum(1, keepdim=True)).mul_(p).mul_(scale)


class _Kernel:
    """``formula`` compiled on first use on CPU tensors; ``eager`` (the same quantities with
    in-place steps, the fast form without a compiler) on other devices, with compiling switched
    off, after a failed compile, and while a Python dispatch mode is active (e.g. the kernel
    counter of ``kgdistill.study.costs``), which Dynamo does not trace."""

    def __init__(self, formula, eager):
        self.formula, self.eager = formula, eager
        self.compiled = None

    def __call__(self, *args):
        if args[0].device.type != "cpu" or not compiling() or _get_current_dispatch_mode() is not None:
            return self.eager(*args)
        if self.compiled is None:
            self.compiled = torch.compile(self.formula, dynamic=True)
        try:
            return self.compiled(*args)
        except Exception as error:  # no C++ compiler, or an Inductor limitation: fall back for the process
            warnings.warn(f"kgdistill: torch.compile of {self.formula.__name__} failed ({type(error).__name__}: "
                          f"{str(error)[:200]}); running it eagerly for the rest of this process "
                          f"(set {COMPILE_ENV}=0 to skip compiling)", RuntimeWarning, stacklevel=2)
            _STATE["failed"] = True
            return self.eager(*args)


_STATE = {"failed": False}


def compiling() -> bool:
    """Whether the kernels run compiled in this process (CPU tensors only)."""
    return os.environ.get(COMPILE_ENV, "1") != "0" and not _STATE["failed"]


fused_ce_chunk = _Kernel(ce_chunk, _ce_chunk_eager)
fused_distillation_chunk = _Kernel(distillation_chunk, _distillation_chunk_eager)
fused_teacher_logit_chunk = _Kernel(teacher_logit_chunk, _teacher_logit_chunk_eager)
