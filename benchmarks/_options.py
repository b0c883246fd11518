"""The command-line options every benchmark shares, and the code that applies them.

Not a benchmark: the scripts import it (``python benchmarks/x.py`` puts this folder on
``sys.path``). :func:`add_dataset` adds ``--dataset`` (any case; choices: the library's archives);
:func:`add_common` adds ``--device``, ``--threads``, ``--data-dir`` and ``--seed`` (those asked for), in
that order; :func:`setup` sets torch's CPU threads and returns the device; :func:`load_data` loads
``--dataset`` from ``--data-dir``.
"""
from __future__ import annotations

import argparse

import torch

from kgdistill.core.datasets import ARCHIVES, KGDataset, dataset_argument, load_dataset
from kgdistill.core.records import pick_device
from kgdistill.metasd.config import RunConfig

#: ``--data-dir`` help: where the library looks without it, in short and in full
DATA_DIR_HELP = "folder with the archives (default: the library's)"
DATA_DIR_HELP_FULL = "folder with the archives (default: the library's, KGC_DATA_DIR or ../shared/data, else download)"


def add_dataset(parser: argparse.ArgumentParser, default: str = RunConfig().dataset, help: str | None = None) -> None:
    """``--dataset``: a benchmark of the library's, in any case (default: RunConfig's)."""
    parser.add_argument("--dataset", default=default, type=dataset_argument, choices=sorted(ARCHIVES), help=help)


def add_common(parser: argparse.ArgumentParser, *, device: bool = True, threads: bool = True,
               data_dir_help: str = DATA_DIR_HELP_FULL, seed: bool = False) -> None:
    """``--device`` ('auto', 'cpu', 'cuda[:i]'), ``--threads`` (0: torch's default), ``--data-dir``
    (help ``data_dir_help``) and, with ``seed``, ``--seed`` (RunConfig's), each unless switched off."""
    if device:
        parser.add_argument("--device", default="auto", help="'auto' (CUDA when present), 'cpu' or 'cuda[:i]'")
    if threads:
        parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--data-dir", default=None, help=data_dir_help)
    if seed:
        parser.add_argument("--seed", type=int, default=RunConfig().seed)


def setup(args: argparse.Namespace) -> torch.device:
    """Set torch's CPU threads to ``--threads`` (when there and above 0) and return ``--device``
    resolved (:func:`kgdistill.core.records.pick_device`: 'auto' is CUDA when present)."""
    if getattr(args, "threads", 0) > 0:
        torch.set_num_threads(args.threads)
    return pick_device(args.device)


def load_data(args: argparse.Namespace) -> KGDataset:
    """``--dataset`` read from ``--data-dir`` (:func:`kgdistill.core.datasets.load_dataset`)."""
    return load_dataset(args.dataset, args.data_dir)
