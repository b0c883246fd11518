"""One entry point for every run of either paper family: ``run(config)``.

* :func:`run` asks the family registry (:mod:`kgdistill.protocol.registry`) for the trainer of
  the config's family (``metasd``: baseline, KD, DML, MetaSD and its ablations; ``distile``), loads the teacher a run
  learns from (KD, DistilE ``ds``) with :func:`load_best` and passes its weights into the trainer, then lets
  :func:`kgdistill.protocol.loop.fit` train, resume or reuse it;
* :func:`run_dir_for`, :func:`load_best` (trained weights of any finished run, retrained when only
  the committed record exists), :func:`config_from_record` (and :func:`kgdistill.core.records.record_dims`) are what
  every caller that reads runs uses.

A run lives in ``<runs_dir>/<run name>/`` (``run_name`` ends with the config's hash): asking for
a run whose record exists returns it without training.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

from ..core.datasets import KGDataset, load_dataset
from ..core.environment import check_numeric_env
from ..core.records import (
    BEST,
    CHECKPOINT,
    RECORD,
    atomic_write_bytes,
    existing_record,
    load_torch,
    pick_device,
    record_dims,
)
from .configbase import ConfigBase
from .loop import TrainerBase, fit
from .registry import family_of, family_of_record, model_from_state

__all__ = [
    "BEST", "CHECKPOINT", "RECORD", "best_weights", "config_from_record", "existing_record", "load_best",
    "make_trainer", "run", "run_dir_for",
]


def run_dir_for(config: ConfigBase, runs_dir: str | Path) -> Path:
    """``<runs_dir>/<config.run_name()>``."""
    return Path(runs_dir) / config.run_name()


def make_trainer(
    config: ConfigBase, dataset: KGDataset, device: torch.device, teacher_state: dict | None = None
) -> TrainerBase:
    """The trainer of ``config``'s family and method (seed torch before calling)."""
    return family_of(config).make_trainer(config, dataset, device, teacher_state)


def run(
    config: ConfigBase,
    runs_dir: str | Path = "runs",
    *,
    data_dir: str | Path | None = None,
    device: str | None = "auto",
    show_progress: bool = False,
    force: bool = False,
    keep_checkpoint: bool = True,
    stop_after_epoch: int | None = None,
    stop_at_time: float | None = None,
    dataset: KGDataset | None = None,
    required_env: dict[str, str] | None = None,
) -> dict:
    """Train (or resume, or reuse) the run described by ``config`` and return its record.

    ``required_env`` (a profile's ``env``): refuse to *train* unless it is in force
    (:func:`kgdistill.core.environment.check_numeric_env`), so a run never writes a record whose numbers
    differ from the same config's record made under the profile's pinned kernels.

    ``force`` retrains even when a record exists. ``stop_after_epoch`` ends the run after that
    epoch's checkpoint (used for time slices and to test resumption); the returned dict then
    has ``status: 'interrupted'``; ``stop_at_time`` (a ``time.time()`` deadline) stops it at its
    last checkpoint before that time at its own pace (:func:`kgdistill.protocol.loop.fit`). A run with a
    teacher (KD, DistilE ``ds``) first obtains it (trained here when missing).
    """
    config.validate()
    out = run_dir_for(config, runs_dir)
    record = existing_record(out, force)
    if record is not None:
        return record
    if required_env:
        check_numeric_env(required_env, where=f"run {config.run_name()}")
    dev = pick_device(device)
    if dataset is None or dataset.name.lower() != config.dataset.lower():
        dataset = load_dataset(config.dataset, data_dir)
    teacher_state = teacher_record = None
    teacher_config = config.teacher_config()
    if teacher_config is not None:  # before the seed: a teacher trained here reseeds torch
        teacher_state, teacher_record = _best_state(
            teacher_config, runs_dir, dataset, dev, data_dir=data_dir, show_progress=show_progress,
            required_env=required_env)
    torch.manual_seed(config.seed)
    trainer = make_trainer(config, dataset, dev, teacher_state)
    subsets, extra = family_of(config).record_outputs(config, dataset, teacher_record)
    return fit(
        config, trainer, dataset, out, dev, show_progress=show_progress, force=force,
        keep_checkpoint=keep_checkpoint, stop_after_epoch=stop_after_epoch, stop_at_time=stop_at_time,
        test_subsets=subsets, extra_record=extra,
    )


def _best_state(config: ConfigBase, runs_dir: str | Path, dataset: KGDataset, device: torch.device,
                model: str | None = None, retrain_missing: bool = True, **run_kwargs) -> tuple[dict, dict]:
    """State dict of ``model`` (default: the selected one) at the selected epoch, and the record."""
    weights, record = best_weights(config, runs_dir, dataset, device, retrain_missing, **run_kwargs)
    name = model or record["selected_model"]
    states = load_torch(weights)["models"]
    if name not in states:
        raise KeyError(f"run {config.run_name()} has no model {name!r}; it has {sorted(states)}")
    return states[name], record


def best_weights(config: ConfigBase, runs_dir: str | Path, dataset: KGDataset | None = None,
                 device: str | torch.device = "cpu", retrain_missing: bool = True, **run_kwargs) -> tuple[Path, dict]:
    """The run's ``best.pt`` and its record: trained when the record is missing; when only the
    (committed) record exists, trained again in ``<runs_dir>/.retrain`` (resumable, the record
    untouched) unless ``retrain_missing`` is false (then ``FileNotFoundError``)."""
    record = run(config, runs_dir, device=str(device), dataset=dataset, **run_kwargs)
    weights = run_dir_for(config, runs_dir) / BEST
    if not weights.exists():  # a committed record without weights (checkpoints are not committed)
        if not retrain_missing:
            raise FileNotFoundError(f"{weights} is missing (checkpoints are not committed); pass retrain_missing=True "
                                    f"to train the run again (same numbers on CPU)")
        _retrain_weights(config, runs_dir, record, dataset, torch.device(device), **run_kwargs)
    return weights, record


#: where weights of committed records are retrained, inside the runs folder (never committed)
RETRAIN_DIR = ".retrain"


def _retrain_weights(config: ConfigBase, runs_dir: str | Path, record: dict, dataset: KGDataset,
                     device: torch.device, **run_kwargs) -> None:
    """Train the run again in ``<runs_dir>/.retrain`` and install only its ``best.pt`` next to the
    committed record, which stays untouched. Same numbers on the same CPU kernels; when the rerun's
    test metrics differ, say so loudly: analyses of these weights then describe the rerun."""
    scratch = Path(runs_dir) / RETRAIN_DIR
    # resumable: a killed retrain goes on from its checkpoint; a finished one is reused unless its weights are gone
    folder = run_dir_for(config, scratch)
    stale = (folder / RECORD).exists() and not (folder / BEST).exists()
    rerun = run(config, scratch, device=str(device), dataset=dataset, force=stale, **run_kwargs)
    if rerun["test"] != record["test"]:
        warnings.warn(
            f"run {config.run_name()}: its retrained weights give test metrics that differ from the committed "
            f"record's (e.g. MRR {rerun['test'][rerun['selected_model']]['all']['MRR']:.6f} vs "
            f"{record['test'][record['selected_model']]['all']['MRR']:.6f}); the record was made under another "
            f"numeric environment (see its provenance numeric_env). Weights installed anyway.",
            stacklevel=3,
        )
    target = run_dir_for(config, runs_dir) / BEST
    atomic_write_bytes(target, (run_dir_for(config, scratch) / BEST).read_bytes())


def load_best(
    config: ConfigBase,
    runs_dir: str | Path,
    dataset: KGDataset,
    device: str | torch.device = "cpu",
    *,
    model: str | None = None,
    retrain_missing: bool = True,
    **run_kwargs,
) -> tuple[torch.nn.Module, dict]:
    """The trained ``model`` of a run (default: the record's selected model) at its selected
    epoch, on ``device``, and the run's record. The run is trained when its record is missing,
    and trained again in ``<runs_dir>/.retrain`` when only the (committed) record exists
    (``retrain_missing``; the record is never overwritten, a differing rerun is warned about).
    A pruned MetaSD student is returned as its source model with the mask installed (score it
    with ``masked=True``)."""
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    state, record = _best_state(config, runs_dir, dataset, dev, model, retrain_missing, **run_kwargs)
    name = model or record["selected_model"]
    module = model_from_state(config, dataset, state, name, record_dims(record).get(name))
    return module.to(dev).eval(), record


def config_from_record(record: dict) -> ConfigBase:
    """The config a record was trained from, of its family's class."""
    return family_of_record(record).config_class.from_dict(record["config"])
