"""What a training step and a run cost in arithmetic and memory traffic, and how long a run is
expected to take on a device that has not been measured (``benchmarks/gpu_estimate.py``).

* :func:`step_products`: every score product a step of a :class:`~kgdistill.metasd.config.RunConfig`
  performs — one matrix product of a block of query rows with a candidate table (N entities or
  2R relations), forward or one of its two backward products — counted from
  :mod:`kgdistill.metasd.training`, :mod:`kgdistill.metasd.distillation` and :mod:`kgdistill.metasd.metastep`.
  ``flops`` of a product = 2 · rows · candidates · width (multiply-adds × 2).
* :func:`step_cost`: FLOPs, bytes and kernels of one step; :func:`run_cost`: a whole run
  (epochs, validations, the final test evaluations).
* :class:`DeviceModel`: the sustained rates a time estimate assumes; :data:`H100` states the
  assumptions for an H100 (datasheet and KINDS.md figures, an assumed achievable fraction).
  Time of a step = max(FLOPs / rate, bytes / bandwidth) + kernels × launch cost. Every figure
  from it is an estimate, never a measurement: label it "estimated, no GPU measured".

The FLOP counts are exact for the products; bytes and kernels are coarse models (stated below).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..core.models import backbone, rank_for_budget
from ..metasd.config import METHODS, RunConfig

#: width of the query vector (= of the candidate rows it is multiplied with) per backbone and rank
QUERY_WIDTH = {"CP": lambda r: r, "ComplEx": lambda r: 2 * r, "RESCAL": lambda r: r}
#: each product's (rows × candidates) fp32 output is read or written by this many elementwise
#: passes on average (log-softmax, exp, KL terms, their backward): a coarse assumption
PASSES_PER_PRODUCT = 3
#: device-memory bytes per trained parameter per Adagrad step: gradient written (index_add into a
#: zeroed table), read; squared-sum read and written; parameter read and written; fp32
ADAGRAD_BYTES_PER_PARAM = 4 * 7
#: kernels (aten ops, views included) one step launches, counted on CPU with a dispatch mode
#: (:func:`count_kernels`) on a rank-8 Nations model, DURA_W, no RP (a test keeps this table within
#: 25% of the live counts); RP adds about 20%, the official recipe's warm step about 25% and each
#: further quiz chunk about 40 kernels
KERNELS_PER_STEP = {"baseline": 195, "kd": 280, "dml": 435, "metasd": 885, "metasd_wo_p": 885,
                    "metasd_wo_m": 425, "prune_finetune": 200}
#: filtered evaluation of a query block over its bare score product (benchmarks/eval_speed.py
#: measures eval_over_matmul_ratio on the machine at hand; 3 is assumed for a GPU)
EVAL_OVER_MATMUL = 3.0


@dataclass(frozen=True)
class GraphSize:
    """Counts of a benchmark (original relations, triples before reciprocals)."""

    entities: int
    relations: int
    train: int
    valid: int
    test: int

    @classmethod
    def of(cls, name: str) -> "GraphSize":
        """FB15k-237 / WN18RR (any case) from the archives' known statistics (published.yaml)."""
        from .profile import published

        stats = {k.lower(): v for k, v in published("datasets", "stats").items()}
        if name.lower() not in stats:
            raise KeyError(f"no known statistics for {name!r}; pass GraphSize.from_dataset(load_dataset(...)) instead")
        s = stats[name.lower()]
        return cls(s["entities"], s["relations"], s["train"], s["valid"], s["test"])

    @classmethod
    def from_dataset(cls, dataset) -> "GraphSize":
        """From a loaded :class:`~kgdistill.core.datasets.KGDataset`."""
        return cls(dataset.n_entities, dataset.n_relations, len(dataset.train), len(dataset.valid), len(dataset.test))


@dataclass(frozen=True)
class Product:
    """One score product of a step: ``rows`` queries × ``candidates`` × ``width``."""

    phase: str
    model: str
    rows: int
    candidates: int
    width: int

    @property
    def flops(self) -> float:
        """2 · rows · candidates · width floating-point operations."""
        return 2.0 * self.rows * self.candidates * self.width

    @property
    def bytes(self) -> float:
        """Coarse device-memory traffic (fp32): the candidate table once, the (rows × candidates)
        output and :data:`PASSES_PER_PRODUCT` elementwise passes over it."""
        return 4.0 * (self.candidates * self.width + (1 + PASSES_PER_PRODUCT) * self.rows * self.candidates)


def student_rank(config: RunConfig, graph: GraphSize) -> int:
    """Rank of the run's student: the source's for a pruned one, else ``student_rank`` or the
    size-matched rank (as :class:`~kgdistill.metasd.distillation.DistillationLearner` picks it)."""
    if METHODS[config.method]["student"] in ("pruned", None):
        return config.rank
    if config.student_rank:
        return config.student_rank
    dense = backbone(config.model).dense_size(graph.entities, graph.relations, config.rank)
    return rank_for_budget(config.model, graph.entities, graph.relations, math.ceil((1 - config.gamma) * dense))


def quiz_rows(config: RunConfig, graph: GraphSize) -> int:
    """Quiz triples one meta step scores: a quiz batch, or all of Q (``quiz_per_meta_step: all``)."""
    if config.quiz_per_meta_step == "all":
        return max(1, int(config.quiz_fraction * 2 * graph.train))
    return config.quiz_batch_size or config.batch_size


def step_products(config: RunConfig, graph: GraphSize, batch: int | None = None) -> list[Product]:
    """The score products of one training step of ``config`` on a batch of ``batch`` reciprocal
    triples (default ``config.batch_size``), teacher before student, by phase.

    A model's supervised terms cost 1 forward product (+1 relation product with RP); their
    gradient 2 more of each (w.r.t. the query rows and the candidate table). MetaSD adds: the
    teacher's forward kept for the outer gradient and the student's loss and gradient at θ_S
    (virtual), the quiz's forward and gradient at θ'_S, the forward-mode product J·v (2 student
    products) and the backward through the teacher's logits (2 teacher products)."""
    b = batch or config.batch_size
    n, rel = graph.entities, 2 * graph.relations
    switches = METHODS[config.method]
    t_width = QUERY_WIDTH[config.model](config.rank)
    s_width = QUERY_WIDTH[config.model](student_rank(config, graph))
    rp = config.rp_weight > 0
    pair = {m: backbone(config.model).relation_width(r) for m, r in
            (("teacher", config.rank), ("student", student_rank(config, graph)))}
    out: list[Product] = []

    def supervised(phase: str, model: str, width: int, forward: int, backward: int, rows: int = b,
                   relation: bool = rp) -> None:
        """``forward`` + ``backward`` tail products (and as many relation products with RP)."""
        count = forward + backward
        out.extend(Product(phase, model, rows, n, width) for _ in range(count))
        if relation:
            out.extend(Product(phase, model, rows, rel, pair[model]) for _ in range(count))

    if switches["student"] is None:  # baseline
        supervised("actual", "teacher", t_width, 1, 2)
        return out
    if config.method == "prune_finetune":
        supervised("actual", "student", t_width, 1, 2)
        return out
    mutual = switches["teacher"] == "mutual"
    if switches["meta"]:
        if config.teacher_warm_step:
            supervised("warm", "teacher", t_width, 1, 2)
        simultaneous = config.meta_order == "simultaneous"
        # the teacher's logits (kept for the outer gradient); the simultaneous step takes its full terms
        supervised("virtual", "teacher", t_width, 1, 0, relation=rp and simultaneous)
        supervised("virtual", "student", s_width, 1, 2)
        supervised("quiz", "student", s_width, 1, 2, rows=quiz_rows(config, graph), relation=False)
        supervised("meta", "student", s_width, 2, 0, relation=False)  # J v = q̇·Cᵀ + q·Ċᵀ
        supervised("meta", "teacher", t_width, 0, 2, relation=False)  # back through z_T
        if simultaneous:  # Actual-Train reuses the forwards: the teacher's gradient only
            supervised("actual", "teacher", t_width, 0, 2)
            return out
    supervised("actual", "teacher", t_width, 1, 2 if mutual else 0)
    supervised("actual", "student", s_width, 1, 2)
    return out


def trained_parameters(config: RunConfig, graph: GraphSize) -> dict[str, int]:
    """Parameters each Adagrad step updates per step, by optimizer step (summed over steps)."""
    cls = backbone(config.model)
    teacher = cls.dense_size(graph.entities, graph.relations, config.rank)
    switches = METHODS[config.method]
    if switches["student"] is None or config.method == "prune_finetune":
        return {"actual": teacher}
    student = 0 if switches["student"] == "pruned" else cls.dense_size(
        graph.entities, graph.relations, student_rank(config, graph))
    out = {"actual": student + (teacher if switches["teacher"] == "mutual" else 0)}
    if switches["meta"]:
        out["meta"] = teacher
    if config.teacher_warm_step:
        out["warm"] = teacher
    return out


@dataclass(frozen=True)
class StepCost:
    """One step: ``flops``, device-memory ``bytes`` (coarse), ``kernels`` launched."""

    flops: float
    bytes: float
    kernels: int


def step_cost(config: RunConfig, graph: GraphSize, batch: int | None = None, kernels: int | None = None) -> StepCost:
    """FLOPs and bytes of :func:`step_products` plus the optimizers' traffic; ``kernels``
    defaults to :data:`KERNELS_PER_STEP` (+ one per extra quiz chunk)."""
    products = step_products(config, graph, batch)
    optimizer_bytes = ADAGRAD_BYTES_PER_PARAM * sum(trained_parameters(config, graph).values())
    if kernels is None:
        kernels = KERNELS_PER_STEP[config.method] * (1.2 if config.rp_weight > 0 else 1.0)
        kernels = int(kernels * (1.25 if config.teacher_warm_step else 1.0))
        if METHODS[config.method]["meta"] and config.quiz_per_meta_step == "all":
            chunks = math.ceil(quiz_rows(config, graph) / (config.quiz_batch_size or config.batch_size))
            kernels += 40 * (chunks - 1)
    return StepCost(sum(p.flops for p in products), sum(p.bytes for p in products) + optimizer_bytes, kernels)


@dataclass(frozen=True)
class DeviceModel:
    """Sustained rates assumed for a device (not measured unless ``measured`` says so)."""

    name: str
    #: sustained matrix-product rate (FLOP/s) by resolved precision
    flops_per_second: dict
    #: sustained device-memory bandwidth (bytes/s, read + write)
    bytes_per_second: float
    #: host cost of one kernel launch (s) when the GPU is waiting on the host
    launch_seconds: float
    note: str = ""
    measured: bool = False

    def seconds(self, flops: float, nbytes: float, kernels: int, precision: str) -> float:
        """max(arithmetic time, memory time) + launch time."""
        rate = self.flops_per_second[precision]
        return max(flops / rate, nbytes / self.bytes_per_second) + kernels * self.launch_seconds


#: H100 SXM 80 GB. Peaks: fp32 67, TF32 495 (dense; 989 with sparsity), bf16 989 TFLOP/s
#: (datasheet); KINDS.md measured 798 TFLOP/s bf16 (8192³) and a 3.0 TB/s copy on this workplace's
#: H100. Assumed sustained for the step's shapes (B × d by d × N, B from 100 to 5000): 60% of fp32,
#: 35% of the TF32 and of the measured bf16 peak, 80% of the measured copy bandwidth, 6 µs a launch.
H100 = DeviceModel(
    name="H100 (assumed rates, estimated, no GPU measured)",
    flops_per_second={"fp32": 0.60 * 67e12, "tf32": 0.35 * 495e12, "bf16": 0.35 * 798e12},
    bytes_per_second=0.8 * 3.0e12,
    launch_seconds=6e-6,
    note="fp32 40, tf32 173, bf16 279 TFLOP/s sustained; 2.4 TB/s; 6 us per kernel (assumptions)",
)


def evaluation_seconds(width: int, queries: int, graph: GraphSize, device: DeviceModel, precision: str) -> float:
    """One filtered evaluation of ``queries`` queries (both directions counted by the caller):
    :data:`EVAL_OVER_MATMUL` × the bare score product's time."""
    product = Product("eval", "model", queries, graph.entities, width)
    return EVAL_OVER_MATMUL * device.seconds(product.flops, product.bytes, 0, precision)


@dataclass(frozen=True)
class RunEstimate:
    """Estimated seconds of a run: per step, per epoch, training, evaluation and in all."""

    steps_per_epoch: int
    step_seconds: float
    epoch_seconds: float
    train_seconds: float
    eval_seconds: float
    flops_per_epoch: float

    @property
    def minutes(self) -> float:
        return (self.train_seconds + self.eval_seconds) / 60


def run_cost(config: RunConfig, graph: GraphSize, device: DeviceModel = H100, precision: str = "tf32",
             epochs: int | None = None) -> RunEstimate:
    """Estimated time of ``config`` trained for ``epochs`` (default ``max_epochs``; the
    convergence rule can only shorten it): steps, validations every ``eval_every`` epochs
    (every validated model; test too with ``test_history``) and the final test evaluations
    (each model, and a pruned student's ``student_eval`` rows)."""
    epochs = epochs or config.max_epochs
    steps = math.ceil(2 * graph.train / config.batch_size)
    cost = step_cost(config, graph)
    step = device.seconds(cost.flops, cost.bytes, cost.kernels, precision)
    last = steps * config.batch_size - 2 * graph.train  # the last batch is smaller: scale by rows
    train = epochs * (steps - last / config.batch_size) * step
    switches = METHODS[config.method]
    widths = [QUERY_WIDTH[config.model](config.rank)]
    if switches["student"] == "separate":
        widths.append(QUERY_WIDTH[config.model](student_rank(config, graph)))
    elif switches["student"] == "pruned" and config.method != "prune_finetune":
        widths.append(widths[0])
    validations = len(range(config.eval_every, epochs + 1, config.eval_every)) + (epochs % config.eval_every != 0)
    per_validation = sum(evaluation_seconds(w, 2 * graph.valid, graph, device, precision) for w in widths)
    if config.test_history:
        per_validation += sum(evaluation_seconds(w, 2 * graph.test, graph, device, precision) for w in widths)
    final = sum(evaluation_seconds(w, 2 * graph.test, graph, device, precision) for w in widths)
    if switches["student"] == "pruned":
        final += len(config.student_eval_modes) * (1 + len(config.student_eval_gammas)) * evaluation_seconds(
            widths[0], 2 * graph.test, graph, device, precision)
    return RunEstimate(steps, step, steps * step, train, validations * per_validation + final, steps * cost.flops)


def count_kernels(step) -> int:
    """Aten operations ``step()`` dispatches (≈ kernels launched on a GPU; views included, so an
    upper bound), counted with a dispatch mode on whatever device the step runs."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Counter(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Counter.count += 1
            return func(*args, **(kwargs or {}))

    with Counter():
        step()
    return Counter.count


def floor_seconds(n_candidates: int, width: int, batch: int, device, repeats: int = 5, seed: int = 0) -> float:
    """Measured arithmetic floor of a 1-vs-all step on ``device`` (seconds, the best of
    ``repeats`` after one warm-up): the bare forward score product (batch × width by width ×
    candidates), the cross-entropy's log-softmax and its backward (the two gradient products),
    on random fp32 tensors - what any implementation of the step must do at least."""
    import torch
    import torch.nn.functional as F

    from ..core.timer import Stopwatch

    gen = torch.Generator().manual_seed(seed)
    query = torch.randn(batch, width, generator=gen).to(device).requires_grad_()
    table = torch.randn(n_candidates, width, generator=gen).to(device).requires_grad_()
    target = torch.randint(n_candidates, (batch,), generator=gen).to(device)
    times = []
    for _ in range(repeats + 1):
        with Stopwatch(device, sync_before=False) as watch:
            F.cross_entropy(query @ table.T, target).backward()
        times.append(watch.seconds)
        query.grad = table.grad = None
    return min(times[1:])


def product_floor_seconds(n_candidates: int, width: int, batch: int, device, dtype=None, repeats: int = 5,
                          seed: int = 0) -> float:
    """The machine's floor of a 1-vs-all step (seconds, best of ``repeats`` after one warm-up):
    its three score products alone - scores Q Cᵀ (batch × width by width × candidates) and the
    two gradient products G C and Gᵀ Q - in ``dtype`` (default fp32; torch.bfloat16 for the
    chunked bf16 step), with no softmax, no loss and no memory traffic beyond the products'."""
    import torch

    from ..core.timer import Stopwatch

    dtype = dtype or torch.float32
    gen = torch.Generator().manual_seed(seed)
    query = torch.randn(batch, width, generator=gen).to(device=device, dtype=dtype)
    table = torch.randn(n_candidates, width, generator=gen).to(device=device, dtype=dtype)
    times = []
    for _ in range(repeats + 1):
        with Stopwatch(device, sync_before=False) as watch:
            scores = query @ table.T
            _ = scores @ table
            _ = scores.T @ query
        times.append(watch.seconds)
    return min(times[1:])
