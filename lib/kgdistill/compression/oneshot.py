"""Compression without distillation, for the equal-size comparison (notebook 08).

Given a trained dense model (:class:`~kgdistill.core.models.KBCModel`):

* :func:`one_shot_pruned`: a copy seen through a global magnitude mask at rate γ, no training
  (the same mask MetaSD's student uses; ``prune_finetune`` runs then fine-tune it);
* :func:`quantize`: the tables stored at reduced precision — ``fp16`` (half floats) or ``int8``
  (per-row symmetric: ``w ≈ scale_row · q``, ``q`` in [−127, 127], one float32 scale per row) —
  with the bytes the stored tensors take, and the dense model those tensors decode to.

Every result states the parameters it reads (``nonzero``) and the bytes it stores, so a table can
put all methods side by side at equal size.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from ..core.models import KBCModel
from ..core.pruning import magnitude_mask

SCHEMES = ("fp16", "int8")


def one_shot_pruned(model: KBCModel, gamma: float) -> KBCModel:
    """A copy of ``model`` with a fresh global magnitude mask at rate ``gamma`` (``model`` is
    untouched); score it with ``masked=True``. Its ``parameter_counts()["nonzero"]`` is the mask's."""
    pruned = copy.deepcopy(model)
    pruned.set_masks(magnitude_mask(pruned.prunable(), gamma))
    return pruned.eval()


@dataclass
class QuantizedTables:
    """Tables of one model at reduced precision: ``stored[name]`` are the tensors kept (values,
    plus ``<name>.scale`` per-row scales for int8); ``nbytes`` is their total size."""

    scheme: str
    stored: dict[str, torch.Tensor]
    template: KBCModel

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.stored.values())

    def decoded(self) -> dict[str, torch.Tensor]:
        """The float32 tables the stored tensors stand for."""
        out = {}
        for name in self.template.prunable():
            values = self.stored[name]
            if self.scheme == "fp16":
                out[name] = values.float()
            else:
                out[name] = values.float() * self.stored[f"{name}.scale"].unsqueeze(1)
        return out

    def dequantized_model(self) -> KBCModel:
        """A dense float32 model whose tables are :meth:`decoded` (what ranking with it means)."""
        model = copy.deepcopy(self.template)
        model.set_masks(None)
        with torch.no_grad():
            for name, table in self.decoded().items():
                getattr(model, name).copy_(table)
        return model.eval()


@torch.no_grad()
def quantize(model: KBCModel, scheme: str) -> QuantizedTables:
    """Store ``model``'s entity and relation tables at ``scheme`` precision (see the module docstring)."""
    if scheme not in SCHEMES:
        raise ValueError(f"quantization scheme {scheme!r} is not one of {SCHEMES}; choose one of them")
    stored = {}
    for name, table in model.prunable().items():
        table = table.detach().float().cpu()
        if scheme == "fp16":
            stored[name] = table.half()
            continue
        scale = table.abs().amax(dim=1) / 127.0
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero row stays zero
        stored[name] = torch.round(table / scale.unsqueeze(1)).clamp_(-127, 127).to(torch.int8)
        stored[f"{name}.scale"] = scale
    return QuantizedTables(scheme, stored, copy.deepcopy(model).cpu())


def dense_bytes(model: KBCModel) -> int:
    """Bytes of the float32 tables (the reference for ``QuantizedTables.nbytes``)."""
    return sum(t.numel() * 4 for t in model.prunable().values())
