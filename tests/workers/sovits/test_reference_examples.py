"""The committed sample voice is a usable reference, matches its documented bytes, and stays
small; the sample chapter is there for the demo."""

from __future__ import annotations

import hashlib
from pathlib import Path

import soundfile as sf
import torch

from workers.sovits.reference import analyse_reference

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[3]
VOICE = ROOT / "examples" / "voice"


def test_sample_voice_is_one_clean_reference_window() -> None:
    data = (VOICE / "sample.wav").read_bytes()
    assert len(data) < 1024 * 1024
    info = sf.info(str(VOICE / "sample.wav"))
    assert (info.samplerate, info.channels, info.subtype) == (22050, 1, "PCM_16")
    ref = analyse_reference(data)
    assert len(ref.windows) == 1
    w = ref.windows[0]
    assert 6.0 <= w.duration_s <= 9.0
    assert ref.snr_db > 40 and ref.clipped_fraction == 0.0


def test_sample_voice_matches_its_licence_notes() -> None:
    notes = (VOICE / "LICENSE.md").read_text()
    digest = hashlib.sha256((VOICE / "sample.wav").read_bytes()).hexdigest()
    assert digest in notes  # the file is the one whose provenance the notes describe
    assert "CC0" in notes
    text = (VOICE / "sample.txt").read_text().strip()
    assert text and text.endswith(".")


def test_sample_chapter_has_a_title_and_paragraphs() -> None:
    chapter = (ROOT / "examples" / "chapter.md").read_text()
    assert chapter.startswith("# ")
    paragraphs = [p for p in chapter.split("\n\n") if p.strip() and not p.startswith(("#", "*"))]
    assert 2 <= len(paragraphs) <= 3
    assert "public domain" in chapter
