"""kgdistill.study.analysis: coordinate mass share and one-shot pruning of a trained baseline."""
from __future__ import annotations

import pytest
import torch

from kgdistill import RunConfig, run
from kgdistill.core.models import build_model
from kgdistill.study.analysis import coordinate_mass_share, load_baseline, one_shot_pruning


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
    model = load_baseline(config, tmp_path, umls)
    result = one_shot_pruning(model, umls, gamma=0.9)
    assert result["dense MRR"] == pytest.approx(record["history"][-1]["valid"]["model"]["MRR"], abs=1e-6)
    assert result["pruned MRR"] < result["dense MRR"]  # 90% of a rank-8 model cannot be free
    assert not model.has_masks  # left as it was
    with pytest.raises(ValueError, match="baseline"):
        load_baseline(config.replace(method="dml"), tmp_path, umls)
    (tmp_path / config.run_name() / "best.pt").unlink()  # a committed record without its weights
    with pytest.raises(FileNotFoundError, match="checkpoints are not committed"):
        load_baseline(config, tmp_path, umls)


def test_distile_score_scales_reads_trained_runs_and_never_trains(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    from kgdistill.distile.config import DistilEConfig
    from kgdistill.study.plan import planned_runs
    from kgdistill.study.profile import load_profile

    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("distile_score_scales", root / "scripts" / "distile_score_scales.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    plan = [r.config for r in planned_runs(load_profile("smoke")) if isinstance(r.config, DistilEConfig)
            and r.paper_dataset == "WN18RR" and r.config.model == "TransE" and any("Table 3" in row for row in r.rows)]
    teacher = next(c for c in plan if c.method == "plain" and c.dim == 16)
    student = next(c for c in plan if c.method == "plain" and c.dim == 4)
    for config in (teacher, student):
        run(config, tmp_path / "runs", device="cpu")
    args = ["--profile", "smoke", "--models", "TransE", "--triples", "64", "--runs-dir", str(tmp_path / "runs"),
            "--output-root", str(tmp_path / "out")]
    assert script.main(args) == 0
    out = capsys.readouterr().out
    assert "TransE 8 no-DS: not trained here" in out and "TransE 2 DS: not trained here" in out
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == sorted([teacher.run_name(), student.run_name()])
    table = (tmp_path / "out" / "tables" / "distile_score_scales_WN18RR.csv").read_text().splitlines()
    assert table[0] == "model,dim,run,positives,negatives,gap to teacher" and len(table) == 3
    assert table[1].startswith("TransE,16,teacher,") and table[1].endswith(",0")  # the teacher against itself
    assert table[2].startswith("TransE,4,no-DS,") and float(table[2].rsplit(",", 1)[1]) > 0
