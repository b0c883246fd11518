"""kgdistill.study.costs: the score products it counts are the ones a step really runs (every matrix product
of a step recorded with a dispatch mode), and the kernel table stays near the live counts."""
from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from kgdistill.core.models import BACKBONES, build_model
from kgdistill.metasd.config import RunConfig
from kgdistill.protocol.runner import make_trainer
from kgdistill.study.costs import (
    H100,
    KERNELS_PER_STEP,
    QUERY_WIDTH,
    GraphSize,
    count_kernels,
    run_cost,
    step_cost,
    step_products,
)

#: a batch and quiz size that no other dimension of a Nations rank-8 step has
BATCH, QUIZ = 37, 23
OFFICIAL = dict(temperature=3.0, kl_mode="official", kl_temperature_squared=False, loss_weighting="unit",
                teacher_warm_step=True, quiz_selection="head", quiz_per_meta_step="all", quiz_batch_size=QUIZ)


class MatmulMacs(TorchDispatchMode):
    """Multiply-adds of the matrix products whose shapes involve ``size`` (entities or 2R)."""

    def __init__(self, sizes: dict[str, int]):
        super().__init__()
        self.sizes, self.macs = sizes, dict.fromkeys(sizes, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func._schema.name == "aten::mm":
            (m, k), (_, n) = args[0].shape, args[1].shape
            for name, size in self.sizes.items():
                if size in (m, k, n):
                    self.macs[name] += m * k * n
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("method, extra", [
    ("baseline", {}), ("baseline", {"rp_weight": 1.0}), ("kd", {}), ("dml", {"rp_weight": 1.0}),
    ("metasd", {"quiz_batch_size": QUIZ}), ("metasd", {"quiz_batch_size": QUIZ, "rp_weight": 1.0}),
    ("metasd", {"quiz_batch_size": QUIZ, "meta_order": "simultaneous", "rp_weight": 1.0}),
    ("metasd", OFFICIAL), ("metasd_wo_p", {"quiz_batch_size": QUIZ}), ("metasd_wo_m", {}),
])
def test_counted_products_are_the_steps_matrix_products(nations, method, extra):
    base = dict(dataset="Nations", rank=8, batch_size=BATCH, init_scale=0.1, student_rank=3)
    teacher = RunConfig(**base)
    config = RunConfig(method=method, teacher=teacher.to_dict() if method == "kd" else None, **{**base, **extra})
    state = build_model("ComplEx", nations.n_entities, nations.n_relations, 8).state_dict()
    torch.manual_seed(0)
    trainer = make_trainer(config, nations, torch.device("cpu"), state)
    trainer.start_epoch(1)
    batch = trainer.train_triples[:BATCH]
    graph = GraphSize.from_dataset(nations)
    if config.quiz_per_meta_step == "all":  # the counted quiz is all of Q (head: 2% of reciprocal train)
        assert len(trainer.quiz) == int(config.quiz_fraction * 2 * graph.train)
    with MatmulMacs({"tail": nations.n_entities, "relation": 2 * nations.n_relations}) as mode:
        trainer.train_step(batch)
    products = step_products(config, graph)
    tails = sum(p.flops for p in products if p.candidates == graph.entities) / 2
    relations = sum(p.flops for p in products if p.candidates == 2 * graph.relations) / 2
    assert (mode.macs["tail"], mode.macs["relation"]) == (tails, relations)


def test_query_widths_are_the_backbones():
    for name, cls in BACKBONES.items():
        model = build_model(name, 5, 2, 4)
        h, r = model.entity[:3], model.relation[:3]
        assert model._query(h, r).shape[1] == QUERY_WIDTH[name](4) == model._candidates(model.entity).shape[1]


def test_flops_of_a_plain_complex_step_by_hand():
    graph = GraphSize(entities=1000, relations=10, train=5000, valid=100, test=100)
    config = RunConfig(rank=50, batch_size=200)
    # forward product and its two gradient products: 3 × 2·B·N·(2·rank)
    assert step_cost(config, graph).flops == 3 * 2 * 200 * 1000 * 100
    estimate = run_cost(config, graph, H100, "tf32", epochs=1)
    assert estimate.steps_per_epoch == 50 and estimate.flops_per_epoch == 50 * 3 * 2 * 200 * 1000 * 100


def test_the_kernel_table_is_near_the_live_counts(nations):
    base = dict(dataset="Nations", rank=8, batch_size=64, init_scale=0.1)
    state = build_model("ComplEx", nations.n_entities, nations.n_relations, 8).state_dict()
    for method in ("baseline", "dml", "metasd"):
        config = RunConfig(method=method, **base)
        torch.manual_seed(0)
        trainer = make_trainer(config, nations, torch.device("cpu"), state)
        trainer.start_epoch(1)
        batch = trainer.train_triples[:64]
        trainer.train_step(batch)
        live = count_kernels(lambda: trainer.train_step(batch))
        assert abs(live - KERNELS_PER_STEP[method]) <= 0.25 * live, (method, live)
