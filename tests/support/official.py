"""Where the tests find the official format facts and the parity sets.

`parity-small` (v2) is vendored under tests/data. The larger sets (`parity-v2pro`, `parity-v1`)
and the v1/SV key tables stay in the project's shared folder, beside the checkout
(`../shared/gpt-sovits`, as CI lays it out) or where `VOXMILL_SHARED_GPT_SOVITS` points. A test
that needs them fails with the path it looked in; it never skips.
"""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
OFFICIAL = REPO_ROOT / "tests" / "data" / "gpt-sovits"
PARITY = OFFICIAL / "parity-small"


def shared_gpt_sovits() -> Path:
    """The shared GPT-SoVITS facts folder; raises (never skips) when it is not there."""
    configured = os.environ.get("VOXMILL_SHARED_GPT_SOVITS")
    folder = Path(configured) if configured else REPO_ROOT.parent / "shared" / "gpt-sovits"
    if not (folder / "CHECKPOINTS.md").is_file():
        raise FileNotFoundError(
            f"the shared GPT-SoVITS parity sets are not at {folder}: lay ../shared beside the "
            "checkout (as CI does) or set VOXMILL_SHARED_GPT_SOVITS to its gpt-sovits folder"
        )
    return folder


def parity_v2pro() -> Path:
    return shared_gpt_sovits() / "parity-v2pro"


def parity_v1() -> Path:
    return shared_gpt_sovits() / "parity-v1"
