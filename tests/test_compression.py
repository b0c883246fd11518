"""Compression without distillation: fixed-mask fine-tuning, one-shot pruning, quantization."""
from __future__ import annotations

import pytest
import torch

from kgdistill.compression.oneshot import dense_bytes, one_shot_pruned, quantize
from kgdistill.core.evaluation import filtered_ranks
from kgdistill.core.models import build_model
from kgdistill.core.pruning import kept_count, magnitude_mask
from kgdistill.metasd.config import RunConfig
from kgdistill.protocol.runner import load_best, run

SOURCE = RunConfig(dataset="Kinship", rank=8, batch_size=1024, max_epochs=4, eval_every=2, init_scale=0.1)


def test_fixed_mask_finetuning_keeps_exactly_the_masks_nonzeros(kinship, runs_dir):
    config = RunConfig(method="prune_finetune", teacher=SOURCE.to_dict(), gamma=0.5, **{
        k: v for k, v in SOURCE.to_dict().items() if k not in ("method", "teacher", "gamma")})
    source, _ = load_best(SOURCE, runs_dir, kinship)
    expected_mask = magnitude_mask(source.prunable(), 0.5)  # the mask of the trained source
    record = run(config, runs_dir, device="cpu", dataset=kinship)
    student, _ = load_best(config, runs_dir, kinship)
    kept = kept_count(source.parameter_counts()["dense"], 0.5)
    assert record["parameter_counts"]["student"]["nonzero"] == kept
    moved = False
    for name, table in student.prunable().items():
        mask = getattr(student, f"{name}_mask")
        assert torch.equal(mask, expected_mask[name])  # the source's mask, never recomputed
        moved |= not torch.equal(table[mask], getattr(source, name)[mask])  # kept weights were trained
    assert moved
    effective = sum(int((t * getattr(student, f"{n}_mask")).count_nonzero()) for n, t in student.prunable().items())
    assert effective == kept  # exactly the mask's non-zeros, no more, none lost
    assert record["dims"] == {"student": SOURCE.rank} and set(record["test"]) == {"student"}


def test_prune_finetune_must_match_its_source():
    with pytest.raises(ValueError, match="teacher.*rank"):
        RunConfig(method="prune_finetune", teacher=SOURCE.to_dict(), dataset="Kinship", rank=16)
    with pytest.raises(ValueError, match="teacher"):
        RunConfig(method="prune_finetune", dataset="Kinship", rank=8)
    a = RunConfig(method="prune_finetune", teacher=SOURCE.to_dict(), dataset="Kinship", rank=8)
    assert a.replace(alpha=0.3).config_hash() == a.config_hash()  # distillation fields do not apply
    assert a.replace(gamma=0.8).config_hash() != a.config_hash()


def test_one_shot_pruning_keeps_the_count_and_leaves_the_model(nations):
    torch.manual_seed(0)
    model = build_model("ComplEx", nations.n_entities, nations.n_relations, 6, init_scale=0.5)
    pruned = one_shot_pruned(model, 0.9)
    assert not model.has_masks
    assert pruned.parameter_counts()["nonzero"] == kept_count(model.parameter_counts()["dense"], 0.9)


@pytest.mark.parametrize("scheme, per_weight", [("fp16", 2), ("int8", 1)])
def test_quantized_bytes_are_the_stored_tensors_and_ranks_match_the_dequantized_model(nations, scheme, per_weight):
    torch.manual_seed(0)
    model = build_model("ComplEx", nations.n_entities, nations.n_relations, 6, init_scale=0.5)
    q = quantize(model, scheme)
    stored = sum(t.numel() * t.element_size() for t in q.stored.values())
    assert q.nbytes == stored
    rows = model.entity.shape[0] + model.relation.shape[0]
    assert q.nbytes == model.parameter_counts()["dense"] * per_weight + (rows * 4 if scheme == "int8" else 0)
    assert q.nbytes < dense_bytes(model)
    decoded = q.decoded()
    scale = 1e-3 if scheme == "fp16" else model.entity.abs().max().item() / 127
    assert torch.allclose(decoded["entity"], model.entity.detach(), atol=scale)
    dense = q.dequantized_model()
    queries = nations.queries("test")
    tables = q.decoded()  # ranking straight from the stored tensors, without building a model

    def from_stored(x):
        return (dense._query(tables["entity"][x[:, 0]], tables["relation"][x[:, 1]])
                @ dense._candidates(tables["entity"]).T)

    ranks = filtered_ranks(from_stored, queries, nations.filters)
    assert torch.equal(ranks, filtered_ranks(dense.score_tails, queries, nations.filters))
    original = filtered_ranks(model.score_tails, queries, nations.filters)
    assert (ranks != original).float().mean() < 0.2  # a lossy copy, but of the same model


def test_unknown_scheme_is_an_error(nations):
    model = build_model("CP", nations.n_entities, nations.n_relations, 4)
    with pytest.raises(ValueError, match="'int4'.*fp16"):
        quantize(model, "int4")
