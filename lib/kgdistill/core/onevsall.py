"""The 1-vs-all softmax cross-entropy computed in cache-sized row chunks, gradients fused in.

``softmax_cross_entropy(query, candidates, targets)`` is the (optionally class-weighted) mean of
``CE(query_i · candidatesᵀ, targets_i)`` over the B rows, the loss of every 1-vs-all KGC model
(scores = query (B, d) @ candidates (N, d)ᵀ). Autograd would hold the batch's whole (B, N) score
matrix and pass over it several times (product, log-softmax, NLL, and the same backward): at
FB15k-237's N = 14,541 and B = 1000 that is 58 MB of fp32 per pass, far beyond the caches. Here
the rows go in chunks (:func:`chunk_rows_for`: a chunk's fp32 scores about 8 MiB); per chunk the
scores, the softmax, the loss and both gradients are computed before the next chunk starts:

    S = Q_c Cᵀ,  P = softmax(S),  loss_c = -Σ_i c_i log P_i,y_i
    ∂/∂Q_c = c ⊙ (P C − C_y),     ∂/∂C += (P)ᵀ (c ⊙ Q_c) − scatter_y(c ⊙ Q_c)

(c_i the weight of row i in the mean). The forward pass leaves the gradients ready; backward
scales them.

bf16 products (``product_dtype``; accumulation in fp32 inside oneDNN and cuBLAS; softmax, losses
and the gradients' sums stay fp32). A bf16 product *returns* bf16, so its output is rounded to 8
significant bits: a logit of 20 by up to 0.06, which moves a probability by 6 % and swamps the
difference p_S − p_T that a KL gradient is made of. Two things keep the rounding where it is
harmless (:class:`ScoreOperands`):

- shifted scores: the operands carry one more column, (Q, −m) and (C, 1), so the product returns
  S − m with m_i the row's target score (fp32). Softmax, CE and KL do not change under a per-row
  shift, and the logits that carry the probability mass come out near 0, where bf16 is fine;
- the whole logit gradient in the rounded matrix: c ⊙ (P − E_y) is formed in fp32 and rounded
  once, so P C − C_y never cancels after rounding (P C is rounded relative to C, the difference
  can be a hundred times smaller).

The rows' bf16 matrix is kept for one ∂/∂C product after the last chunk (the CPU has no bf16
product that accumulates into fp32 in place), and the candidates are also kept transposed (K, N)
for the score product (oneDNN's faster layout, measured). The fp32 path is the original
arithmetic, unchanged: it accumulates ∂/∂C chunk by chunk and adds the one-hot part outside.
"""
from __future__ import annotations

import math

import torch

from .chunk_kernels import fused_ce_chunk, fused_distillation_chunk

#: bytes of fp32 scores a chunk aims at (measured best of 2-16 MiB on the project's EPYC, FB15k-237)
CHUNK_BYTES = 8 << 20


def chunk_rows_for(n_candidates: int, batch: int, device: torch.device | str = "cpu") -> int:
    """Rows per chunk: a power of two whose fp32 scores take about :data:`CHUNK_BYTES` (16 to 512
    rows) on a CPU; the whole batch on a GPU (its caches are not the bound there)."""
    if torch.device(device).type != "cpu":
        return batch
    rows = 2 ** round(math.log2(max(1.0, CHUNK_BYTES / (4 * n_candidates))))
    return int(min(batch, max(16, min(512, rows))))


class _ChunkedSoftmaxCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, query, candidates, targets, coef, chunk, product_dtype):
        with torch.autocast(query.device.type, enabled=False):  # the dtypes below are chosen explicitly
            if product_dtype != torch.float32:
                grad_q, grad_c, loss = _low_softmax_ce(query, candidates, targets, coef, chunk, product_dtype)
            else:
                grad_q, grad_c, loss = _fp32_softmax_ce(query, candidates, targets, coef, chunk)
        ctx.save_for_backward(grad_q.to(query.dtype), grad_c.to(candidates.dtype))
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        grad_q, grad_c = ctx.saved_tensors
        return grad_q * grad_out, grad_c * grad_out, None, None, None, None


def _fp32_softmax_ce(query, candidates, targets, coef, chunk):
    """The fp32 chunks: ∂/∂C accumulated chunk by chunk (addmm_), the one-hot part added after."""
    q32, c32 = query.detach().float(), candidates.detach().float()
    q_weighted = q32 * coef[:, None]
    n = q32.shape[0]
    grad_q = torch.empty_like(q32)
    grad_c = torch.zeros_like(c32)
    loss = q32.new_zeros(())
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        rows = torch.arange(stop - start, device=q32.device)
        t, w = targets[start:stop], coef[start:stop]
        probs = torch.softmax(q32[start:stop] @ c32.T, dim=1, dtype=torch.float32)
        loss -= (probs[rows, t].log() * w).sum()
        torch.mm(probs, c32, out=grad_q[start:stop])
        grad_c.addmm_(probs.T, q_weighted[start:stop])
    grad_q.mul_(coef[:, None]).sub_(coef[:, None] * c32[targets])
    grad_c.index_add_(0, targets, -coef[:, None] * q32)
    return grad_q, grad_c, loss


def _low_softmax_ce(query, candidates, targets, coef, chunk, product_dtype):
    """The low-precision chunks (see the module docstring): shifted scores, c ⊙ (P − E_y) rounded
    once, each chunk's elementwise work fused (:func:`kgdistill.core.chunk_kernels.ce_chunk`)."""
    side = ScoreOperands(query, candidates, targets, product_dtype)
    n = side.q32.shape[0]
    side.start(n)
    loss = side.q32.new_zeros(())
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        chunk_loss, matrix = fused_ce_chunk(side.scores(start, stop), targets[start:stop], coef[start:stop])
        loss += chunk_loss
        side.accumulate(start, stop, matrix)
    side.finish(targets, None)
    return side.grad_q, side.grad_c, loss


def softmax_cross_entropy(
    query: torch.Tensor,
    candidates: torch.Tensor,
    targets: torch.Tensor,
    row_weights: torch.Tensor | None = None,
    *,
    chunk_rows: int = 0,
    product_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Mean cross-entropy of the scores ``query @ candidates.T`` against ``targets``.

    ``query`` (B, d) and ``candidates`` (N, d) may require grad (their gradients are computed in
    the forward pass); ``targets`` (B,) int64; ``row_weights`` (B,) the weight of each row in the
    mean (``class_weights[targets]`` reproduces ``F.cross_entropy(..., weight=class_weights)``),
    None for the plain mean. ``chunk_rows`` 0 sizes the chunks with :func:`chunk_rows_for`;
    ``product_dtype`` torch.bfloat16 runs the score products in bf16 (fp32 accumulation).
    Returns a scalar (fp32).
    """
    if query.dim() != 2 or candidates.dim() != 2 or query.shape[1] != candidates.shape[1]:
        raise ValueError(f"query (B, d) and candidates (N, d) must share d; got {tuple(query.shape)} and "
                         f"{tuple(candidates.shape)}")
    n = query.shape[0]
    if row_weights is None:
        coef = torch.full((n,), 1.0 / n, device=query.device)
    else:
        row_weights = row_weights.float()
        coef = row_weights / row_weights.sum()
    chunk = chunk_rows or chunk_rows_for(candidates.shape[0], n, query.device)
    return _ChunkedSoftmaxCE.apply(query, candidates, targets, coef, max(1, int(chunk)), product_dtype)


class _ChunkedDistillation(torch.autograd.Function):
    """Two models' 1-vs-all losses on one batch, each distilling from the other (detached):
    L_a = w_a·CE(a) + (1 − w_a)·KL(p_b ‖ p_a) and L_b likewise with a and b swapped, returned
    stacked (2,). Per chunk: both score products, both log-softmaxes (fp32), the losses and the
    logit gradients ∂L_a/∂z_a = (w_a c_i + (1−w_a)/B) p_a − (1−w_a)/B p_b − w_a c_i e_y
    (fp32 products: the one-hot part added outside; low precision: inside, and the chunk's
    elementwise work in one fused kernel, :mod:`kgdistill.core.chunk_kernels`), then their
    products with the operands."""

    @staticmethod
    def forward(ctx, q_a, c_a, q_b, c_b, targets, coef, weights, train_b, chunk, product_dtype):
        with torch.autocast(q_a.device.type, enabled=False):
            return _ChunkedDistillation._forward(ctx, q_a, c_a, q_b, c_b, targets, coef, weights, train_b, chunk,
                                                 product_dtype)

    @staticmethod
    def _forward(ctx, q_a, c_a, q_b, c_b, targets, coef, weights, train_b, chunk, product_dtype):
        low = product_dtype != torch.float32
        sides = [ScoreOperands(q_a, c_a, targets, product_dtype), ScoreOperands(q_b, c_b, targets, product_dtype)]
        n = q_a.shape[0]
        trained = (True, bool(train_b))
        losses = q_a.new_zeros(2, dtype=torch.float32)
        for side, on in zip(sides, trained):
            if on:
                side.start(n)
        for start in range(0, n if low else 0, chunk):  # low precision: one fused kernel per chunk
            stop = min(n, start + chunk)
            loss_a, loss_b, matrix_a, matrix_b = fused_distillation_chunk(
                sides[0].scores(start, stop), sides[1].scores(start, stop), targets[start:stop], coef[start:stop],
                float(weights[0]), float(weights[1]), n, trained[1])
            losses[0] += loss_a
            losses[1] += loss_b
            sides[0].accumulate(start, stop, matrix_a)
            if trained[1]:
                sides[1].accumulate(start, stop, matrix_b)
        for start in range(0, 0 if low else n, chunk):
            stop = min(n, start + chunk)
            rows = torch.arange(stop - start, device=q_a.device)
            t, w = targets[start:stop], coef[start:stop]
            log_p = [torch.log_softmax(s.scores(start, stop), dim=1, dtype=torch.float32) for s in sides]
            p = [lp.exp() for lp in log_p]
            for k, (side, on) in enumerate(zip(sides, trained)):
                if not on:
                    continue
                own, other = k, 1 - k
                weight = weights[k]
                kl = (p[other] * (log_p[other] - log_p[own])).sum() / n
                losses[k] += weight * -(log_p[own][rows, t] * w).sum() + (1 - weight) * kl
                # matrix part of ∂L/∂z: a_i p_own − b p_other, a_i = w c_i + (1 − w)/B, b = (1 − w)/B
                matrix = (p[own] * (weight * w + (1 - weight) / n)[:, None]).sub_(p[other], alpha=(1 - weight) / n)
                side.accumulate(start, stop, matrix)
        for side, on, weight in zip(sides, trained, weights):
            if on:
                side.finish(targets, weight * coef)
        ctx.save_for_backward(*[g for side, on in zip(sides, trained) if on for g in side.grads(q_a.dtype)])
        ctx.train_b = trained[1]
        return losses

    @staticmethod
    def backward(ctx, grad_losses):
        saved = ctx.saved_tensors
        grad_qa, grad_ca = saved[0] * grad_losses[0], saved[1] * grad_losses[0]
        grad_qb = grad_cb = None
        if ctx.train_b:
            grad_qb, grad_cb = saved[2] * grad_losses[1], saved[3] * grad_losses[1]
        return grad_qa, grad_ca, grad_qb, grad_cb, None, None, None, None, None, None


class ScoreOperands:
    """One model's operands and gradient accumulators in a chunked 1-vs-all pass: the rows'
    scores chunk by chunk (:meth:`scores`), then ∂/∂Q and ∂/∂C of Σ matrix ⊙ scores from the
    rows' logit gradients (:meth:`accumulate`, :meth:`finish`).

    fp32: the scores Q Cᵀ, ∂/∂C accumulated per chunk, the one-hot part added in :meth:`finish`.
    Low precision: the operands are (Q, −m, 0) and (C, 1, 0) in ``product_dtype`` with m_i the
    row's fp32 target score (the zero column keeps the width even, bf16's pair granularity), so
    :meth:`scores` returns S − m; the caller's matrix holds the whole logit gradient, one-hot part
    included, and ∂/∂C is one product after the last chunk."""

    def __init__(self, query: torch.Tensor, candidates: torch.Tensor, targets: torch.Tensor,
                 product_dtype: torch.dtype):
        self.q32, self.c32 = query.detach().float(), candidates.detach().float()
        self.low = product_dtype != torch.float32
        self.dtype = product_dtype
        self.width = self.q32.shape[1]
        if self.low:
            shift = (self.q32 * self.c32[targets]).sum(1)
            self.q_lp = _padded(self.q32, -shift, product_dtype)
            self.c_lp = _padded(self.c32, torch.ones_like(self.c32[:, 0]), product_dtype)
            self.c_lp_t = self.c_lp.T.contiguous()
        else:
            self.q_lp, self.c_lp = self.q32, self.c32

    def scores(self, start: int, stop: int) -> torch.Tensor:
        """(stop − start, N) scores of rows start:stop (shifted by m in low precision)."""
        if self.low:
            return self.q_lp[start:stop] @ self.c_lp_t
        return self.q_lp[start:stop] @ self.c_lp.T

    def start(self, n: int) -> None:
        self.grad_q = torch.empty_like(self.q32)
        self.grad_c = torch.zeros_like(self.c32)
        self.matrix_lp = None
        if self.low:
            self.matrix_lp = torch.empty(n, self.c32.shape[0], dtype=self.dtype, device=self.q32.device)

    def accumulate(self, start: int, stop: int, matrix: torch.Tensor) -> None:
        """Add the products of rows start:stop's logit gradient ``matrix`` (fp32, (rows, N))."""
        if self.low:
            self.matrix_lp[start:stop] = matrix
            self.grad_q[start:stop] = (self.matrix_lp[start:stop] @ self.c_lp)[:, :self.width]
        else:
            torch.mm(matrix, self.c32, out=self.grad_q[start:stop])
            self.grad_c.addmm_(matrix.T, self.q32[start:stop])

    def finish(self, targets: torch.Tensor, onehot_coef: torch.Tensor | None) -> None:
        """After the last chunk: ∂/∂C (low precision), or the one-hot part −coef_i e_y (fp32;
        ``onehot_coef`` None: the matrix had none)."""
        if self.low:
            self.grad_c = (self.matrix_lp.T @ self.q_lp)[:, :self.width].float()
            self.matrix_lp = None
        elif onehot_coef is not None:
            self.grad_q.sub_(onehot_coef[:, None] * self.c32[targets])
            self.grad_c.index_add_(0, targets, -onehot_coef[:, None] * self.q32)

    def grads(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        return self.grad_q.to(dtype), self.grad_c.to(dtype)


def _padded(table: torch.Tensor, column: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(rows, d + 2) ``dtype`` copy of ``table`` with ``column`` and a zero column appended."""
    out = table.new_zeros(table.shape[0], table.shape[1] + 2, dtype=dtype)
    out[:, :table.shape[1]] = table
    out[:, table.shape[1]] = column
    return out


def mutual_distillation(
    student: tuple[torch.Tensor, torch.Tensor],
    teacher: tuple[torch.Tensor, torch.Tensor],
    targets: torch.Tensor,
    alpha: float,
    beta: float,
    *,
    train_teacher: bool = True,
    row_weights: torch.Tensor | None = None,
    chunk_rows: int = 0,
    product_dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The distillation losses of a student and a teacher on one batch, in row chunks.

    ``student`` / ``teacher``: ``(query (B, d), candidates (N, d))`` of each model (their own d).
    Returns ``(L_S, L_T)`` with L_S = α·CE(S) + (1 − α)·KL(p_T ‖ p_S) and L_T = β·CE(T) +
    (1 − β)·KL(p_S ‖ p_T) (KL at temperature 1, batch mean; CE class-weighted by ``row_weights``
    as :func:`softmax_cross_entropy`); each loss's gradient reaches only its own model's operands
    (the other distribution is the target). ``train_teacher=False`` (a frozen teacher, KD) skips
    the teacher's loss and gradients (L_T is then 0). Chunking and ``product_dtype`` as in
    :func:`softmax_cross_entropy`.
    """
    n = targets.shape[0]
    if row_weights is None:
        coef = torch.full((n,), 1.0 / n, device=targets.device)
    else:
        coef = row_weights.float() / row_weights.float().sum()
    candidates = max(student[1].shape[0], teacher[1].shape[0])
    chunk = chunk_rows or chunk_rows_for(candidates, n, targets.device)
    losses = _ChunkedDistillation.apply(student[0], student[1], teacher[0], teacher[1], targets, coef,
                                        (float(alpha), float(beta)), train_teacher, max(1, int(chunk)), product_dtype)
    return losses[0], losses[1]
