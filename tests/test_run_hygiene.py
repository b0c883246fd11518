"""What a user meets outside the runner: file modes, leftovers of a killed write, the resume
message, and the refusal to train under a profile whose numeric environment is not in force."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kgdistill import RunConfig, run
from kgdistill.core.environment import NumericEnvironmentError, check_numeric_env, env_mismatches, numeric_env
from kgdistill.core.records import atomic_write_json, remove_orphan_temporaries
from kgdistill.protocol.runner import run_dir_for

ROOT = Path(__file__).resolve().parent.parent
QUICK = RunConfig(dataset="Nations", rank=4, batch_size=512, max_epochs=2, eval_every=1, init_scale=0.1)


def test_atomic_writes_keep_the_users_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "a.json", {"x": 1})
        os.umask(0o077)
        atomic_write_json(tmp_path / "b.json", {"x": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o600


def test_orphan_temporaries_are_cleaned_when_the_run_resumes(tmp_path, nations):
    out = run_dir_for(QUICK, tmp_path)
    out.mkdir(parents=True)
    orphan = out / ".record.json.k1ll3d.tmp"
    orphan.write_text("half a record")
    keep = out / "notes.txt"
    keep.write_text("mine")
    run(QUICK, tmp_path, device="cpu", dataset=nations)
    assert not orphan.exists() and keep.exists()
    assert remove_orphan_temporaries(tmp_path / "missing") == []


def test_resuming_says_so(tmp_path, nations, caplog):
    run(QUICK, tmp_path, device="cpu", dataset=nations, stop_after_epoch=1)
    with caplog.at_level(logging.INFO, logger="kgdistill"):
        run(QUICK, tmp_path, device="cpu", dataset=nations)
    assert "resuming from epoch 2" in caplog.text


def test_training_refuses_when_the_profiles_env_is_not_in_force(tmp_path, nations, monkeypatch):
    monkeypatch.delenv("MKL_CBWR", raising=False)
    with pytest.raises(NumericEnvironmentError, match="MKL_CBWR.*AVX2.*reproduce.py"):
        run(QUICK, tmp_path, device="cpu", dataset=nations, required_env={"MKL_CBWR": "AVX2"})
    assert not any(tmp_path.iterdir())  # nothing written
    monkeypatch.setenv("MKL_CBWR", "AVX2")
    record = run(QUICK, tmp_path, device="cpu", dataset=nations, required_env={"MKL_CBWR": "AVX2"})
    assert record["provenance"]["numeric_env"]["MKL_CBWR"] == "AVX2"
    monkeypatch.delenv("MKL_CBWR")
    again = run(QUICK, tmp_path, device="cpu", dataset=nations, required_env={"MKL_CBWR": "AVX2"})
    assert again["test"] == record["test"] and again["provenance"] == record["provenance"]  # reused, not retrained


def test_a_kernel_set_chosen_after_torch_was_imported_is_not_in_force(monkeypatch):
    actual = numeric_env()["torch_cpu_capability"]
    other = "avx2" if str(actual).lower() != "avx2" else "default"
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", other)
    assert any("before torch is imported" in p for p in env_mismatches({"ATEN_CPU_CAPABILITY": other}))
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", str(actual).lower())
    check_numeric_env({"ATEN_CPU_CAPABILITY": str(actual).lower()})


def test_a_plain_process_without_the_smoke_env_is_refused(tmp_path):
    """What happens to a notebook run with plain papermill: the smoke profile's pins are absent."""
    code = (
        "import sys; from kgdistill import RunConfig, run; from kgdistill.core.environment import profile_env\n"
        "config = RunConfig(dataset='Nations', rank=4, batch_size=512, max_epochs=1, eval_every=1)\n"
        "run(config, sys.argv[1], device='cpu', required_env=profile_env('smoke'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "OMP_NUM_THREADS")}
    env["KGDISTILL_ROOT"] = str(ROOT)
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode != 0
    assert "NumericEnvironmentError" in done.stderr and "ATEN_CPU_CAPABILITY" in done.stderr
    assert not any(tmp_path.iterdir())


def test_weights_of_a_committed_record_are_retrained_beside_it_without_touching_it(tmp_path, nations):
    from kgdistill.protocol.runner import load_best

    record = run(QUICK, tmp_path, device="cpu", dataset=nations)
    out = run_dir_for(QUICK, tmp_path)
    (out / "best.pt").unlink()  # as after a clone: checkpoints are not committed
    committed = (out / "record.json").read_bytes()
    model, again = load_best(QUICK, tmp_path, nations)
    assert (out / "record.json").read_bytes() == committed and (out / "best.pt").exists()
    assert again["test"] == record["test"]
    assert (tmp_path / ".retrain" / QUICK.run_name() / "record.json").exists()


def test_a_rerun_that_differs_from_the_committed_record_is_warned_about(tmp_path, nations):
    import json

    from kgdistill.protocol.runner import load_best

    run(QUICK, tmp_path, device="cpu", dataset=nations)
    out = run_dir_for(QUICK, tmp_path)
    (out / "best.pt").unlink()
    doctored = json.loads((out / "record.json").read_text())
    doctored["test"]["model"]["all"]["MRR"] += 0.01  # as if made under other CPU kernels
    (out / "record.json").write_text(json.dumps(doctored))
    with pytest.warns(UserWarning, match="differ from the committed record"):
        load_best(QUICK, tmp_path, nations)


def test_footprint_weights_leave_the_committed_record_alone_and_a_killed_retrain_resumes(tmp_path, nations):
    import torch

    from kgdistill.study.footprint import ensure_weights

    record = run(QUICK, tmp_path, device="cpu", dataset=nations)
    out = run_dir_for(QUICK, tmp_path)
    (out / "best.pt").unlink()
    committed = (out / "record.json").read_bytes()
    scratch = tmp_path / ".retrain"
    killed = run(QUICK, scratch, device="cpu", dataset=nations, stop_after_epoch=1)  # a retrain killed after epoch 1
    assert killed["status"] == "interrupted"
    first = torch.load(run_dir_for(QUICK, scratch) / "checkpoint.pt", weights_only=False)["history"][0]
    weights = ensure_weights(QUICK, tmp_path, device="cpu")
    assert weights == out / "best.pt" and weights.exists()
    assert (out / "record.json").read_bytes() == committed  # not overwritten by the retrain
    rerun = json.loads((run_dir_for(QUICK, scratch) / "record.json").read_text())
    assert rerun["history"][0]["seconds"] == first["seconds"]  # resumed, not started again
    assert rerun["test"] == record["test"]
