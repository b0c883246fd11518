"""Shared fixtures: the benchmark archives from ``../shared/data`` and a scratch runs folder.

``KGC_DATA_DIR`` is pointed at the shared archives (relative to the repository root) unless the
caller already set it, so no test touches the network by accident.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = (REPO_ROOT / ".." / "shared" / "data").resolve()

os.environ.setdefault("KGC_DATA_DIR", str(SHARED_DATA))

# The tests use tiny models. On a small shared CPU, two OpenMP threads competing with other
# processes make them up to 50x slower than one thread (measured: UMLS run 3.6 s vs 19-165 s),
# so the suite runs single-threaded unless KGC_TEST_THREADS says otherwise.
torch.set_num_threads(int(os.environ.get("KGC_TEST_THREADS", "1")))

# The low-precision chunk kernels (kgdistill.core.chunk_kernels) run their eager twins in this
# process: after scripts/reproduce.py had run papermill in-process (tests/test_new_user.py), a
# kernel that Inductor compiled next crashed the process (segfault inside the compiled code, seen
# 2026-12-08, not understood; training processes never run papermill). tests/test_chunk_kernels.py
# switches compiling back on for itself, and it runs before any papermill test.
os.environ.setdefault("KGDISTILL_COMPILE", "0")

from kgdistill.core.datasets import KGDataset, load_dataset  # noqa: E402  (after the environment is set)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder holding the benchmark archives (``KGC_DATA_DIR``)."""
    return Path(os.environ["KGC_DATA_DIR"])


@pytest.fixture(scope="session")
def umls(data_dir) -> KGDataset:
    return load_dataset("UMLS", data_dir)


@pytest.fixture(scope="session")
def kinship(data_dir) -> KGDataset:
    return load_dataset("Kinship", data_dir)


@pytest.fixture(scope="session")
def nations(data_dir) -> KGDataset:
    return load_dataset("Nations", data_dir)


@pytest.fixture
def runs_dir(tmp_path) -> Path:
    """An empty folder for run records and checkpoints, removed with the test's tmp_path."""
    path = tmp_path / "runs"
    path.mkdir()
    return path
