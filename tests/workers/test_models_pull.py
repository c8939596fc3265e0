"""``voxmill models pull``: only from a pinned commit, and every file checked against the size and
checksum published for that commit. Offline: the hub is stood in for by a folder laid out like
the repository at one commit, with the metadata the hub would publish for it (sha256 for LFS
files, the git blob id for small ones)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from infra.cli import main as voxmill
from workers.assets import (
    PULL_FILES,
    PINNED_REVISION,
    FileMeta,
    PullRefused,
    check_revision,
    generation_files,
    pull,
)

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FolderHub:
    """A hub at one commit: ``files`` under ``folder``; metadata computed when built, so a file
    changed later no longer matches what the hub "publishes"."""

    def __init__(self, folder: Path, commit: str, names: list[str]) -> None:
        self.folder = folder
        self.commit = commit
        self.asked: list[str] = []
        self.meta: dict[str, FileMeta] = {}
        for i, name in enumerate(names):
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            data = f"{name} @ {commit}\n".encode() * (50 + i)
            path.write_bytes(data)
            if name.endswith((".json",)):  # small files: git blob ids, as the hub gives them
                blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
                self.meta[name] = FileMeta(name, len(data), blob_id=blob)
            else:
                self.meta[name] = FileMeta(name, len(data), sha256=hashlib.sha256(data).hexdigest())

    def metadata(self, names: list[str], revision: str) -> dict[str, FileMeta]:
        self.asked.append(revision)
        assert revision == self.commit, "asked at another revision than the pinned one"
        return {n: self.meta[n] for n in names if n in self.meta}

    def download(self, name: str, revision: str, root: Path) -> Path:
        self.asked.append(revision)
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.folder / name, target)
        return target


def test_branch_names_and_short_ids_are_refused() -> None:
    assert check_revision(COMMIT) == COMMIT
    assert check_revision(PINNED_REVISION) == PINNED_REVISION
    for moving in ("main", "v2", "refs/heads/main", COMMIT[:12], COMMIT.upper(), COMMIT + "0", ""):
        with pytest.raises(PullRefused, match="not a commit id"):
            check_revision(moving)
    with pytest.raises(PullRefused, match="unknown generation"):
        generation_files("v3")


def test_cli_refuses_a_branch_before_any_download(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert voxmill(["models", "pull", "--dir", str(tmp_path), "--generation", "v2ProPlus", "--revision", "main"]) == 2
    assert "not a commit id" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_official_file_names_per_generation() -> None:
    assert generation_files("v2ProPlus")[:3] == ["s1v3.ckpt", "v2Pro/s2Gv2ProPlus.pth", "sv/pretrained_eres2netv2w24s4ep4.ckpt"]
    assert generation_files("v2Pro")[:3] == ["s1v3.ckpt", "v2Pro/s2Gv2Pro.pth", "sv/pretrained_eres2netv2w24s4ep4.ckpt"]
    assert generation_files("v1")[:2] == ["s1bert25hz-2kh-longer-epoch=68e-step=50232.ckpt", "s2G488k.pth"]
    assert generation_files("v2")[:2] == [
        "gsv-v2final-pretrained/s1bert25hz-5kh-longer-epoch=12-step=369668.ckpt",
        "gsv-v2final-pretrained/s2G2333k.pth",
    ]
    for files in PULL_FILES.values():  # HuBERT and RoBERTa come with every generation
        names = [n for n, _ in files]
        assert "chinese-hubert-base/pytorch_model.bin" in names and "chinese-roberta-wwm-ext-large/pytorch_model.bin" in names


def test_pull_verifies_every_file_at_the_pinned_commit(tmp_path: Path) -> None:
    names = generation_files("v2ProPlus")
    hub = FolderHub(tmp_path / "hub", COMMIT, names)
    root = tmp_path / "models"
    assert pull(root, generation="v2ProPlus", revision=COMMIT, source=hub) == 0
    for name in names:
        assert (root / name).read_bytes() == (hub.folder / name).read_bytes()
    assert set(hub.asked) == {COMMIT}
    assert f"@{COMMIT}" in (root / "manifest.json").read_text()

    # A file damaged in place is found on the next pull, fetched again and verified.
    (root / "v2Pro/s2Gv2ProPlus.pth").write_bytes(b"truncated")
    assert pull(root, generation="v2ProPlus", revision=COMMIT, source=hub) == 0
    assert (root / "v2Pro/s2Gv2ProPlus.pth").read_bytes() == (hub.folder / "v2Pro/s2Gv2ProPlus.pth").read_bytes()


@pytest.mark.parametrize("damaged", ["s1v3.ckpt", "chinese-hubert-base/config.json"])
def test_a_download_that_differs_from_the_commits_metadata_is_removed(tmp_path: Path, damaged: str) -> None:
    """The source serves a file other than the one the commit's metadata describes (same size,
    other bytes): sha256 for LFS files, the git blob id for small ones; the file is removed."""
    names = generation_files("v2Pro")
    hub = FolderHub(tmp_path / "hub", COMMIT, names)
    original = (hub.folder / damaged).read_bytes()
    (hub.folder / damaged).write_bytes(bytes([original[0] ^ 1]) + original[1:])
    root = tmp_path / "models"
    assert pull(root, generation="v2Pro", revision=COMMIT, source=hub) == 2
    assert not (root / damaged).exists()
    assert not (root / "manifest.json").exists()


def test_a_file_missing_at_the_commit_fails_the_pull(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    names = generation_files("v1")
    hub = FolderHub(tmp_path / "hub", COMMIT, names[1:])  # the commit lacks the v1 GPT file
    assert pull(tmp_path / "models", generation="v1", revision=COMMIT, source=hub) == 2
    assert f"is not in lj1995/GPT-SoVITS at commit {COMMIT}" in capsys.readouterr().err
