"""The training loop: accuracy on UMLS, determinism, resumption, record reuse, selection, configs."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import kgdistill.core.records as records
import kgdistill.metasd.training as training
import kgdistill.protocol.loop as loop
import kgdistill.protocol.runner as runner
from kgdistill.core.evaluation import evaluate
from kgdistill.core.models import build_model
from kgdistill.core.records import atomic_torch_save, read_json
from kgdistill.core.regularizers import regularize
from kgdistill.metasd.config import RunConfig
from kgdistill.metasd.objective import fit_loss
from kgdistill.protocol.runner import run

# measured: test MRR 0.92 in ~3 s on a 2-core CPU (benchmarks/train_speed.py measures speed)
UMLS_CONFIG = RunConfig(
    dataset="UMLS", rank=32, batch_size=256, max_epochs=50, eval_every=10,
    regularizer="N3", reg_weight=1e-2, learning_rate=0.5,
)
# small and quick: 6 epochs, evaluations at 2, 4, 6
SMALL_CONFIG = RunConfig(
    dataset="Kinship", rank=16, batch_size=512, max_epochs=6, eval_every=2,
    regularizer="DURA_W", reg_weight=1e-2, learning_rate=0.3, init_scale=0.1,
)
METRICS = ("MRR", "MR", "H@1", "H@3", "H@10")


@pytest.fixture(scope="module")
def umls_run(tmp_path_factory, umls):
    runs = tmp_path_factory.mktemp("umls_runs")
    record = run(UMLS_CONFIG, runs_dir=runs, device="cpu", dataset=umls)
    return record, runs, None  # speed is measured by benchmarks/train_speed.py, not asserted here


def _comparable(record: dict) -> dict:
    """Everything a rerun must reproduce exactly (wall-clock times and dates excluded)."""
    return {
        "test": record["test"],
        "selected_epoch": record["selected_epoch"],
        "best_valid_mrr": record["best_valid_mrr"],
        "history": [{k: h[k] for k in ("epoch", "loss", "valid") if k in h} for h in record["history"]],
        "parameter_counts": record["parameter_counts"],
        "config_hash": record["config_hash"],
    }


# --- accuracy and the record ------------------------------------------------------------------


def test_complex_on_umls_is_accurate(umls_run):
    record, _, _ = umls_run
    assert record["status"] == "complete"
    assert record["test"]["model"]["all"]["MRR"] >= 0.85
    assert record["test"]["model"]["all"]["H@10"] >= 0.95


def test_record_has_the_required_fields(umls_run, umls):
    record, runs, _ = umls_run
    for key in (
        "status", "run_name", "config_hash", "config", "method", "selected_model", "selected_epoch",
        "best_valid_mrr", "history", "test", "long_tail", "parameter_counts", "seconds_per_epoch",
        "phase_seconds_per_epoch", "provenance",
    ):
        assert key in record, key
    assert record["config"] == UMLS_CONFIG.to_dict()
    assert record["run_name"] == UMLS_CONFIG.run_name() and record["config_hash"] == UMLS_CONFIG.config_hash()
    assert record["method"] == "baseline" and record["selected_model"] == "model"
    test = record["test"]["model"]
    assert set(test) == {"all", "long_tail", "per_relation"}
    assert set(METRICS) <= set(test["all"])
    assert test["long_tail"]["triples"] == record["long_tail"]["test_triples"]
    assert sum(v["triples"] for v in test["per_relation"].values()) == len(umls.test)
    assert set(test["per_relation"]) <= set(umls.relations)
    dense = umls.n_entities * 64 + 2 * umls.n_relations * 64  # ComplEx rank 32: both tables 2·32 wide
    assert record["parameter_counts"]["model"]["dense"] == dense
    assert record["seconds_per_epoch"] > 0
    for key in ("device", "torch", "git_commit"):
        assert record["provenance"][key]
    assert record["provenance"]["torch"] == torch.__version__
    assert record["provenance"]["device"].startswith("cpu")
    assert [h["epoch"] for h in record["history"]] == list(range(1, 51))
    assert [h["epoch"] for h in record["history"] if "valid" in h] == [10, 20, 30, 40, 50]
    assert all((h.get("valid_seconds", 0) > 0) == ("valid" in h) for h in record["history"])
    # the file on disk is the returned record
    out = runs / UMLS_CONFIG.run_name()
    assert read_json(out / "record.json") == json.loads(json.dumps(record))


def test_selected_epoch_is_the_best_validation_epoch(umls_run):
    record, _, _ = umls_run
    evaluated = [(h["valid"]["model"]["MRR"], h["epoch"]) for h in record["history"] if "valid" in h]
    best_mrr = max(m for m, _ in evaluated)
    first_best = min(e for m, e in evaluated if m == best_mrr)
    assert record["selected_epoch"] == first_best
    assert record["best_valid_mrr"] == best_mrr


def test_test_metrics_come_from_the_selected_weights(umls_run, umls):
    record, runs, _ = umls_run
    best = torch.load(runs / UMLS_CONFIG.run_name() / "best.pt", weights_only=False)
    assert best["epoch"] == record["selected_epoch"]
    model = build_model("ComplEx", umls.n_entities, umls.n_relations, 32)
    model.load_state_dict(best["models"]["model"])
    again = evaluate(model.score_tails, umls, "test", batch_size=500)
    assert again == pytest.approx({k: record["test"]["model"]["all"][k] for k in METRICS}, abs=1e-12)


def test_files_are_complete_and_no_temporary_file_is_left(umls_run):
    _, runs, _ = umls_run
    out = runs / UMLS_CONFIG.run_name()
    assert {p.name for p in out.iterdir()} == {"record.json", "config.json", "checkpoint.pt", "best.pt"}
    assert not [p for p in runs.rglob("*") if p.name.endswith(".tmp")]
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=False)
    assert checkpoint["epoch"] == UMLS_CONFIG.max_epochs


def test_existing_record_is_reused_without_training(umls_run, monkeypatch):
    record, runs, _ = umls_run

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run must not train again")

    monkeypatch.setattr(runner, "make_trainer", no_training)
    monkeypatch.setattr(runner, "load_dataset", no_training)
    again = run(UMLS_CONFIG, runs_dir=runs, device="cpu")  # make_trainer/load_dataset would raise
    assert again == json.loads(json.dumps(record))
    with pytest.raises(AssertionError, match="must not train"):
        run(UMLS_CONFIG, runs_dir=runs, device="cpu", force=True)


# --- determinism and resumption ---------------------------------------------------------------


def test_same_config_gives_identical_numbers(runs_dir, kinship):
    first = run(SMALL_CONFIG, runs_dir=runs_dir, device="cpu", dataset=kinship)
    second = run(SMALL_CONFIG, runs_dir=runs_dir, device="cpu", dataset=kinship, force=True)
    assert _comparable(first) == _comparable(second)
    # and a different seed gives different numbers (the comparison can fail)
    other = run(SMALL_CONFIG.replace(seed=1), runs_dir=runs_dir, device="cpu", dataset=kinship)
    assert other["test"] != first["test"]


def _epoch_spy(monkeypatch) -> list[int]:
    epochs: list[int] = []
    original = training.PlainLearner.start_epoch

    def spy(self, epoch):
        epochs.append(epoch)
        return original(self, epoch)

    monkeypatch.setattr(training.PlainLearner, "start_epoch", spy)
    return epochs


def test_interrupted_run_resumes_to_the_uninterrupted_result(tmp_path, kinship, monkeypatch):
    reference = run(SMALL_CONFIG, runs_dir=tmp_path / "straight", device="cpu", dataset=kinship)

    epochs = _epoch_spy(monkeypatch)
    runs = tmp_path / "resumed"
    stopped = run(SMALL_CONFIG, runs_dir=runs, device="cpu", dataset=kinship, stop_after_epoch=2)
    assert stopped["status"] == "interrupted" and stopped["epoch"] == 2
    out = runs / SMALL_CONFIG.run_name()
    assert (out / "checkpoint.pt").exists() and not (out / "record.json").exists()
    assert epochs == [1, 2]
    epochs.clear()
    resumed = run(SMALL_CONFIG, runs_dir=runs, device="cpu", dataset=kinship)
    assert epochs == [3, 4, 5, 6]  # it did resume rather than start over
    assert resumed["status"] == "complete"
    assert _comparable(resumed) == _comparable(reference)
    assert not [p for p in runs.rglob("*") if p.name.endswith(".tmp")]


def test_run_killed_mid_epoch_resumes_from_last_checkpoint(tmp_path, kinship, monkeypatch):
    reference = run(SMALL_CONFIG, runs_dir=tmp_path / "straight", device="cpu", dataset=kinship)
    runs = tmp_path / "killed"
    original = training.PlainLearner.train_step
    state = {"epoch": 0, "steps": 0}

    def start_epoch(self, epoch):
        state["epoch"] = epoch

    def dying_step(self, batch):
        if state["epoch"] == 5:
            state["steps"] += 1
            if state["steps"] == 3:
                raise KeyboardInterrupt  # the process is killed in the middle of epoch 5
        return original(self, batch)

    with monkeypatch.context() as patch:
        patch.setattr(training.PlainLearner, "start_epoch", start_epoch)
        patch.setattr(training.PlainLearner, "train_step", dying_step)
        with pytest.raises(KeyboardInterrupt):
            run(SMALL_CONFIG, runs_dir=runs, device="cpu", dataset=kinship)
    out = runs / SMALL_CONFIG.run_name()
    assert torch.load(out / "checkpoint.pt", weights_only=False)["epoch"] == 4
    assert not (out / "record.json").exists()
    resumed = run(SMALL_CONFIG, runs_dir=runs, device="cpu", dataset=kinship)
    assert _comparable(resumed) == _comparable(reference)


# --- selection never looks at test -------------------------------------------------------------


def test_test_split_is_evaluated_once_after_all_validation(runs_dir, nations, monkeypatch):
    calls: list[str] = []
    original = loop.evaluation_report

    def spy(scorer, dataset, split, *args, **kwargs):
        calls.append(split)
        return original(scorer, dataset, split, *args, **kwargs)

    monkeypatch.setattr(loop, "evaluation_report", spy)
    config = RunConfig(dataset="Nations", rank=8, batch_size=256, max_epochs=5, eval_every=2, init_scale=0.1)
    record = run(config, runs_dir=runs_dir, device="cpu", dataset=nations)
    assert calls == ["valid", "valid", "valid", "test"]  # epochs 2, 4, 5 (the last), then test once
    assert record["selected_epoch"] in (2, 4, 5)


# --- optional loss terms -----------------------------------------------------------------------


def test_entity_weights_and_relation_prediction_runs(runs_dir, nations):
    config = RunConfig(
        dataset="Nations", rank=8, batch_size=256, max_epochs=3, eval_every=1,
        rp_weight=4.0, entity_weights=True, regularizer="DURA", init_scale=0.1,
    )
    record = run(config, runs_dir=runs_dir, device="cpu", dataset=nations)
    assert record["status"] == "complete"
    assert all(math.isfinite(h["loss"]["loss"]) for h in record["history"])
    assert 0 < record["test"]["model"]["all"]["MRR"] <= 1
    plain = run(config.replace(rp_weight=0.0, entity_weights=False), runs_dir=runs_dir, device="cpu", dataset=nations)
    assert plain["run_name"] != record["run_name"]
    assert plain["history"][0]["loss"] != record["history"][0]["loss"]


def test_fit_loss_is_ce_plus_rp_plus_regularizer(nations):
    torch.manual_seed(0)
    model = build_model("ComplEx", nations.n_entities, nations.n_relations, 4, init_scale=0.3).double()
    batch = nations.reciprocal(nations.train[:16])
    weights = nations.entity_frequency_weights().double()
    config = RunConfig(dataset="Nations", rp_weight=2.0, regularizer="DURA_W", reg_weight=0.05, entity_weights=True)
    loss, tails = fit_loss(model, batch, config, class_weights=weights)
    loss, tails = loss.detach(), tails.detach()
    model.requires_grad_(False)
    scores = model.score_tails(batch)
    # weighted CE: Σ w_y · (−log softmax_y) / Σ w_y
    ce = sum(-weights[y] * torch.log_softmax(scores[i], 0)[y] for i, y in enumerate(batch[:, 2].tolist())) / weights[
        batch[:, 2]
    ].sum()
    rp = F.cross_entropy(model.score_relations(batch), batch[:, 1])
    reg = regularize("DURA_W", model(batch)[2], 0.05)
    assert float(loss) == pytest.approx(float(ce + 2.0 * rp + reg), rel=1e-10)
    torch.testing.assert_close(tails, scores)


# --- configuration errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "field,value",
    [
        ("model", "TransE"), ("rank", 0), ("rank", -1), ("gamma", 1.0), ("gamma", -0.1),
        ("dataset", "FB15k"), ("method", "distill"), ("regularizer", "L2"), ("tie_policy", "random"),
        ("batch_size", 0), ("learning_rate", 0.0),
    ],
)
def test_bad_config_raises_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"'{field}'"):
        RunConfig(**{field: value})
    with pytest.raises(ValueError, match=f"'{field}'"):
        RunConfig.from_dict({"dataset": "UMLS", field: value})


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match="rnak"):
        RunConfig.from_dict({"dataset": "UMLS", "rnak": 5})
    assert RunConfig.from_dict({"dataset": "UMLS", "rank": 5}) == RunConfig(dataset="UMLS", rank=5)


def test_run_validates_before_loading_or_training(runs_dir, monkeypatch):
    config = RunConfig(dataset="UMLS", rank=8)
    object.__setattr__(config, "rank", 0)  # bypass construction-time validation

    def forbidden(*args, **kwargs):
        raise AssertionError("must not load data or build a learner for a bad config")

    monkeypatch.setattr(runner, "load_dataset", forbidden)
    monkeypatch.setattr(runner, "make_trainer", forbidden)
    with pytest.raises(ValueError, match="'rank'"):
        run(config, runs_dir=runs_dir, device="cpu")
    assert list(runs_dir.iterdir()) == []


# --- atomic files -----------------------------------------------------------------------------


def test_failed_checkpoint_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    atomic_torch_save({"epoch": 1}, path)

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(records.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_torch_save({"epoch": 2}, path)
    assert torch.load(path, weights_only=False) == {"epoch": 1}
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == ["checkpoint.pt"]


def test_diverged_run_fails_without_record(tmp_path):
    """A non-finite training loss stops the run with an error that names the fix; no record is written."""
    from kgdistill import RunConfig, run

    config = RunConfig(dataset="Nations", rank=8, max_epochs=2, eval_every=1, learning_rate=1e30, init_scale=1.0)
    with pytest.raises(FloatingPointError, match="learning_rate"):
        run(config, runs_dir=tmp_path)
    assert not list(tmp_path.rglob("record.json"))
