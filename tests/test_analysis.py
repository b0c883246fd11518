"""kgdistill.analysis: coordinate mass share and one-shot pruning of a trained baseline."""
from __future__ import annotations

import pytest
import torch

from kgdistill import RunConfig, run
from kgdistill.analysis import coordinate_mass_share, load_best, one_shot_pruning
from kgdistill.models import build_model


def test_mass_share_counts_complex_halves_together():
    model = build_model("ComplEx", 5, 2, 10)
    with torch.no_grad():
        model.entity.zero_()
        model.entity[:, 3] = 1.0       # real part of coordinate 3
        model.entity[:, 10 + 3] = 1.0  # its imaginary part
    assert coordinate_mass_share(model, 0.1) == pytest.approx(1.0)
    with torch.no_grad():
        model.entity.fill_(1.0)
    assert coordinate_mass_share(model, 0.1) == pytest.approx(0.1)
    assert coordinate_mass_share(build_model("CP", 5, 2, 10), 1.0) == pytest.approx(1.0)


def test_one_shot_pruning_of_a_trained_baseline(umls, tmp_path):
    config = RunConfig(dataset="UMLS", model="ComplEx", rank=8, regularizer="N3", reg_weight=0.01, rp_weight=0.0,
                       batch_size=256, max_epochs=3, eval_every=3, learning_rate=0.5)
    record = run(config, tmp_path, device="cpu", dataset=umls)
    model = load_best(config, tmp_path, umls)
    result = one_shot_pruning(model, umls, gamma=0.9)
    assert result["dense MRR"] == pytest.approx(record["history"][-1]["valid"]["model"]["MRR"], abs=1e-6)
    assert result["pruned MRR"] < result["dense MRR"]  # 90% of a rank-8 model cannot be free
    assert not model.has_masks  # left as it was
    with pytest.raises(ValueError, match="baseline"):
        load_best(config.replace(method="dml"), tmp_path, umls)
    (tmp_path / config.run_name() / "best.pt").unlink()  # a committed record without its weights
    with pytest.raises(FileNotFoundError, match="checkpoints are not committed"):
        load_best(config, tmp_path, umls)
