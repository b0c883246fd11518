"""Negative-sampling KGE backbones of DistilE: TransE, TransH (margin loss), ComplEx, RotatE (logistic loss).

Each model holds |R| relation rows (no reciprocal parameters) and exposes

* ``score(h, r, t)``: scores of index tensors of one broadcastable shape (higher = more plausible),
* ``score_tails(queries)``: the project's scorer convention — queries (B, ≥2) int64
  ``(anchor, relation)`` with relation in ``[0, 2R)``; ``relation < R`` ranks every entity as the
  tail of ``(anchor, relation, ?)``, ``relation ≥ R`` ranks every entity as the head of
  ``(?, relation − R, anchor)``. Returns a fresh (B, N) float tensor, so that
  :func:`kgdistill.core.evaluation.evaluation_report` evaluates these models like all others.
* ``penalty(h, r, t)``: the model's own regulariser on a batch (TransH's soft constraints).
* ``parameter_counts()``: ``{"dense", "nonzero"}`` as in :mod:`kgdistill.core.models`.

Score functions (Table 1 of the paper; ``d`` = ``dim``):

* TransE ``−‖ĥ + r − t̂‖₁`` with entities L2-normalised in the score (Bordes et al.'s ‖e‖ = 1),
* TransH ``−‖h⊥ + d_r − t⊥‖₁``, ``x⊥ = x − (ŵ_rᵀx) ŵ_r``, ``ŵ_r = w_r/‖w_r‖``,
* ComplEx ``Re(⟨h, r, t̄⟩)`` with complex dimension ``d`` (2d reals per entity and relation),
* RotatE ``γ − Σ_i |h_i r_i − t_i|`` with ``r_i = e^{iθ_i}``, complex dimension ``d``; γ is part of
  the score so that ``σ(score)`` is the probability of Eq. 6 (ranking is unaffected by it).

Parameter counts reproduce Table 5 (e.g. TransE d=64 on WN18RR: (40943 + 11)·64 = 2,621,056).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: backbone -> loss family ("margin": Eq. 1/3/4; "logistic": Eq. 6/7/8)
LOSS_KINDS: dict[str, str] = {"TransE": "margin", "TransH": "margin", "ComplEx": "logistic", "RotatE": "logistic"}
#: elements of one (queries, entities, d) intermediate when scoring all entities with RotatE, and
#: queries per block: on a CPU blocks that stay in cache (WN18RR, one shared thread: 4.2x faster than
#: one 64 Mi-element block per batch at dim 64, 1.7x at dim 8; benchmarks/distile_ranking.py), on a
#: GPU large ones (fewer launches)
_CHUNK_ELEMENTS = {"cpu": 1 << 18, "cuda": 1 << 24}
_QUERY_BLOCK = {"cpu": 64}


class KGEModel(nn.Module):
    """Base class; subclasses implement ``_score`` (per triple), ``_tails`` and ``_heads`` (all entities)."""

    name = "base"

    def __init__(self, n_entities: int, n_relations: int, dim: int):
        super().__init__()
        if dim <= 0:
            raise ValueError(f"dim must be a positive integer, got {dim}")
        self.n_entities, self.n_relations, self.dim = n_entities, n_relations, dim

    @property
    def loss_kind(self) -> str:
        return LOSS_KINDS[self.name]

    # --- subclasses ------------------------------------------------------------------------
    def score(self, h: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Scores of triples given as int64 index tensors of one shape ``S``; returns float ``S``."""
        raise NotImplementedError

    def _tails(self, h: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """(B,) heads, (B,) relations in [0, R) -> (B, N) scores of every tail."""
        raise NotImplementedError

    def _heads(self, t: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """(B,) tails, (B,) relations in [0, R) -> (B, N) scores of every head."""
        raise NotImplementedError

    def penalty(self, h: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Regulariser of a batch (index tensors); zero unless the model defines one."""
        return torch.zeros((), device=h.device)

    # --- shared ----------------------------------------------------------------------------
    def score_tails(self, queries: torch.Tensor) -> torch.Tensor:
        """Scorer convention of :mod:`kgdistill.core.evaluation`: (B, ≥2) queries -> fresh (B, N) scores."""
        anchor, rel = queries[:, 0], queries[:, 1]
        if len(rel) and (int(rel.max()) >= 2 * self.n_relations or int(rel.min()) < 0):
            raise ValueError(f"query relations must lie in [0, {2 * self.n_relations}) (reciprocals as r + R)")
        out = torch.empty(len(queries), self.n_entities, device=self.device)
        tail = rel < self.n_relations
        if tail.any():
            out[tail] = self._tails(anchor[tail], rel[tail])
        if (~tail).any():
            out[~tail] = self._heads(anchor[~tail], rel[~tail] - self.n_relations)
        return out

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def parameter_counts(self) -> dict[str, int]:
        dense = sum(p.numel() for p in self.parameters())
        nonzero = sum(int(p.count_nonzero()) for p in self.parameters())
        return {"dense": dense, "nonzero": nonzero}


def _xavier(rows: int, cols: int) -> nn.Parameter:
    weight = torch.empty(rows, cols)
    nn.init.xavier_uniform_(weight)
    return nn.Parameter(weight)


class TransE(KGEModel):
    """TransE (Bordes et al. 2013), L1 distance, unit-norm entities."""

    name = "TransE"

    def __init__(self, n_entities: int, n_relations: int, dim: int):
        super().__init__(n_entities, n_relations, dim)
        self.entity = _xavier(n_entities, dim)
        self.relation = _xavier(n_relations, dim)

    def _entities(self, index: torch.Tensor | None = None) -> torch.Tensor:
        table = self.entity if index is None else self.entity[index]
        return F.normalize(table, p=2, dim=-1)

    def score(self, h, r, t):
        return -(self._entities(h) + self.relation[r] - self._entities(t)).abs().sum(-1)

    def _tails(self, h, r):
        return -torch.cdist(self._entities(h) + self.relation[r], self._entities(), p=1)

    def _heads(self, t, r):
        return -torch.cdist(self._entities(t) - self.relation[r], self._entities(), p=1)


class TransH(KGEModel):
    """TransH (Wang et al. 2014): translation on relation hyperplanes, L1 distance.

    ``penalty`` is the paper's soft constraint ``C·(Σ_e [‖e‖² − 1]₊ + Σ_r [(ŵ_rᵀd_r)²/‖d_r‖² − ε²]₊)``
    over the batch's entities and relations (means instead of sums, so C does not scale with B).
    """

    name = "TransH"

    def __init__(self, n_entities: int, n_relations: int, dim: int, soft_c: float = 0.0625, orth_eps: float = 1e-3):
        super().__init__(n_entities, n_relations, dim)
        self.soft_c, self.orth_eps = soft_c, orth_eps
        self.entity = _xavier(n_entities, dim)
        self.relation = _xavier(n_relations, dim)  # translation d_r
        self.normal = _xavier(n_relations, dim)  # hyperplane normal w_r

    @staticmethod
    def _project(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        w = F.normalize(w, p=2, dim=-1)
        return x - (x * w).sum(-1, keepdim=True) * w

    def score(self, h, r, t):
        w = self.normal[r]
        return -(self._project(self.entity[h], w) + self.relation[r] - self._project(self.entity[t], w)).abs().sum(-1)

    def _all(self, anchor: torch.Tensor, r: torch.Tensor, sign: float) -> torch.Tensor:
        out = torch.empty(len(anchor), self.n_entities, device=anchor.device)
        for rel in torch.unique(r).tolist():  # project the entity table once per relation
            rows = torch.nonzero(r == rel).flatten()
            w = self.normal[rel]
            table = self._project(self.entity, w)
            query = self._project(self.entity[anchor[rows]], w) + sign * self.relation[rel]
            out[rows] = -torch.cdist(query, table, p=1)
        return out

    def _tails(self, h, r):
        return self._all(h, r, +1.0)

    def _heads(self, t, r):
        return self._all(t, r, -1.0)

    def penalty(self, h, r, t):
        if self.soft_c == 0:
            return torch.zeros((), device=h.device)
        entities = self.entity[torch.cat([h.reshape(-1), t.reshape(-1)])]
        scale = F.relu(entities.pow(2).sum(-1) - 1.0).mean()
        w, d = F.normalize(self.normal[r.reshape(-1)], dim=-1), self.relation[r.reshape(-1)]
        orth = F.relu((w * d).sum(-1).pow(2) / d.pow(2).sum(-1).clamp_min(1e-12) - self.orth_eps**2).mean()
        return self.soft_c * (scale + orth)


class DistilEComplEx(KGEModel):
    """ComplEx (Trouillon et al. 2016) with complex dimension ``dim``: tables hold ``[Re | Im]``."""

    name = "ComplEx"

    def __init__(self, n_entities: int, n_relations: int, dim: int):
        super().__init__(n_entities, n_relations, dim)
        self.entity = _xavier(n_entities, 2 * dim)
        self.relation = _xavier(n_relations, 2 * dim)

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x[..., : self.dim], x[..., self.dim :]

    def score(self, h, r, t):
        (hr, hi), (rr, ri), (tr, ti) = (
            self._split(self.entity[h]), self._split(self.relation[r]), self._split(self.entity[t])
        )
        return ((hr * rr - hi * ri) * tr + (hr * ri + hi * rr) * ti).sum(-1)

    def _tails(self, h, r):
        (hr, hi), (rr, ri) = self._split(self.entity[h]), self._split(self.relation[r])
        return torch.cat([hr * rr - hi * ri, hr * ri + hi * rr], -1) @ self.entity.T

    def _heads(self, t, r):
        (tr, ti), (rr, ri) = self._split(self.entity[t]), self._split(self.relation[r])
        # Re(e · q) with q = r · conj(t)
        q_re, q_im = rr * tr + ri * ti, ri * tr - rr * ti
        return torch.cat([q_re, -q_im], -1) @ self.entity.T


class _Modulus(torch.autograd.Function):
    """``sqrt(x)`` with gradient 0 where ``x == 0`` (torch.norm's subgradient, as in RotatE's code).

    ``torch.sqrt``'s gradient there is inf, and inf·0 makes the squares' gradient NaN: a RotatE run
    on WN18RR diverged once a relation phase became so small that ``h∘r − t`` of a self-loop
    triple rounded to exactly 0. Elsewhere forward and backward are torch.sqrt's, bit for bit.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        result = torch.sqrt(x)
        ctx.save_for_backward(result)
        return result

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (result,) = ctx.saved_tensors
        return (grad / (2 * result)).masked_fill_(result == 0, 0)  # torch.sqrt's formula, then the zeros


class RotatE(KGEModel):
    """RotatE (Sun et al. 2019): ``γ − Σ_i |h_i e^{iθ_i} − t_i|``, complex dimension ``dim``.

    Entities are initialised uniformly in ``±(γ + ε)/dim`` (RotatE's embedding range) and phases
    are stored as ``θ·range/π`` in the same range, as in the authors' code.
    """

    name = "RotatE"

    def __init__(self, n_entities: int, n_relations: int, dim: int, gamma: float = 6.0, epsilon: float = 2.0):
        super().__init__(n_entities, n_relations, dim)
        self.gamma = float(gamma)
        self.embedding_range = (gamma + epsilon) / dim
        self.entity = nn.Parameter(
            torch.empty(n_entities, 2 * dim).uniform_(-self.embedding_range, self.embedding_range)
        )
        self.relation = nn.Parameter(
            torch.empty(n_relations, dim).uniform_(-self.embedding_range, self.embedding_range)
        )

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x[..., : self.dim], x[..., self.dim :]

    def _rotation(self, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        phase = self.relation[r] * (math.pi / self.embedding_range)
        return torch.cos(phase), torch.sin(phase)

    def score(self, h, r, t):
        (hr, hi), (tr, ti) = self._split(self.entity[h]), self._split(self.entity[t])
        cr, ci = self._rotation(r)
        dist = _Modulus.apply((hr * cr - hi * ci - tr) ** 2 + (hr * ci + hi * cr - ti) ** 2).sum(-1)
        return self.gamma - dist

    def _distance_to_all(self, re: torch.Tensor, im: torch.Tensor) -> torch.Tensor:
        """Σ_i |x_i − e_i| for query points x (B, d) complex and every entity e: (B, N)."""
        ent_re, ent_im = self._split(self.entity)
        out = torch.empty(len(re), self.n_entities, device=re.device)
        kind = re.device.type
        block = _QUERY_BLOCK.get(kind) or max(1, len(re))
        for q in range(0, len(re), block):
            q_re, q_im = re[q : q + block, None, :], im[q : q + block, None, :]
            chunk = max(1, _CHUNK_ELEMENTS.get(kind, _CHUNK_ELEMENTS["cuda"]) // max(1, len(q_re) * self.dim))
            for start in range(0, self.n_entities, chunk):
                # sqrt((x_re - e_re)² + (x_im - e_im)²) summed over d, in place: the same operations
                # in the same order as the per-triple score, so the ranks equal score()'s
                d_re = q_re - ent_re[None, start : start + chunk]
                d_im = q_im - ent_im[None, start : start + chunk]
                out[q : q + block, start : start + chunk] = d_re.square_().add_(d_im.square_()).sqrt_().sum(-1)
        return out

    def _tails(self, h, r):
        (hr, hi), (cr, ci) = self._split(self.entity[h]), self._rotation(r)
        return self.gamma - self._distance_to_all(hr * cr - hi * ci, hr * ci + hi * cr)

    def _heads(self, t, r):
        # |e∘r − t| = |e − t∘r̄| because |r_i| = 1
        (tr, ti), (cr, ci) = self._split(self.entity[t]), self._rotation(r)
        return self.gamma - self._distance_to_all(tr * cr + ti * ci, ti * cr - tr * ci)


def build_kge(
    name: str,
    n_entities: int,
    n_relations: int,
    dim: int,
    margin: float = 6.0,
    epsilon: float = 2.0,
    soft_c: float = 0.0625,
) -> KGEModel:
    """Construct a backbone by name; ``margin``/``epsilon`` feed RotatE's γ/ε, ``soft_c`` TransH's C."""
    if name == "TransE":
        return TransE(n_entities, n_relations, dim)
    if name == "TransH":
        return TransH(n_entities, n_relations, dim, soft_c=soft_c)
    if name == "ComplEx":
        return DistilEComplEx(n_entities, n_relations, dim)
    if name == "RotatE":
        return RotatE(n_entities, n_relations, dim, gamma=margin, epsilon=epsilon)
    raise ValueError(f"unknown DistilE backbone {name!r}; choose one of {sorted(LOSS_KINDS)}")
