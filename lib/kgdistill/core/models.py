"""Tensor-factorization backbones with 1-vs-all scoring (CP, ComplEx, RESCAL), as in kbc/DURA.

Every model holds two prunable tables, ``entity`` (N, d_e) and ``relation`` (2R, d_r) (reciprocal
relations included), and optional pruning masks of the same shapes as buffers. ``masked=True``
multiplies each table by its mask in the forward pass, so the pruned *student* shares the
weights of the dense *source* model; the weights themselves are never overwritten.

Queries are int64 rows ``(anchor, relation, ...)``; ``score_tails`` ranks every entity as the
answer of ``(anchor, relation, ?)`` in one matrix product. The models are plain ``nn.Module``s
whose forward reads ``self.entity``/``self.relation``, so ``torch.func.functional_call`` can
substitute any parameter dict (the meta-gradient of MetaSD relies on this).
"""
from __future__ import annotations

import torch
from torch import nn

Factors = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class KBCModel(nn.Module):
    """Base class: subclasses define the table widths and three small scoring kernels."""

    name = "base"

    def __init__(self, n_entities: int, n_relations: int, rank: int, init_scale: float = 1e-3):
        """``n_relations`` counts original relations; 2·n_relations rows are allocated."""
        super().__init__()
        if rank <= 0:
            raise ValueError(f"rank must be positive, got {rank}")
        self.n_entities, self.n_relations, self.rank = n_entities, n_relations, rank
        self.entity = nn.Parameter(torch.randn(n_entities, self.entity_width(rank)) * init_scale)
        self.relation = nn.Parameter(torch.randn(2 * n_relations, self.relation_width(rank)) * init_scale)
        self.register_buffer("entity_mask", None)
        self.register_buffer("relation_mask", None)
        #: > 0 makes masked tables soft, W ⊙ (M + ε) (the official code's training mask, 1e-8)
        self.mask_epsilon = 0.0

    # --- sizes (each backbone states its own; budgets and footprints use them) ---------------
    @staticmethod
    def entity_width(rank: int) -> int:
        """Columns of the entity table at ``rank``."""
        raise NotImplementedError

    @staticmethod
    def relation_width(rank: int) -> int:
        """Columns of the relation table at ``rank``."""
        raise NotImplementedError

    @classmethod
    def dense_size(cls, n_entities: int, n_relations: int, rank: int) -> int:
        """Parameters of the dense model: N·entity_width + 2R·relation_width (reciprocals included)."""
        return n_entities * cls.entity_width(rank) + 2 * n_relations * cls.relation_width(rank)

    # --- pruning -----------------------------------------------------------------------
    def prunable(self) -> dict[str, nn.Parameter]:
        """The tables the global magnitude mask ranges over."""
        return {"entity": self.entity, "relation": self.relation}

    def set_masks(self, masks: dict[str, torch.Tensor] | None) -> None:
        """Install (or with ``None`` remove) masks keyed like :meth:`prunable`, stored as bool
        (a quarter of a float mask's memory; multiplying promotes them)."""
        if masks is None:
            self.entity_mask = self.relation_mask = None
            return
        self.entity_mask = masks["entity"].to(device=self.entity.device, dtype=torch.bool)
        self.relation_mask = masks["relation"].to(device=self.relation.device, dtype=torch.bool)

    @property
    def has_masks(self) -> bool:
        return self.entity_mask is not None

    def tables(self, masked: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Effective ``(entity, relation)`` tables, masked when asked and a mask is installed."""
        if masked:
            if self.entity_mask is None:
                raise RuntimeError("masked scoring asked for but no pruning mask is installed; call set_masks first")
            if self.mask_epsilon:
                eps = self.mask_epsilon
                return self.entity * (self.entity_mask + eps), self.relation * (self.relation_mask + eps)
            return self.entity * self.entity_mask, self.relation * self.relation_mask
        return self.entity, self.relation

    def parameter_counts(self) -> dict[str, int]:
        """Dense parameters and the non-zero ones the masked model actually uses."""
        dense = self.entity.numel() + self.relation.numel()
        if self.has_masks:
            nonzero = int(self.entity_mask.count_nonzero() + self.relation_mask.count_nonzero())
        else:
            nonzero = int(self.entity.count_nonzero() + self.relation.count_nonzero())
        return {"dense": dense, "nonzero": nonzero}

    # --- scoring kernels (subclasses) ----------------------------------------------------
    def _query(self, h: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """Query vectors (B, d) whose dot product with :meth:`_candidates` rows is the score."""
        raise NotImplementedError

    def _candidates(self, entity: torch.Tensor) -> torch.Tensor:
        """Entity table as tail candidates (N, d)."""
        return entity

    def _pair(self, h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Head/tail pair vectors (B, d_r) whose dot product with relation rows is the score."""
        raise NotImplementedError

    def _factors(self, h: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> Factors:
        raise NotImplementedError

    # --- public scoring ------------------------------------------------------------------
    def score_tails(self, queries: torch.Tensor, masked: bool = False) -> torch.Tensor:
        """Scores (B, N) of every entity as the tail of ``(queries[:,0], queries[:,1], ?)``."""
        entity, relation = self.tables(masked)
        return self._query(entity[queries[:, 0]], relation[queries[:, 1]]) @ self._candidates(entity).T

    def score_relations(self, triples: torch.Tensor, masked: bool = False) -> torch.Tensor:
        """Scores (B, 2R) of every relation for ``(triples[:,0], ?, triples[:,2])`` (RP loss)."""
        entity, relation = self.tables(masked)
        return self._pair(entity[triples[:, 0]], entity[triples[:, 2]]) @ relation.T

    def score_triples(self, triples: torch.Tensor, masked: bool = False) -> torch.Tensor:
        """Score (B,) of each given triple."""
        entity, relation = self.tables(masked)
        q = self._query(entity[triples[:, 0]], relation[triples[:, 1]])
        return (q * self._candidates(entity)[triples[:, 2]]).sum(-1)

    def score_inputs(self, triples: torch.Tensor, masked: bool = False,
                     tables: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, ...]:
        """The operands of :meth:`forward`'s two score products, for losses that do the products
        themselves (:mod:`kgdistill.core.onevsall`): tail ``query`` (B, d) and ``candidates``
        (N, d), relation-prediction ``pair`` (B, d_r) and ``relations`` (2R, d_r), and the
        regularizer's factors. ``query @ candidates.T`` are :meth:`forward`'s tail scores.
        ``tables``: ``(entity, relation)`` to use instead of the model's own (e.g. MetaSD's virtual
        student), taken as they are (``masked`` is then ignored)."""
        entity, relation = tables if tables is not None else self.tables(masked)
        h, r, t = entity[triples[:, 0]], relation[triples[:, 1]], entity[triples[:, 2]]
        return self._query(h, r), self._candidates(entity), self._pair(h, t), relation, self._factors(h, r, t)

    def forward(
        self, triples: torch.Tensor, masked: bool = False, relation_prediction: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None, Factors]:
        """Training forward pass on triples (B, 3).

        Returns tail scores (B, N), relation scores (B, 2R) or ``None``, and the
        regularizer factors of the batch.
        """
        entity, relation = self.tables(masked)
        h, r, t = entity[triples[:, 0]], relation[triples[:, 1]], entity[triples[:, 2]]
        tails = self._query(h, r) @ self._candidates(entity).T
        rels = self._pair(h, t) @ relation.T if relation_prediction else None
        return tails, rels, self._factors(h, r, t)


class CP(KBCModel):
    """CP / canonical polyadic: score = <h_lhs, r, t_rhs>; entity rows hold [lhs | rhs]."""

    name = "CP"

    @staticmethod
    def entity_width(rank: int) -> int:
        return 2 * rank

    @staticmethod
    def relation_width(rank: int) -> int:
        return rank

    def _query(self, h, r):
        return h[:, : self.rank] * r

    def _candidates(self, entity):
        return entity[:, self.rank :]

    def _pair(self, h, t):
        return h[:, : self.rank] * t[:, self.rank :]

    def _factors(self, h, r, t):
        return h[:, : self.rank], r, t[:, self.rank :]


class ComplEx(KBCModel):
    """ComplEx: score = Re(<h, r, conj(t)>); rows hold [real | imaginary] of ``rank`` complex numbers."""

    name = "ComplEx"

    @staticmethod
    def entity_width(rank: int) -> int:
        return 2 * rank

    @staticmethod
    def relation_width(rank: int) -> int:
        return 2 * rank

    def _split(self, x):
        return x[:, : self.rank], x[:, self.rank :]

    def _query(self, h, r):
        (h_re, h_im), (r_re, r_im) = self._split(h), self._split(r)
        return torch.cat([h_re * r_re - h_im * r_im, h_re * r_im + h_im * r_re], 1)

    def _pair(self, h, t):
        (h_re, h_im), (t_re, t_im) = self._split(h), self._split(t)
        # Re(h r conj(t)) = r_re·Re(h conj t) − r_im·Im(h conj t)
        return torch.cat([h_re * t_re + h_im * t_im, h_re * t_im - h_im * t_re], 1)

    def _factors(self, h, r, t):
        def modulus(x):
            re, im = self._split(x)
            # clamp: pruned (exactly zero) entries would get an infinite sqrt gradient -> NaN
            return torch.sqrt((re**2 + im**2).clamp_min(1e-30))

        return modulus(h), modulus(r), modulus(t)


class RESCAL(KBCModel):
    """RESCAL: score = h^T M_r t with a full (rank × rank) matrix per relation."""

    name = "RESCAL"

    @staticmethod
    def entity_width(rank: int) -> int:
        return rank

    @staticmethod
    def relation_width(rank: int) -> int:
        return rank * rank

    def _matrices(self, r):
        return r.view(-1, self.rank, self.rank)

    def _query(self, h, r):
        return torch.bmm(h.unsqueeze(1), self._matrices(r)).squeeze(1)

    def _pair(self, h, t):
        return (h.unsqueeze(2) * t.unsqueeze(1)).reshape(len(h), -1)

    def _factors(self, h, r, t):
        return h, self._matrices(r), t


BACKBONES: dict[str, type[KBCModel]] = {"CP": CP, "ComplEx": ComplEx, "RESCAL": RESCAL}


def build_model(name: str, n_entities: int, n_relations: int, rank: int, init_scale: float = 1e-3) -> KBCModel:
    """Instantiate a backbone by name (one of :data:`BACKBONES`)."""
    return backbone(name)(n_entities, n_relations, rank, init_scale)


def backbone(name: str) -> type[KBCModel]:
    """The backbone class of ``name``; an unknown name is an error listing the known ones."""
    if name not in BACKBONES:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[name]


def rank_for_budget(name: str, n_entities: int, n_relations: int, parameters: int) -> int:
    """Largest rank whose dense parameter count (:meth:`KBCModel.dense_size`) does not exceed
    ``parameters``; at least 1. Works for any backbone whose size grows with its rank.

    Used to give a separately parameterized student (KD, DML, "w/o P") the same size as a
    pruned one.
    """
    cls = backbone(name)
    low, high = 1, 2
    while cls.dense_size(n_entities, n_relations, high) <= parameters:
        low, high = high, 2 * high
    while high - low > 1:  # invariant: size(low) <= parameters < size(high), or low == 1
        mid = (low + high) // 2
        if cls.dense_size(n_entities, n_relations, mid) <= parameters:
            low = mid
        else:
            high = mid
    return low


def load_module_state(module: nn.Module, state: dict) -> None:
    """``load_state_dict`` that also restores pruning masks absent from a fresh model."""
    if isinstance(module, KBCModel) and "entity_mask" in state:
        module.set_masks({"entity": state["entity_mask"], "relation": state["relation_mask"]})
    module.load_state_dict(state)
