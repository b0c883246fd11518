"""pytest --nbval setup for the committed notebooks (executed with the smoke profile).

Before any kernel starts, export the smoke profile's ``env`` (CPU-kernel pins that make the
retrained numbers bit-identical across machines) and make ``KGC_DATA_DIR`` absolute, since the
kernels run in this folder. Values the caller already set win.
"""
from __future__ import annotations

import os
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent

with open(ROOT / "params" / "smoke.yaml") as handle:
    for key, value in (yaml.safe_load(handle).get("env") or {}).items():
        os.environ.setdefault(str(key), str(value))
os.environ.setdefault("KGC_DATA_DIR", str((ROOT / ".." / "shared" / "data").resolve()))
os.environ["KGC_DATA_DIR"] = str(Path(os.environ["KGC_DATA_DIR"]).resolve())
os.environ.setdefault("KGDISTILL_ROOT", str(ROOT))
