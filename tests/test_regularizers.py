"""Regularizers against values computed by hand on small explicit factors."""
from __future__ import annotations

import pytest
import torch

from kgdistill.core.models import build_model
from kgdistill.core.regularizers import REGULARIZERS, dura, n3, regularize

# A batch of B = 2 CP/ComplEx-style factors (rows = batch, columns = rank 2).
H = torch.tensor([[1.0, -2.0], [0.0, 3.0]], dtype=torch.float64)
R = torch.tensor([[0.5, 1.0], [2.0, 0.0]], dtype=torch.float64)
T = torch.tensor([[1.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)


def test_n3_by_hand():
    # Σ|h|³ = 1 + 8 + 0 + 27 = 36;  Σ|r|³ = 0.125 + 1 + 8 + 0 = 9.125;  Σ|t|³ = 1 + 1 + 1 + 0 = 3
    # (36 + 9.125 + 3) / B=2 = 24.0625;  × weight 0.1 = 2.40625
    assert float(n3((H, R, T), 0.1)) == pytest.approx(2.40625, abs=1e-12)
    assert float(regularize("N3", (H, R, T), 0.1)) == pytest.approx(2.40625, abs=1e-12)


def test_dura_by_hand():
    # Σ(h² + t²) = (1 + 4 + 0 + 9) + (1 + 1 + 1 + 0) = 17
    # h∘r = [[0.5, -2], [0, 0]]  -> Σ(h∘r)² = 0.25 + 4 = 4.25
    # r∘t = [[0.5, 1], [-2, 0]]  -> Σ(r∘t)² = 0.25 + 1 + 4 = 5.25
    # DURA   = 0.1 · (17 + 9.5) / 2 = 1.325
    # DURA_W = 0.1 · (0.5·17 + 1.5·9.5) / 2 = 0.1 · 22.75 / 2 = 1.1375
    assert float(dura((H, R, T), 0.1)) == pytest.approx(1.325, abs=1e-12)
    assert float(regularize("DURA", (H, R, T), 0.1)) == pytest.approx(1.325, abs=1e-12)
    assert float(regularize("DURA_W", (H, R, T), 0.1)) == pytest.approx(1.1375, abs=1e-12)
    assert float(dura((H, R, T), 0.1, entity_coef=0.5, product_coef=1.5)) == pytest.approx(1.1375, abs=1e-12)
    # entity part alone / product part alone
    assert float(dura((H, R, T), 1.0, entity_coef=1.0, product_coef=0.0)) == pytest.approx(17 / 2)
    assert float(dura((H, R, T), 1.0, entity_coef=0.0, product_coef=1.0)) == pytest.approx(9.5 / 2)


def test_dura_rescal_by_hand():
    # item 1: h = [1, 2], t = [3, -1], M = [[1, 2], [0, -1]]
    #   Mᵀh = [1·1 + 0·2, 2·1 + (-1)·2] = [1, 0]      -> 1
    #   M t = [1·3 + 2·(-1), 0·3 + (-1)·(-1)] = [1, 1] -> 2
    #   h² + t² = 1 + 4 + 9 + 1 = 15
    # item 2: h = [0, 1], t = [1, 0], M = [[2, 0], [1, 1]]
    #   Mᵀh = [2·0 + 1·1, 0·0 + 1·1] = [1, 1]          -> 2
    #   M t = [2, 1]                                   -> 5
    #   h² + t² = 1 + 1 = 2
    # DURA:   0.5 · ((15 + 3) + (2 + 7)) / 2 = 6.75
    # DURA_W: 0.5 · ((0.5·15 + 1.5·3) + (0.5·2 + 1.5·7)) / 2 = 0.5 · (12 + 11.5) / 2 = 5.875
    h = torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=torch.float64)
    t = torch.tensor([[3.0, -1.0], [1.0, 0.0]], dtype=torch.float64)
    M = torch.tensor([[[1.0, 2.0], [0.0, -1.0]], [[2.0, 0.0], [1.0, 1.0]]], dtype=torch.float64)
    assert float(regularize("DURA", (h, M, t), 0.5)) == pytest.approx(6.75, abs=1e-12)
    assert float(regularize("DURA_W", (h, M, t), 0.5)) == pytest.approx(5.875, abs=1e-12)


def test_rescal_model_factors_feed_dura_rescal():
    model = build_model("RESCAL", 2, 1, 2).double()
    with torch.no_grad():
        model.entity.copy_(torch.tensor([[1.0, 2.0], [3.0, -1.0]]))
        model.relation.copy_(torch.tensor([[1.0, 2.0, 0.0, -1.0], [0.0, 0.0, 0.0, 0.0]]))
    with torch.no_grad():
        _, _, factors = model(torch.tensor([[0, 0, 1]]))
    # the single item 1 of test_dura_rescal_by_hand: (15 + 3) / 1
    assert float(regularize("DURA", factors, 1.0)) == pytest.approx(18.0, abs=1e-12)


def test_complex_regularizers_use_moduli():
    # rank 1: entity 0 = 3 + 4i (|h| = 5), entity 1 = 0 + 1i (|t| = 1), relation 1 = 0 + 2i (|r| = 2)
    model = build_model("ComplEx", 2, 1, 1).double()
    with torch.no_grad():
        model.entity.copy_(torch.tensor([[3.0, 4.0], [0.0, 1.0]]))
        model.relation.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    with torch.no_grad():
        _, _, factors = model(torch.tensor([[0, 1, 1]]))
    # N3: 5³ + 2³ + 1³ = 134
    assert float(regularize("N3", factors, 1.0)) == pytest.approx(134.0, abs=1e-9)
    # DURA: |h|² + |t|² + |h r|² + |r t|² = 25 + 1 + 100 + 4 = 130
    assert float(regularize("DURA", factors, 1.0)) == pytest.approx(130.0, abs=1e-9)
    # DURA_W: 0.5·26 + 1.5·104 = 169
    assert float(regularize("DURA_W", factors, 1.0)) == pytest.approx(169.0, abs=1e-9)


def test_weight_scales_linearly_and_none_is_zero():
    for name in ("N3", "DURA", "DURA_W"):
        assert float(regularize(name, (H, R, T), 0.3)) == pytest.approx(3 * float(regularize(name, (H, R, T), 0.1)))
    assert float(regularize("none", (H, R, T), 5.0)) == 0.0
    assert set(REGULARIZERS) == {"none", "N3", "DURA", "DURA_W"}


def test_regularizers_are_differentiable():
    h = H.clone().requires_grad_()
    regularize("N3", (h, R, T), 1.0).backward()
    # d/dh Σ|h|³ / B = 3 h |h| / 2
    torch.testing.assert_close(h.grad, 3 * H * H.abs() / 2)


def test_unknown_regularizer_raises():
    with pytest.raises(ValueError, match="unknown regularizer 'L2'"):
        regularize("L2", (H, R, T), 0.1)
