"""Where the tests find the official format facts and the parity set (vendored copy)."""

from pathlib import Path

OFFICIAL = Path(__file__).resolve().parents[1] / "data" / "gpt-sovits"
PARITY = OFFICIAL / "parity-small"
