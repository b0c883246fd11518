"""scripts/device_run.sh, the GPU machine's command, run here with this venv's Python standing in for the
machine's: the library from the checkout, the module check, records copied to $OUT (or one tar), and
--unpack putting fetched records back."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from test_launch import tiny_profile

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "device_run.sh"


def device_run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out"),
            "KGDISTILL_RECORDS": str(tmp_path / "results"), "DEVICE_CARRY": str(tmp_path / "carry"), **env}
    full.pop("PYTHONPATH", None)  # the script must find the library itself
    return subprocess.run(["bash", str(SCRIPT), *args], env=full, capture_output=True, text=True, timeout=300)


def test_a_tiny_training_command_returns_its_records(tmp_path):
    profile = tiny_profile(tmp_path)
    runs = tmp_path / "results" / "tiny" / "runs"
    done = device_run(tmp_path, "scripts/train_runs.py", "--profile", str(profile), "--runs-dir", str(runs),
                      "--match", "baseline")
    assert done.returncode == 0, done.stderr + done.stdout
    out = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert out[0] == "device_run.log" and len(out) == 2 and out[1].startswith("tiny--runs--baseline-Nations")
    assert out[1].endswith("--record.json")
    assert json.loads((tmp_path / "out" / out[1]).read_text())["status"] == "complete"
    assert "all runs done" in (tmp_path / "out" / "device_run.log").read_text()
    # back here: the record lands where the profile's runs live
    back = device_run(tmp_path, "--unpack", str(tmp_path / "out"), KGDISTILL_RECORDS=str(tmp_path / "here"))
    assert back.returncode == 0 and "1 records" in back.stdout
    name = out[1][len("tiny--runs--"):-len("--record.json")]
    assert (tmp_path / "here" / "tiny" / "runs" / name / "record.json").is_file()


def test_more_than_seven_records_come_back_as_one_tar(tmp_path):
    write = ("import pathlib, sys; root = pathlib.Path(sys.argv[1]); "
             "[(root / 'p' / 'runs' / f'run{i}').mkdir(parents=True) or "
             "(root / 'p' / 'runs' / f'run{i}' / 'record.json').write_text('{}') for i in range(9)]")
    done = device_run(tmp_path, "-c", write, str(tmp_path / "results"))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["device_run.log", "records.tar"]
    with tarfile.open(tmp_path / "out" / "records.tar") as tar:
        assert sorted(tar.getnames()) == [f"p/runs/run{i}/record.json" for i in range(9)]
    # a second call copies only what it wrote: nothing
    again = device_run(tmp_path, "-c", "pass")
    assert again.returncode == 0 and "0 records" in again.stderr
    back = device_run(tmp_path, "--unpack", str(tmp_path / "out"), KGDISTILL_RECORDS=str(tmp_path / "here"))
    assert "9 records" in back.stdout and (tmp_path / "here" / "p" / "runs" / "run8" / "record.json").is_file()


def test_a_missing_module_or_out_fails_naming_the_fix(tmp_path):
    missing = device_run(tmp_path, "-c", "pass", DEVICE_RUN_MODULES="torch no_such_module_xyz")
    assert missing.returncode == 3
    assert "no_such_module_xyz" in missing.stderr and "device_prepare.sh" in missing.stderr
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    no_out = subprocess.run(["bash", str(SCRIPT), "-c", "pass"], env=env, capture_output=True, text=True)
    assert no_out.returncode == 2 and "OUT is not set" in no_out.stderr


def test_carried_data_is_used(tmp_path):
    carry = tmp_path / "carry" / "data"
    carry.mkdir(parents=True)
    done = device_run(tmp_path, "-c", "import os; print(os.environ['KGC_DATA_DIR'])")
    assert done.returncode == 0 and done.stdout.splitlines()[-1] == str(carry)
