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

(c_i the weight of row i in the mean). The one-hot part is added exactly in fp32 outside the
products, so only P and the inputs are rounded when the products run in bfloat16
(``product_dtype``; the accumulation is fp32 in oneDNN and cuBLAS, the softmax, the loss and the
gradients' sums stay fp32). In bf16 the rows' P is kept, in bf16, for one ∂/∂C product after the
last chunk (the CPU has no bf16 product that accumulates into fp32 in place); the fp32 path
accumulates ∂/∂C chunk by chunk. The forward pass leaves the gradients ready; backward scales them.
"""
from __future__ import annotations

import math

import torch

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
            return _ChunkedSoftmaxCE._forward(ctx, query, candidates, targets, coef, chunk, product_dtype)

    @staticmethod
    def _forward(ctx, query, candidates, targets, coef, chunk, product_dtype):
        low = product_dtype != torch.float32
        q32, c32 = query.detach().float(), candidates.detach().float()
        q_lp, c_lp = (q32.to(product_dtype), c32.to(product_dtype)) if low else (q32, c32)
        q_weighted = q_lp * coef[:, None].to(q_lp.dtype)
        n = q32.shape[0]
        grad_q = torch.empty_like(q32)
        grad_c = torch.zeros_like(c32)
        # bf16: the probabilities of all rows (B, N) in bf16 for one ∂/∂C product at the end (one
        # write and one read instead of a (N, d) fp32 accumulation pass per chunk); fp32: addmm_
        # accumulates ∂/∂C chunk by chunk inside the product
        probs_lp = torch.empty(n, c32.shape[0], dtype=product_dtype, device=q32.device) if low else None
        loss = q32.new_zeros(())
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            rows = torch.arange(stop - start, device=q32.device)
            t, w = targets[start:stop], coef[start:stop]
            probs = torch.softmax(q_lp[start:stop] @ c_lp.T, dim=1, dtype=torch.float32)
            loss -= (probs[rows, t].log() * w).sum()
            if low:
                probs_lp[start:stop] = probs
                grad_q[start:stop] = probs_lp[start:stop] @ c_lp
            else:
                torch.mm(probs, c32, out=grad_q[start:stop])
                grad_c.addmm_(probs.T, q_weighted[start:stop])
        if low:
            grad_c += probs_lp.T @ q_weighted
        grad_q.mul_(coef[:, None]).sub_(coef[:, None] * c32[targets])
        grad_c.index_add_(0, targets, -coef[:, None] * q32)
        ctx.save_for_backward(grad_q.to(query.dtype), grad_c.to(candidates.dtype))
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        grad_q, grad_c = ctx.saved_tensors
        return grad_q * grad_out, grad_c * grad_out, None, None, None, None


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
