"""The move into subpackages (December 2026) changed no number and broke no file written before it.

* checkpoints written by the flat layout (``tests/data/old_layout/``: a baseline and a MetaSD run
  of Kinship stopped after epoch 2 by the library as it was at commit 724234d) resume here to the
  same result as an uninterrupted run of today's layout;
* a file that pickles a library class under its old module path loads through
  :func:`kgdistill.core.records.load_torch`;
* checkpoints hold no library class at all, so a later move cannot break them either;
* ``from kgdistill import figures`` (a module name of the flat layout) still works.
"""
from __future__ import annotations

import io
import pickletools
import shutil
import sys
import types
import zipfile
from pathlib import Path

import pytest
import torch

from kgdistill import RunConfig, run
from kgdistill.core.records import load_torch

OLD = Path(__file__).parent / "data" / "old_layout"
BASE = dict(dataset="Kinship", rank=16, batch_size=512, eval_every=2, regularizer="DURA_W", reg_weight=1e-2,
            learning_rate=0.3, init_scale=0.1)
CONFIGS = {
    "baseline": RunConfig(**BASE, max_epochs=6),
    "metasd": RunConfig(**BASE, method="metasd", max_epochs=4),
}


def _comparable(record: dict) -> dict:
    """The record's history and results as a flat {path: value}, the timings left out."""
    keep = ("selected_epoch", "test", "student_eval")
    history = [{k: v for k, v in e.items() if k not in ("seconds", "valid_seconds")} for e in record["history"]]
    return dict(_flat({"history": history, **{k: record.get(k) for k in keep}}))


def _flat(value, path=""):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _flat(item, f"{path}/{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _flat(item, f"{path}/{i}")
    else:
        yield path, value


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_a_checkpoint_of_the_flat_layout_resumes_to_the_same_result(name, tmp_path, kinship):
    config = CONFIGS[name]
    old = OLD / f"{config.run_name()}.pt"
    fixtures = sorted(p.name for p in OLD.glob("*.pt"))
    assert fixtures, f"no fixtures in {OLD} (a .gitignore rule that drops *.pt?)"
    assert old.exists(), f"no fixture {old.name} among {fixtures}: a config hash changed"
    reference = run(config, runs_dir=tmp_path / "straight", device="cpu", dataset=kinship)
    folder = tmp_path / "resumed" / config.run_name()
    folder.mkdir(parents=True)
    shutil.copy(old, folder / "checkpoint.pt")
    resumed = run(config, runs_dir=tmp_path / "resumed", device="cpu", dataset=kinship)
    assert [e["epoch"] for e in resumed["history"]][:2] == [1, 2]
    # the fixtures' first epochs ran on the CPU that wrote them (an AMD EPYC): on another CPU (e.g.
    # an Intel Xeon with AMX) the kernels round the last float32 bits differently and a few epochs
    # later ranks move (measured: losses 1e-7 apart, a teacher's valid MRR 2e-6, its MR 1.3e-4). A resume that
    # lost state (optimizer, masks, epoch, RNG) moves them by 1e-3 or more.
    got, want = _comparable(resumed), _comparable(reference)
    assert got.keys() == want.keys()
    for key, value in want.items():
        if isinstance(value, float):
            assert got[key] == pytest.approx(value, rel=1e-3, abs=1e-4), key
        else:
            assert got[key] == value, key


def test_a_class_pickled_under_its_old_module_path_loads(tmp_path, monkeypatch):
    config = CONFIGS["baseline"]
    with monkeypatch.context() as patch:  # pickle RunConfig as the flat layout named it
        old_module = types.ModuleType("kgdistill.config")
        old_module.RunConfig = RunConfig
        patch.setitem(sys.modules, "kgdistill.config", old_module)
        patch.setattr(RunConfig, "__module__", "kgdistill.config")
        torch.save({"config": config}, tmp_path / "old.pt")
    assert "kgdistill.config" not in sys.modules
    with pytest.raises(ModuleNotFoundError):
        torch.load(tmp_path / "old.pt", weights_only=False)
    assert load_torch(tmp_path / "old.pt")["config"] == config


def _globals(path: Path) -> set[str]:
    archive = zipfile.ZipFile(path)
    data = next(n for n in archive.namelist() if n.endswith("data.pkl"))
    out = io.StringIO()
    pickletools.dis(archive.read(data), out=out)
    names = set()
    lines = out.getvalue().splitlines()
    for i, line in enumerate(lines):
        if "GLOBAL" in line and "STACK_GLOBAL" not in line:
            names.add(line.split("GLOBAL", 1)[1].strip().strip("'").split()[0])
        elif "STACK_GLOBAL" in line:  # protocol 4: module and name were pushed as two strings before it
            names.add(lines[i - 2].split("'")[1] if "'" in lines[i - 2] else "?")
    return names


def test_checkpoints_hold_no_library_class(tmp_path, kinship):
    for config in CONFIGS.values():
        run(config, runs_dir=tmp_path, device="cpu", dataset=kinship, stop_after_epoch=2)
        modules = _globals(tmp_path / config.run_name() / "checkpoint.pt")
        assert modules and not any(m.startswith("kgdistill") for m in modules), modules
    for path in OLD.glob("*.pt"):
        assert not any(m.startswith("kgdistill") for m in _globals(path))


def test_module_names_of_the_flat_layout_still_import_from_the_package():
    from kgdistill import figures, tables

    assert figures.__name__ == "kgdistill.study.figures" and tables.__name__ == "kgdistill.study.tables"
    with pytest.raises(ImportError):
        from kgdistill import no_such_module  # noqa: F401
