"""The vendored official facts (the v2 subset the tests read offline) are an unedited copy of the
shared ones; the larger sets (parity-v2pro, parity-v1) are read from the shared folder itself."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tests.support.official import OFFICIAL

SHARED = Path(__file__).resolve().parents[2] / "shared" / "gpt-sovits"


def digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "ORIGIN.md"
    }


def test_vendored_copy_is_complete_and_unedited() -> None:
    ours = digest(OFFICIAL)
    assert "parity-small/s1_small.ckpt" in ours and "t2s_v2_keys.tsv" in ours and len(ours) >= 30
    if SHARED.is_dir():  # development machines and CI: compare with the source of truth
        shared = digest(SHARED)
        assert {name: shared.get(name) for name in ours} == ours
