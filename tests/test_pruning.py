"""Global magnitude pruning: exact kept counts, globality across tables, largest |w| kept."""
from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

from kgdistill.core.pruning import kept_count, magnitude_mask, mask_density

GAMMAS = ["0", "0.1", "0.3", "0.5", "0.7", "0.75", "0.9", "0.95", "0.99", "0.999"]
SIZES = [(1, 1), (7, 3), (13, 11), (100, 10), (37, 29)]  # (entity rows, width); relation table is (5, width+1)


def _exact_keep(total: int, gamma: str) -> int:
    """⌈(1 − γ)·P⌉ in exact rational arithmetic (γ given as its decimal string)."""
    return math.ceil((1 - Fraction(gamma)) * total)


def _tables(rows: int, width: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"entity": torch.randn(rows, width, generator=g), "relation": torch.randn(5, width + 1, generator=g)}


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("rows,width", SIZES)
def test_keeps_exactly_ceil_and_the_largest_magnitudes(gamma, rows, width):
    tables = _tables(rows, width)
    before = {k: v.clone() for k, v in tables.items()}
    masks = magnitude_mask(tables, float(gamma))
    total = sum(t.numel() for t in tables.values())
    keep = _exact_keep(total, gamma)
    assert kept_count(total, float(gamma)) == keep
    assert set(masks) == {"entity", "relation"}
    for name, table in tables.items():
        assert masks[name].shape == table.shape and masks[name].dtype == torch.bool
        assert torch.equal(table, before[name])  # masks only, weights untouched
    assert sum(int(m.sum()) for m in masks.values()) == keep
    values = torch.cat([tables[n].abs().reshape(-1) for n in tables])
    kept = torch.cat([masks[n].reshape(-1) for n in tables])
    if 0 < keep < total:  # random normal values: no ties, the kept set is exactly the top |w|
        assert float(values[kept].min()) > float(values[~kept].max())
    assert mask_density(masks) == pytest.approx(keep / total)


def test_non_integer_products_round_up():
    assert kept_count(7, 0.5) == 4  # 3.5 -> 4
    assert kept_count(10, 0.99) == 1  # 0.1 -> 1
    assert kept_count(1000, 0.9) == 100  # (1 - 0.9)·1000 = 100.00000000000001 in floats
    assert kept_count(10, 0.7) == 3  # 3.0000000000000004 in floats
    assert kept_count(3, 0.0) == 3
    assert kept_count(1, 0.999) == 1


def test_global_threshold_can_prune_a_whole_table():
    tables = {"entity": torch.full((4, 3), 1e-6), "relation": torch.arange(1.0, 13.0).view(3, 4)}
    masks = magnitude_mask(tables, 0.5)  # keep 12 of 24: exactly the relation table
    assert int(masks["entity"].sum()) == 0
    assert bool(masks["relation"].all())
    masks = magnitude_mask(tables, 0.75)  # keep 6: the 6 largest relation weights 7..12
    assert int(masks["entity"].sum()) == 0
    assert sorted(tables["relation"][masks["relation"]].tolist()) == [7.0, 8.0, 9.0, 10.0, 11.0, 12.0]


def test_magnitude_not_sign_decides():
    tables = {"entity": torch.tensor([[-5.0, 0.1], [0.2, 3.0]]), "relation": torch.tensor([[-0.3, -4.0]])}
    masks = magnitude_mask(tables, 0.5)  # P = 6, keep 3: |-5|, |-4|, |3|
    assert masks["entity"].tolist() == [[True, False], [False, True]]
    assert masks["relation"].tolist() == [[False, True]]


def test_ties_still_give_the_exact_count():
    tables = {"entity": torch.ones(5, 4), "relation": torch.ones(3, 3)}
    for gamma in (0.1, 0.5, 0.9):
        masks = magnitude_mask(tables, gamma)
        assert sum(int(m.sum()) for m in masks.values()) == kept_count(29, gamma)


def test_works_on_parameters_with_grad():
    p = torch.nn.Parameter(torch.randn(6, 6))
    masks = magnitude_mask({"entity": p, "relation": torch.randn(2, 2)}, 0.5)
    assert sum(int(m.sum()) for m in masks.values()) == 20
    assert p.grad is None


@pytest.mark.parametrize("gamma", [1.0, 1.5, -0.1, -1e-9])
def test_gamma_out_of_range_raises(gamma):
    with pytest.raises(ValueError, match="gamma"):
        magnitude_mask(_tables(3, 3), gamma)
    with pytest.raises(ValueError, match="gamma"):
        kept_count(10, gamma)


def test_mask_density_by_hand():
    masks = {"a": torch.tensor([[True, False], [False, False]]), "b": torch.tensor([True, True, False, True])}
    assert mask_density(masks) == pytest.approx(4 / 8)
    assert mask_density({"a": torch.ones(3, dtype=torch.bool)}) == 1.0
    assert mask_density({"a": torch.tensor([0.0, 1.0, 0.0, 0.0])}) == 0.25
