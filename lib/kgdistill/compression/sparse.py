"""Sparse export of a pruned student and sparse inference.

The artifact holds, per prunable table, only the kept weights in CSR form (row pointers, column
indices in the narrowest integer type that fits, float32 values) plus the model's name and sizes.
:func:`load_sparse` rebuilds the masked student exactly (same weights, same dense kernels, hence
bit-identical scores and ranks); :class:`SparseScorer` ranks with sparse × dense products instead,
whose memory is that of the kept weights (scores agree up to float summation order).
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import torch

# CSR support is documented as beta; the operations used here are tested round trip.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")

from ..core.datasets import expand_runs  # noqa: E402
from ..core.models import KBCModel, build_model  # noqa: E402
from ..core.records import atomic_write_bytes, load_torch  # noqa: E402

FORMAT = "kgdistill-sparse-v1"


def _csr_parts(table: torch.Tensor) -> dict[str, torch.Tensor]:
    csr = table.detach().float().cpu().to_sparse_csr()
    width = table.shape[1]
    col_dtype = torch.int16 if width <= torch.iinfo(torch.int16).max else torch.int32
    nnz = csr.values().numel()
    row_dtype = torch.int32 if nnz <= torch.iinfo(torch.int32).max else torch.int64
    return {
        "shape": torch.tensor(table.shape),
        "crow": csr.crow_indices().to(row_dtype),
        "col": csr.col_indices().to(col_dtype),
        "values": csr.values(),
    }


def _csr(parts: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.sparse_csr_tensor(
        parts["crow"].long(), parts["col"].long(), parts["values"], size=tuple(parts["shape"].tolist())
    )


def export_sparse(model: KBCModel, path: str | os.PathLike) -> dict[str, int]:
    """Write the masked tables of ``model`` (masks must be installed) as a sparse artifact.

    Returns ``{"parameters": kept weights, "bytes": file size, "dense_bytes": float32 size of the
    dense model}``.
    """
    if not model.has_masks:
        raise ValueError("export_sparse needs a pruned model: install masks with model.set_masks(...) first")
    entity, relation = model.tables(masked=True)
    artifact = {
        "format": FORMAT,
        "model": model.name,
        "rank": model.rank,
        "n_entities": model.n_entities,
        "n_relations": model.n_relations,
        "tables": {"entity": _csr_parts(entity), "relation": _csr_parts(relation)},
    }
    buffer = io.BytesIO()
    torch.save(artifact, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    kept = sum(int(t["values"].numel()) for t in artifact["tables"].values())
    dense = model.parameter_counts()["dense"]
    return {"parameters": kept, "bytes": Path(path).stat().st_size, "dense_bytes": 4 * dense}


def _read(path: str | os.PathLike) -> dict:
    artifact = load_torch(path)
    if not isinstance(artifact, dict) or artifact.get("format") != FORMAT:
        raise ValueError(
            f"{path} is not a {FORMAT} artifact; create one with kgdistill.compression.sparse.export_sparse"
        )
    return artifact


def load_sparse(path: str | os.PathLike, device: str | torch.device = "cpu") -> KBCModel:
    """Rebuild the pruned student from an artifact as a model with masks (identical scores and ranks)."""
    artifact = _read(path)
    model = build_model(artifact["model"], artifact["n_entities"], artifact["n_relations"], artifact["rank"])
    tables = {name: _csr(parts).to_dense() for name, parts in artifact["tables"].items()}
    with torch.no_grad():
        model.entity.copy_(tables["entity"])
        model.relation.copy_(tables["relation"])
    model.set_masks({name: t != 0 for name, t in tables.items()})
    return model.to(device)


class SparseScorer:
    """Ranks with the kept weights only: gathers query rows from CSR, scores with sparse @ dense."""

    def __init__(self, path: str | os.PathLike):
        artifact = _read(path)
        self.kernels = build_model(artifact["model"], 1, 1, artifact["rank"])  # scoring kernels only
        self.entity = _csr(artifact["tables"]["entity"])
        self.relation = _csr(artifact["tables"]["relation"])
        if artifact["model"] == "CP":  # candidates are the rhs half of each entity row
            self.candidates = self.kernels._candidates(self.entity.to_dense()).contiguous().to_sparse_csr()
        else:
            self.candidates = self.entity

    @staticmethod
    def _rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        crow, col, values = table.crow_indices(), table.col_indices(), table.values()
        rows, position = expand_runs(crow[index], crow[index + 1] - crow[index])
        out = torch.zeros(len(index), table.shape[1], dtype=values.dtype)
        out[rows, col[position]] = values[position]
        return out

    def storage_bytes(self) -> int:
        tables = {id(t): t for t in (self.entity, self.relation, self.candidates)}.values()
        return sum(
            t.crow_indices().numel() * 8 + t.col_indices().numel() * 8 + t.values().numel() * 4 for t in tables
        )

    @torch.no_grad()
    def __call__(self, queries: torch.Tensor) -> torch.Tensor:
        q = self.kernels._query(self._rows(self.entity, queries[:, 0]), self._rows(self.relation, queries[:, 1]))
        return torch.sparse.mm(self.candidates, q.T).T.contiguous()
