"""kgdistill.core.environment is the one place that applies a profile's ``env`` and owns the data-folder
default; scripts/reproduce.py, scripts/train_runs.py and notebooks/conftest.py use it."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import yaml

from kgdistill import environment
from kgdistill.core.environment import DATA_DIR_ENV, ROOT_ENV, apply_profile_env, export_data_dir, profile_env

ROOT = Path(__file__).resolve().parent.parent
SMOKE_ENV = {str(k): str(v) for k, v in yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())["env"].items()}


@pytest.fixture
def env():
    """os.environ as the test leaves it is put back afterwards, whatever the code under test set."""
    saved = dict(os.environ)
    yield os.environ
    os.environ.clear()
    os.environ.update(saved)


def load_script(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_smoke_profile_has_an_env():
    assert SMOKE_ENV and profile_env("smoke") == SMOKE_ENV
    assert profile_env(ROOT / "params" / "smoke.yaml") == SMOKE_ENV
    assert profile_env({"env": {"A": 1}}) == {"A": "1"} and profile_env({}) == {}
    assert profile_env("no-such-profile") == {}  # loading the profile names the problem


def test_apply_profile_env_keeps_what_the_caller_set(env):
    first, *others = SMOKE_ENV
    env[first] = "caller's"
    for key in others:
        env.pop(key, None)
    added = apply_profile_env("smoke")
    assert added == {key: SMOKE_ENV[key] for key in others}
    assert env[first] == "caller's" and all(env[key] == SMOKE_ENV[key] for key in others)
    assert apply_profile_env("smoke") == {}  # all set now
    assert apply_profile_env({"env": {first: "profile's"}}, override=True) == {first: "profile's"}
    assert env[first] == "profile's"


def test_export_data_dir_makes_it_absolute_for_child_processes(env, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT / "notebooks")  # a kernel's working directory
    env.pop(ROOT_ENV, None)
    env[DATA_DIR_ENV] = "archives"  # relative: to the repository root, not to the working directory
    export_data_dir()
    assert env[DATA_DIR_ENV] == str(ROOT / "archives")
    env[DATA_DIR_ENV] = str(tmp_path / "archives")  # absolute: as it is
    export_data_dir()
    assert env[DATA_DIR_ENV] == str(tmp_path / "archives")
    env[DATA_DIR_ENV] = ""  # set and empty: download, even where ../shared/data exists
    export_data_dir()
    assert env[DATA_DIR_ENV] == ""
    del env[DATA_DIR_ENV]
    monkeypatch.setattr(environment, "shared_data_dir", lambda: tmp_path / "shared")
    export_data_dir()
    assert env[DATA_DIR_ENV] == str(tmp_path / "shared")  # the library's default, made explicit
    del env[DATA_DIR_ENV]
    monkeypatch.setattr(environment, "shared_data_dir", lambda: None)
    export_data_dir()
    assert DATA_DIR_ENV not in env  # nothing to point at: download


def test_train_runs_reexecutes_itself_when_the_profile_env_is_missing(env, monkeypatch):
    script = load_script(ROOT / "scripts" / "train_runs.py", "train_runs_env")
    calls = []
    monkeypatch.setattr(os, "execv", lambda *args: calls.append(args))
    argv = ["--profile", "smoke", "--list"]
    for key in SMOKE_ENV:
        env.pop(key, None)
    script.exec_with_profile_env(argv)
    assert calls == [(sys.executable, [sys.executable, str(ROOT / "scripts" / "train_runs.py"), *argv])]
    assert all(env[key] == value for key, value in SMOKE_ENV.items())
    script.exec_with_profile_env(argv)  # the new process has them: it goes on
    script.exec_with_profile_env(["--profile", "cpu"])
    script.exec_with_profile_env(["--profile", "no-such-profile"])
    assert len(calls) == 1


def test_reproduce_exports_the_profile_env_and_an_absolute_data_dir(env, tmp_path, monkeypatch):
    script = load_script(ROOT / "scripts" / "reproduce.py", "reproduce_env")
    monkeypatch.chdir(ROOT / "notebooks")
    env.pop(ROOT_ENV, None)
    env["KGDISTILL_TEST_SET"] = "caller's"
    env.pop("KGDISTILL_TEST_NEW", None)
    env[DATA_DIR_ENV] = "archives"
    script.prepare_environment({"env": {"KGDISTILL_TEST_SET": "profile's", "KGDISTILL_TEST_NEW": 2}})
    assert env["KGDISTILL_TEST_SET"] == "caller's" and env["KGDISTILL_TEST_NEW"] == "2"
    assert env[DATA_DIR_ENV] == str(ROOT / "archives") and ROOT_ENV in env


def test_the_notebooks_conftest_exports_the_smoke_env(env, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT / "notebooks")
    env.pop(ROOT_ENV, None)
    first, *others = SMOKE_ENV
    env[first] = "caller's"
    for key in others:
        env.pop(key, None)
    env[DATA_DIR_ENV] = "archives"
    load_script(ROOT / "notebooks" / "conftest.py", "notebooks_conftest_env")
    assert env[first] == "caller's" and all(env[key] == SMOKE_ENV[key] for key in others)
    assert env[DATA_DIR_ENV] == str(ROOT / "archives")
