"""benchmarks/*.py take their defaults and choice lists from the library, and each still runs.

A benchmark option named like a :class:`~kgdistill.metasd.config.RunConfig` field defaults to that
field's default (or to the field named in ``FROM_CONFIG``); the options left to a benchmark on
purpose are listed in ``OWN``. The options every benchmark shares (``--dataset``, ``--device``,
``--threads``, ``--data-dir``) come from the helper module ``benchmarks/_options.py`` (``HELPERS``:
modules of the folder that are not benchmarks).
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib.util
from pathlib import Path

import pytest

from kgdistill.core.datasets import ARCHIVES
from kgdistill.core.evaluation import TIE_POLICIES
from kgdistill.core.models import BACKBONES
from kgdistill.core.regularizers import REGULARIZERS
from kgdistill.metasd.config import META_ORDERS, RunConfig

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
#: modules of benchmarks/ that the benchmarks import (run as ``python benchmarks/x.py``, they find
#: them in their own folder); not benchmarks themselves
HELPERS = {"_options"}
#: the options only the helper adds
SHARED = ("--dataset", "--device", "--threads", "--data-dir")
DEFAULTS = {f.name: f.default for f in dataclasses.fields(RunConfig)}

#: option -> the RunConfig field whose default it takes (options named like a field take that field's)
FROM_CONFIG = {
    "eval_speed": {"batch_size": "eval_batch_size"},
    "sparse_inference": {"batch_size": "eval_batch_size"},
}
#: options named like a RunConfig field that are the benchmark's own on purpose
OWN = {
    "eval_speed": {"init_scale"},  # random embeddings wider than training's init, so scores do not all tie
    "sparse_inference": {"rank"},  # the dense source's rank: large enough for sparse kernels to matter
    "gpu_epoch": {"rank"},  # the paper's rank 2000
}
#: benchmarks of a profile's runs, not of one dataset and backbone (no --dataset / --model)
PER_PROFILE = {"gpu_estimate"}
#: benchmarks of the DistilE backbones (their own --model choices, no RunConfig fields)
DISTILE = {"distile_ranking", "distile_adam"}
CHOICES = {"model": sorted(BACKBONES), "dataset": sorted(ARCHIVES), "regularizer": sorted(REGULARIZERS),
           "tie_policy": list(TIE_POLICIES)}
#: the smallest settings that still print every figure: (arguments, what the output must hold)
TINY = {
    "eval_speed": (["--dataset", "umls", "--ranks", "8", "--repeats", "1", "--threads", "1"],
                   ["eval_over_matmul_ratio"]),
    "train_speed": (["--dataset", "UMLS", "--ranks", "8", "--batches", "2", "--warmup", "1", "--repeats", "1",
                     "--threads", "1"], ["triples/s (best)", "autograd/fp32", "chunked/fp32", "chunked/bf16",
                                         "fast_over_fp32_step_speedup", "fast_step_over_bf16_floor"]),
    "metasd_step": (["--dataset", "UMLS", "--rank", "8", "--batch-size", "200", "--repeats", "1", "--device", "cpu"],
                    ["plain step", *(f"{order} phases" for order in META_ORDERS), "metasd_over_plain_step_ratio"]),
    "sparse_inference": (["--dataset", "UMLS", "--rank", "16", "--queries", "100", "--repeats", "1"],
                         ["sparse student, CSR kernel", "dense model of equal size"]),
    "gpu_epoch": (["--dataset", "UMLS", "--rank", "16", "--steps", "1", "--warmup", "1", "--precisions", "fp32",
                   "--small-batches", "100", "--device", "cpu", "--threads", "1"],
                  ["complex_fp32_epoch_seconds", "rp_fp32_tflops", "metasd_fp32_peak_mib",
                   "plain_b100_over_floor_ratio", "metasd_epoch_seconds"]),
    "gpu_estimate": (["--profile", "gpu"], ["MetaSD", "max_run_minutes"]),
    "distile_ranking": (["--dataset", "UMLS", "--dims", "8", "--queries", "300", "--batch-size", "128",
                         "--threads", "1", "--device", "cpu"],
                        ["identical scores: True", "blocked_over_one_block_speedup"]),
    "distile_adam": (["--dataset", "UMLS", "--dim", "4", "--teacher-dim", "8", "--batch-size", "64",
                      "--negatives", "4", "--steps", "2", "--threads", "1", "--device", "cpu"],
                     ["bit for bit equal: True", "foreach_over_default_speedup"]),
}


@pytest.fixture(autouse=True)
def benchmarks_on_path(monkeypatch):
    """The benchmarks' folder on ``sys.path``, as ``python benchmarks/x.py`` puts it (for ``HELPERS``)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_benchmark_is_checked():
    stems = {p.stem for p in BENCHMARKS.glob("*.py")}
    assert HELPERS <= stems
    assert sorted(stems - HELPERS) == sorted(TINY)


@pytest.mark.parametrize("name", sorted(TINY))
def test_shared_options_come_from_the_helper(name):
    """No benchmark adds --dataset, --device, --threads or --data-dir itself: ``_options`` does."""
    tree = ast.parse((BENCHMARKS / f"{name}.py").read_text())
    assert any(isinstance(n, ast.ImportFrom) and n.module == "_options" for n in tree.body)
    own = [n.args[0].value for n in ast.walk(tree)
           if isinstance(n, ast.Call) and getattr(n.func, "attr", None) == "add_argument" and n.args
           and isinstance(n.args[0], ast.Constant)]
    assert not set(own) & set(SHARED), f"{name} adds {sorted(set(own) & set(SHARED))} itself"


def test_the_helper_applies_threads_and_device():
    import torch

    options = importlib.import_module("_options")
    parser = argparse.ArgumentParser()
    options.add_common(parser, seed=True)
    assert [a.dest for a in parser._actions[1:]] == ["device", "threads", "data_dir", "seed"]
    before = torch.get_num_threads()
    wanted = 2 if before == 1 else 1
    try:
        assert options.setup(parser.parse_args(["--device", "cpu", "--threads", str(wanted)])) == torch.device("cpu")
        assert torch.get_num_threads() == wanted
        torch.set_num_threads(before)
        options.setup(parser.parse_args(["--device", "cpu"]))  # 0: torch's default, left as it is
        assert torch.get_num_threads() == before
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("name", sorted(set(TINY) - PER_PROFILE - DISTILE))
def test_defaults_and_choices_are_the_librarys(name):
    parser = load(name).build_parser()
    actions = {a.dest: a for a in parser._actions}
    checked = 0
    for dest, action in actions.items():
        field = FROM_CONFIG.get(name, {}).get(dest, dest)
        if field in DEFAULTS and dest not in OWN.get(name, set()):
            assert action.default == DEFAULTS[field], f"{name} --{dest}: {action.default!r} is not RunConfig().{field}"
            checked += 1
        if dest in CHOICES:
            assert list(action.choices) == CHOICES[dest], f"{name} --{dest} choices"
    assert checked >= 3 and {"dataset", "model"} <= set(actions)
    assert parser.parse_args(["--dataset", "wn18rr"]).dataset == "WN18RR"  # any case, as load_dataset takes it
    with pytest.raises(SystemExit):
        parser.parse_args(["--dataset", "no-such-graph"])


@pytest.mark.parametrize("name", sorted(TINY))
def test_runs_with_its_smallest_settings(name, capsys):
    argv, expected = TINY[name]
    load(name).main(argv)
    out = capsys.readouterr().out
    assert all(text in out for text in expected), out


def test_gpu_epoch_ends_with_the_metasd_figure(capsys):
    load("gpu_epoch").main(TINY["gpu_epoch"][0] + ["--recipes", "MetaSD"])
    last = capsys.readouterr().out.strip().splitlines()[-1].split()
    assert last[0] == "metasd_epoch_seconds" and float(last[1]) > 0


def test_metasd_step_times_both_steps_on_the_chunked_bf16_path(capsys):
    load("metasd_step").main(TINY["metasd_step"][0] + ["--one-vs-all", "chunked", "--precision", "bf16"])
    out = capsys.readouterr().out
    assert "one_vs_all chunked  precision bf16" in out and "plain step" in out and "sequential phases" in out
    assert "simultaneous" not in out  # the chunked meta step is sequential only
    assert float(out.strip().splitlines()[-1].split()[-1]) > 0
