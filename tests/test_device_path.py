"""The fast-device path, checked on CPU: precision choices and steps free of host synchronisation.

A training step must not read a tensor back to the host (``.item()``, ``float(t)``, ``.tolist()``:
all dispatch ``aten::_local_scalar_dense``) nor move a tensor to another device; on CUDA either
would stall the GPU every step. A dispatch mode records every op of the step and fails on those.
The one read allowed is of the optimizers' own step counters: torch keeps them on the CPU even for
CUDA parameters (a host read, no device sync).
"""
from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from kgdistill import RunConfig, run
from kgdistill.core.models import build_model
from kgdistill.distile.config import DistilEConfig
from kgdistill.distile.sampling import corrupt
from kgdistill.distile.trainer import DistilETrainer
from kgdistill.metasd.distillation import DistillationLearner
from kgdistill.protocol.configbase import resolve_precision
from kgdistill.protocol.runner import make_trainer

TINY = dict(dataset="Nations", rank=8, batch_size=64, max_epochs=2, eval_every=1, init_scale=0.1)
SYNCING = {"aten::_local_scalar_dense", "aten::item", "aten::nonzero", "aten::tolist"}


class StepOps(TorchDispatchMode):
    """Records op names (but reads of the ``allowed`` tensors) and the devices of the results."""

    def __init__(self, allowed: set[int]):
        super().__init__()
        self.ops, self.devices, self.allowed = [], set(), allowed

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func._schema.name == "aten::_local_scalar_dense" and id(args[0]) in self.allowed:
            return out
        self.ops.append(func._schema.name)
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.devices.add(t.device.type)
        return out


def _optimizer_steps(trainer) -> set[int]:
    return {id(state["step"]) for opt in trainer.optimizers.values() for state in opt.state.values() if "step" in state}


def _assert_step_stays_on_device(step, trainer, device_type="cpu"):
    step()  # warm-up: optimizers create their state lazily
    with StepOps(_optimizer_steps(trainer)) as ops:
        step()
    synced = sorted(set(ops.ops) & SYNCING)
    assert not synced, f"the step reads tensors back to the host: {synced}"
    assert ops.devices <= {device_type}, f"the step created tensors on {ops.devices - {device_type}}"
    assert len(ops.ops) > 20  # the mode really saw the step


@pytest.mark.parametrize("method", ["baseline", "dml", "metasd", "metasd_wo_m"])
def test_metasd_family_steps_do_not_synchronise(nations, method):
    config = RunConfig(method=method, **TINY)
    torch.manual_seed(0)
    trainer = make_trainer(config, nations, torch.device("cpu"))
    batch = trainer.train_triples[:64]
    trainer.start_epoch(1)
    _assert_step_stays_on_device(lambda: trainer.train_step(batch), trainer)


def test_kd_step_does_not_synchronise(nations):
    teacher = RunConfig(**TINY)
    config = RunConfig(method="kd", teacher=teacher.to_dict(), **TINY)
    state = build_model("ComplEx", nations.n_entities, nations.n_relations, 8).state_dict()
    trainer = DistillationLearner(config, nations, torch.device("cpu"), state)
    batch = trainer.train_triples[:64]
    _assert_step_stays_on_device(lambda: trainer.train_step(batch), trainer)


@pytest.mark.parametrize("model", ["TransE", "ComplEx"])
def test_distile_step_does_not_synchronise(nations, model):
    teacher = DistilEConfig(dataset="Nations", model=model, dim=8, max_epochs=2)
    config = DistilEConfig(dataset="Nations", model=model, dim=4, method="ds", teacher=teacher.to_dict(),
                           max_epochs=2, stage1_epochs=1)
    from kgdistill.distile.trainer import build_backbone

    trainer = DistilETrainer(config, nations, torch.device("cpu"), build_backbone(teacher, nations).state_dict())
    pos = nations.train[:64]
    neg = corrupt(pos, config.negatives, nations.n_entities, torch.Generator().manual_seed(0))
    for stage in (1, 2):
        trainer.modules["teacher"].requires_grad_(stage == 2)
        _assert_step_stays_on_device(lambda: trainer.step(pos, neg, stage), trainer)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: checks the same on the GPU in sync-debug mode")
def test_cuda_steps_raise_no_sync_warning(nations):
    config = RunConfig(method="metasd", **TINY)
    trainer = make_trainer(config, nations, torch.device("cuda"))
    batch = trainer.train_triples[:64]
    trainer.start_epoch(1)
    torch.cuda.set_sync_debug_mode("error")
    try:
        trainer.train_step(batch)
    finally:
        torch.cuda.set_sync_debug_mode(0)


def test_precision_resolution():
    assert resolve_precision("auto", "cpu") == "fp32" and resolve_precision("auto", "cuda") == "tf32"
    assert resolve_precision("tf32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="'precision'"):
        RunConfig(precision="fp16", **TINY)
    assert RunConfig(precision="auto", **TINY).config_hash() == RunConfig(**TINY).config_hash()


#: bf16 keeps 8 bits of mantissa: a score product of rank-8 ComplEx rows is within ~1% of fp32
BF16_SCORE_TOLERANCE = 2e-2


def test_bf16_scores_stay_within_the_stated_tolerance_of_fp32(nations):
    torch.manual_seed(0)
    model = build_model("ComplEx", nations.n_entities, nations.n_relations, 32, init_scale=0.5)
    queries = nations.queries("valid")
    exact = model.score_tails(queries)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        approx = model.score_tails(queries)
    assert approx.dtype == torch.bfloat16
    error = (approx.float() - exact).abs().max() / exact.abs().max()
    assert error < BF16_SCORE_TOLERANCE


def test_meta_gradient_is_fp32_under_bf16(nations):
    config = RunConfig(method="metasd", precision="bf16", gamma=0.5, **TINY)
    torch.manual_seed(0)
    learner = DistillationLearner(config, nations, torch.device("cpu"))
    batch, quiz = learner.train_triples[:16], learner.train_triples[100:116]
    _, outside, _ = learner.meta_gradient(batch, quiz)
    with learner.precision_context():
        _, inside, _ = learner.meta_gradient(batch, quiz)
    for a, b in zip(outside, inside):
        assert b.dtype == torch.float32 and torch.equal(a, b)


def test_a_bf16_run_trains_and_says_so(nations, runs_dir):
    record = run(RunConfig(method="metasd", precision="bf16", **TINY), runs_dir, device="cpu", dataset=nations)
    fp32 = run(RunConfig(method="metasd", precision="fp32", **TINY), runs_dir, device="cpu", dataset=nations)
    assert record["precision"] == "bf16" and fp32["precision"] == "fp32"
    assert record["history"][0]["loss"] != fp32["history"][0]["loss"]  # autocast was really on
    assert abs(record["test"]["student"]["all"]["MRR"] - fp32["test"]["student"]["all"]["MRR"]) < 0.1
