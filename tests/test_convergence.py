"""The convergence rule (patience / min_delta) and the stability of committed records' hashes."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from kgdistill.core.records import read_json
from kgdistill.distile.config import DistilEConfig
from kgdistill.metasd.config import RunConfig
from kgdistill.protocol.loop import Plateau
from kgdistill.protocol.runner import config_from_record, run

ROOT = Path(__file__).resolve().parent.parent


def _stops_at(curve: list[float], patience: int, min_delta: float) -> int | None:
    plateau = Plateau(patience, min_delta)
    for i, mrr in enumerate(curve, start=1):
        plateau.update(mrr)
        if plateau.reached:
            return i
    return None


def test_plateau_stops_at_the_right_evaluation():
    curve = [0.10, 0.20, 0.25, 0.26, 0.255, 0.262, 0.30, 0.29, 0.29, 0.29]
    # min_delta 0.02: after 0.25, neither 0.26 nor 0.255 nor 0.262 counts -> 3 stale evaluations at 6
    assert _stops_at(curve, patience=3, min_delta=0.02) == 6
    # patience 4 waits for 0.30 (+0.05), then only 3 stale evaluations remain: never stops
    assert _stops_at(curve, patience=4, min_delta=0.02) is None
    # min_delta 0: every strict rise counts (0.262 > 0.26 resets), stop at the 2nd stale after 0.30
    assert _stops_at(curve, patience=2, min_delta=0.0) == 9
    assert _stops_at(curve, patience=0, min_delta=0.0) is None  # 0: the whole budget
    assert _stops_at([0.5, 0.5, 0.5], patience=2, min_delta=0.0) == 3  # ties are no improvement


def test_plateau_state_round_trips():
    a = Plateau(3, 0.01)
    for x in (0.1, 0.2, 0.2):
        a.update(x)
    b = Plateau(3, 0.01)
    b.load_state_dict(a.state_dict())
    for x in (0.2, 0.2):
        a.update(x)
        b.update(x)
    assert a.reached and b.reached


QUICK = RunConfig(
    dataset="Kinship", rank=8, batch_size=512, max_epochs=40, eval_every=1,
    regularizer="DURA_W", reg_weight=1e-2, learning_rate=0.5, init_scale=0.1,
)


def test_run_stops_on_plateau_and_records_it(tmp_path, kinship):
    config = QUICK.replace(patience=2, min_delta=0.5)  # nothing improves by 0.5: stop after 3 evaluations
    record = run(config, runs_dir=tmp_path, device="cpu", dataset=kinship)
    assert record["converged"] is True and record["stop_reason"] == "plateau"
    assert record["stopped_epoch"] == 3 == len(record["history"])
    assert record["selected_epoch"] in (1, 2, 3)
    budget = run(QUICK.replace(max_epochs=3), runs_dir=tmp_path, device="cpu", dataset=kinship)
    assert budget["converged"] is False and budget["stop_reason"] == "budget" and budget["stopped_epoch"] == 3
    assert budget["test"] == record["test"]  # same training up to the stop


def test_resumed_run_stops_where_the_uninterrupted_one_does(tmp_path, kinship):
    config = QUICK.replace(patience=2, min_delta=0.5)
    whole = run(config, runs_dir=tmp_path / "a", device="cpu", dataset=kinship)
    part = run(config, runs_dir=tmp_path / "b", device="cpu", dataset=kinship, stop_after_epoch=2)
    assert part["status"] == "interrupted"
    resumed = run(config, runs_dir=tmp_path / "b", device="cpu", dataset=kinship)
    assert resumed["test"] == whole["test"] and resumed["stopped_epoch"] == whole["stopped_epoch"]


def test_stop_at_time_stops_at_the_last_checkpoint_before_the_deadline(tmp_path, kinship, monkeypatch):
    import types

    import kgdistill.protocol.loop as loop

    clock = iter(range(100))  # the loop reads the wall clock once at its start and once per checkpoint
    monkeypatch.setattr(loop, "time", types.SimpleNamespace(time=lambda: float(next(clock)),
                                                            perf_counter=loop.time.perf_counter))
    config = QUICK.replace(max_epochs=10)
    # checkpoints at t = 1, 2, 3, ...; each interval 1: at t = 2 one more would end at 3 > 2.5
    part = run(config, runs_dir=tmp_path / "b", device="cpu", dataset=kinship, stop_at_time=2.5)
    assert part == {"status": "interrupted", "epoch": 2}
    clock = iter(range(100))
    resumed = run(config, runs_dir=tmp_path / "b", device="cpu", dataset=kinship, stop_at_time=50.0)
    whole = run(config, runs_dir=tmp_path / "a", device="cpu", dataset=kinship)
    assert resumed["status"] == "complete" and resumed["test"] == whole["test"]


def test_convergence_fields_at_their_default_leave_the_hash_unchanged():
    assert QUICK.replace(patience=0, min_delta=0.0).config_hash() == QUICK.config_hash()
    assert QUICK.replace(patience=5).config_hash() != QUICK.config_hash()
    assert "patience" not in QUICK.identity() and "patience" in QUICK.replace(patience=5).identity()
    d = DistilEConfig(dataset="UMLS", dim=8)
    assert d.replace(min_delta=0.001).config_hash() != d.config_hash()


@pytest.mark.parametrize("profile", ["cpu"])
def test_every_committed_record_is_found_by_its_unchanged_hash(profile):
    folders = sorted((ROOT / "results" / profile / "runs").glob("*/record.json"))
    assert folders, "no committed records"
    for path in folders:
        record = read_json(path)
        config = config_from_record(record)
        assert isinstance(config, DistilEConfig if record["run_name"].startswith("distile-") else RunConfig)
        assert config.run_name() == record["run_name"] == path.parent.name
        assert math.isfinite(record["test"][record["selected_model"]]["all"]["MRR"])


def test_a_diverged_run_names_its_own_fields_and_keeps_its_checkpoint(tmp_path, kinship, monkeypatch):
    from kgdistill.distile.trainer import DistilETrainer

    real = DistilETrainer.train_epoch

    def epoch_3_diverges(self, epoch, generator):
        fields = real(self, epoch, generator)
        return {**fields, "loss": {"loss": math.nan}} if epoch == 3 else fields

    monkeypatch.setattr(DistilETrainer, "train_epoch", epoch_3_diverges)
    config = DistilEConfig(dataset="Kinship", model="TransE", dim=4, max_epochs=5, eval_every=2)
    with pytest.raises(FloatingPointError, match="diverged in epoch 3") as err:
        run(config, runs_dir=tmp_path, device="cpu", dataset=kinship)
    assert "lower learning_rate" in str(err.value) and "init_scale" not in str(err.value)  # DistilE has neither
    assert (tmp_path / config.run_name() / "checkpoint.pt").exists()  # epoch 2's: a retry resumes from it
