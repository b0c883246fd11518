"""pytest --nbval setup for the committed notebooks (executed with the smoke profile).

Before any kernel starts, export the smoke profile's ``env`` (CPU-kernel pins that make the
retrained numbers bit-identical across machines), the repository root, and ``KGC_DATA_DIR``
made absolute, since the kernels run in this folder (the library's default data folder,
:func:`kgdistill.core.environment.default_data_dir`). Values the caller already set win.
"""
from __future__ import annotations

import os
from pathlib import Path

from kgdistill.core.environment import ROOT_ENV, apply_profile_env, export_data_dir

ROOT = Path(__file__).resolve().parent.parent

os.environ.setdefault(ROOT_ENV, str(ROOT))
apply_profile_env(ROOT / "params" / "smoke.yaml")
export_data_dir()
