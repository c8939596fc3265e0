"""Model assets: where the official GPT-SoVITS files go, fetching them from a pinned commit with
checksum verification, and random models in the official formats (tiny for tests, full-size for
benchmarks). No torch at import time.

Layout of a models folder (it mirrors the official Hugging Face repository ``lj1995/GPT-SoVITS``):

    gsv-v2final-pretrained/s1bert25hz-5kh-longer-epoch=12-step=369668.ckpt   T2S (GPT) weights
    gsv-v2final-pretrained/s2G2333k.pth                                      SoVITS v2 generator
    sv/pretrained_eres2netv2w24s4ep4.ckpt      v2Pro/v2ProPlus only: speaker-verification model
    chinese-hubert-base/{config.json, preprocessor_config.json, pytorch_model.bin}
    chinese-roberta-wwm-ext-large/{config.json, tokenizer.json, pytorch_model.bin}
    G2PWModel/                     optional: better Chinese polyphone G2P when present
    manifest.json                  what is here, with sha256 of every file (written by us)

The other generations' GPT + SoVITS pairs sit at their official names beside these
(``GENERATION_FILES``): v1 ``s1bert25hz-2kh-longer-epoch=68e-step=50232.ckpt`` + ``s2G488k.pth``,
v2Pro / v2ProPlus ``s1v3.ckpt`` + ``v2Pro/s2Gv2Pro.pth`` / ``v2Pro/s2Gv2ProPlus.pth`` (these two
also need the speaker-verification model ``sv/pretrained_eres2netv2w24s4ep4.ckpt``).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from jobs.settings import Settings

HUB_REPO = "lj1995/GPT-SoVITS"
GPT_FILE = "gsv-v2final-pretrained/s1bert25hz-5kh-longer-epoch=12-step=369668.ckpt"
SOVITS_FILE = "gsv-v2final-pretrained/s2G2333k.pth"
HUBERT_DIR = "chinese-hubert-base"
BERT_DIR = "chinese-roberta-wwm-ext-large"
G2PW_DIR = "G2PWModel"
# ERes2NetV2 weights that v2Pro/v2ProPlus voices need (a bare state dict; see workers.sovits.model.sv).
SV_FILE = "sv/pretrained_eres2netv2w24s4ep4.ckpt"
SV_OFFICIAL_FILE = (SV_FILE, "speaker-verification (ERes2NetV2) weights for v2Pro/v2ProPlus, ~214 MB")
MANIFEST = "manifest.json"
# A 2-layer, 64-wide T2S with the official vocabularies (the shape of the parity set's model).
# The tiny T2S model's constant EOS logit (``workers.gpt.model.checkpoint.reachable_eos``): with the
# default sampling (top_k 15, temperature 1) a render then stops by itself after a median of ~40
# tokens (1.6 s), whatever the text, and short texts no longer run into the runaway guard
# (measured over 30 seeds each: 12 and 80 phones, no cap; at 1.9 the median is ~65 but 2 of 30
# short texts hit the cap; at 1.7 a third of all renders do). Without it every render of random
# weights runs to the guard (6 tokens per phone + 75): minutes of noise for `voxmill demo --tiny`.
# Greedy decoding without a repetition penalty (top_k 1, repetition_penalty 1) never picks EOS (some
# token's logit always beats 2.0): a way to reach the cap on purpose.
TINY_EOS_LOGIT = 2.0
# Written into a tiny model folder's READY file: folders made before EOS was reachable lack it and
# are made again by `voxmill demo --tiny`.
TINY_READY_MARK = f"; T2S EOS reachable (logit {TINY_EOS_LOGIT:g})"
TINY_T2S_CONFIG: dict[str, Any] = {
    "data": {"max_sec": 54, "pad_val": 1024},
    "model": {
        "vocab_size": 1025,
        "phoneme_vocab_size": 732,
        "embedding_dim": 64,
        "hidden_dim": 64,
        "head": 4,
        "linear_units": 256,
        "n_layer": 2,
        "dropout": 0,
        "EOS": 1024,
    },
}

# Official (GPT, SoVITS) file names of each generation, relative to the models folder.
GENERATION_FILES: dict[str, tuple[str, str]] = {
    "v1": ("s1bert25hz-2kh-longer-epoch=68e-step=50232.ckpt", "s2G488k.pth"),
    "v2": (GPT_FILE, SOVITS_FILE),
    "v2Pro": ("s1v3.ckpt", "v2Pro/s2Gv2Pro.pth"),
    "v2ProPlus": ("s1v3.ckpt", "v2Pro/s2Gv2ProPlus.pth"),
}
PRO_GENERATIONS = ("v2Pro", "v2ProPlus")

OFFICIAL_FILES: tuple[tuple[str, str], ...] = (
    (GPT_FILE, "T2S (GPT) v2 weights, ~155 MB"),
    (SOVITS_FILE, "SoVITS v2 generator weights, ~105 MB"),
    (f"{HUBERT_DIR}/config.json", "HuBERT config"),
    (f"{HUBERT_DIR}/preprocessor_config.json", "HuBERT feature-extractor config"),
    (f"{HUBERT_DIR}/pytorch_model.bin", "HuBERT weights, ~190 MB"),
    (f"{BERT_DIR}/config.json", "Chinese RoBERTa config"),
    (f"{BERT_DIR}/tokenizer.json", "Chinese RoBERTa tokenizer"),
    (f"{BERT_DIR}/pytorch_model.bin", "Chinese RoBERTa weights, ~650 MB"),
)


class MissingModels(RuntimeError):
    """Model files are missing; the message lists each one and where it goes."""


@dataclass(frozen=True)
class ModelPaths:
    root: Path
    gpt: Path
    sovits: Path
    hubert: Path
    bert: Path
    g2pw: Path
    sv: Path

    @classmethod
    def under(cls, root: Path, gpt: Path | None = None, sovits: Path | None = None) -> "ModelPaths":
        return cls(
            root=root,
            gpt=gpt or root / GPT_FILE,
            sovits=sovits or root / SOVITS_FILE,
            hubert=root / HUBERT_DIR,
            bert=root / BERT_DIR,
            g2pw=root / G2PW_DIR,
            sv=root / SV_FILE,
        )

    @classmethod
    def from_settings(cls, settings: "Settings") -> "ModelPaths":
        assert settings.models_dir is not None
        return cls.under(settings.models_dir, settings.gpt_checkpoint, settings.sovits_checkpoint)


def missing_files(root: Path) -> list[tuple[str, str]]:
    return [(name, what) for name, what in OFFICIAL_FILES if not (root / name).is_file()]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(root: Path, kind: str, source: str) -> dict[str, Any]:
    files = {
        str(p.relative_to(root)): {"sha256": _sha256(p), "size": p.stat().st_size}
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")
    }
    manifest = {"kind": kind, "source": source, "files": files}
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return manifest


def model_version(paths: ModelPaths) -> str:
    """``gsv-v2:<12 hex>`` from the checksums of the two checkpoints: a new fine-tune or model
    release is a new version, so its segments get new content keys and are re-rendered."""
    manifest_path = paths.root / MANIFEST
    sums: dict[str, str] = {}
    if manifest_path.is_file():
        files = json.loads(manifest_path.read_text()).get("files", {})
        sums = {name: entry["sha256"] for name, entry in files.items()}
    parts = []
    for path in (paths.gpt, paths.sovits):
        try:
            name = str(path.relative_to(paths.root))
        except ValueError:
            name = ""
        parts.append(sums.get(name) or (_sha256(path) if path.is_file() else "missing"))
    return "gsv-v2:" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]


def missing_message(root: Path) -> str:
    missing = missing_files(root)
    lines = [f"GPT-SoVITS v2 model files are missing from {root.resolve()}:"]
    lines += [f"  {root / name}    ({what})" for name, what in missing]
    lines += [
        "",
        f"Fetch them with:  voxmill models pull --dir {root}",
        f"(from the Hugging Face repository {HUB_REPO}; about 1.1 GB). Offline, copy the files",
        "above into place by hand, keeping these paths; fine-tuned GPT/SoVITS weights can be",
        "named with VOXMILL_GPT_CHECKPOINT / VOXMILL_SOVITS_CHECKPOINT instead.",
    ]
    return "\n".join(lines)


def ensure_models(root: Path) -> None:
    """Models present → nothing; missing and the hub reachable → pull; else MissingModels."""
    if not missing_files(root):
        return
    if pull(root) != 0:
        raise MissingModels(missing_message(root))


def report_missing(root: Path) -> int:
    if missing_files(root):
        print(missing_message(root))
        return 1
    print(f"all GPT-SoVITS v2 model files are in {root}")
    return 0


def _git_blob_sha1(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


# ----------------------------------------------------------------------------- pinned pulls

# The commit of ``lj1995/GPT-SoVITS`` that ``models pull`` downloads from unless told another. A
# commit, never a branch: what "main" holds changes under a deployment, a commit does not, and
# the checksums below are the hub's metadata *at that commit*. This one is the revision another
# public installer pins for the v2Pro/v2ProPlus files; it could not be checked offline, so the
# first online pull confirms it (a file the commit lacks is reported, nothing is trusted).
PINNED_REVISION = "336b2ec4e8d4ac74740798dd40af44e74659ecaf"
_COMMIT = re.compile(r"[0-9a-f]{40}")
_SHARED_FILES = tuple(OFFICIAL_FILES[2:])  # HuBERT and Chinese RoBERTa: every generation
# What `models pull --generation G` fetches: the pair at its official names (GENERATION_FILES,
# CHECKPOINTS.md §7.7), the SV model for the Pro family, and the shared HuBERT and RoBERTa.
PULL_FILES: dict[str, tuple[tuple[str, str], ...]] = {
    "v2": OFFICIAL_FILES,
    **{
        generation: (
            (gpt, f"T2S (GPT) weights the {generation} set uses"),
            (sovits, f"SoVITS {generation} generator weights"),
            *((SV_OFFICIAL_FILE,) if generation in PRO_GENERATIONS else ()),
            *_SHARED_FILES,
        )
        for generation, (gpt, sovits) in GENERATION_FILES.items()
        if generation != "v2"
    },
}


class PullRefused(ValueError):
    """A pull that must not start (an unpinned revision, an unknown generation)."""


def check_revision(revision: str) -> str:
    """A full 40-hex commit id; a branch or tag name (``main``, ``v2``) or a short id is refused:
    those can name other files tomorrow."""
    if not _COMMIT.fullmatch(revision):
        raise PullRefused(
            f"revision {revision!r} is not a commit id: give the full 40-character commit sha "
            "(branch and tag names move, so their checksums cannot be pinned)"
        )
    return revision


def generation_files(generation: str) -> list[str]:
    if generation not in PULL_FILES:
        raise PullRefused(f"unknown generation {generation!r}; one of {', '.join(PULL_FILES)}")
    return [name for name, _ in PULL_FILES[generation]]


@dataclass(frozen=True)
class FileMeta:
    """What the hub publishes about one file at one commit: its size, and the sha256 (LFS files)
    or the git blob id (small files)."""

    name: str
    size: int
    sha256: str | None = None
    blob_id: str | None = None


def verify_file(path: Path, meta: FileMeta) -> str | None:
    """None when ``path`` is the file ``meta`` describes, else what differs."""
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size != meta.size:
        return f"size {size}, expected {meta.size}"
    if meta.sha256 is not None:
        actual = _sha256(path)
        return None if actual == meta.sha256 else f"sha256 {actual}, expected {meta.sha256}"
    if meta.blob_id is not None:
        actual = _git_blob_sha1(path)
        return None if actual == meta.blob_id else f"git blob {actual}, expected {meta.blob_id}"
    return "the hub published no checksum for it"


class Source(Protocol):
    """Where pinned files come from: the Hugging Face hub, or (tests, mirrors) a stand-in."""

    def metadata(self, names: list[str], revision: str) -> dict[str, FileMeta]: ...

    def download(self, name: str, revision: str, root: Path) -> Path: ...


class HubSource:
    """The Hugging Face hub, always asked at a commit."""

    def __init__(self, repo: str = HUB_REPO) -> None:
        self.repo = repo

    def metadata(self, names: list[str], revision: str) -> dict[str, FileMeta]:
        from huggingface_hub import HfApi

        found: dict[str, FileMeta] = {}
        for info in HfApi().get_paths_info(self.repo, names, revision=revision, expand=True):
            lfs = getattr(info, "lfs", None)
            size = int(lfs.size if lfs is not None else getattr(info, "size", 0) or 0)
            found[info.path] = FileMeta(
                info.path, size, lfs.sha256 if lfs is not None else None, None if lfs is not None else info.blob_id
            )
        return found

    def download(self, name: str, revision: str, root: Path) -> Path:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(self.repo, name, revision=revision, local_dir=str(root)))


def pull(
    root: Path,
    include_g2pw: bool = False,
    generation: str = "v2",
    revision: str = PINNED_REVISION,
    source: Source | None = None,
) -> int:
    """Download one generation's official files from a pinned commit, and check each against
    the size and checksum the hub publishes for that commit (sha256 for LFS files, the git blob
    id for small ones). A file already in place is checked the same way; a mismatch is removed."""
    names = generation_files(generation)
    check_revision(revision)
    source = source or HubSource()
    root.mkdir(parents=True, exist_ok=True)
    try:
        infos = source.metadata(names, revision)
    except Exception as exc:  # any failure to reach the hub (DNS, proxy, HTTP) means: offline
        print(f"cannot reach the Hugging Face hub ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 2
    for name in names:
        target = root / name
        meta = infos.get(name)
        if meta is None:
            print(f"{name} is not in {HUB_REPO} at commit {revision}", file=sys.stderr)
            return 2
        if verify_file(target, meta) is not None:
            print(f"downloading {name} @ {revision[:12]} …")
            downloaded = source.download(name, revision, root)
            if downloaded.resolve() != target.resolve():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(downloaded, target)
        problem = verify_file(target, meta)
        if problem is not None:
            target.unlink(missing_ok=True)
            print(f"{name}: {problem}; removed", file=sys.stderr)
            return 2
    if include_g2pw and not (root / G2PW_DIR).is_dir():
        print(
            f"G2PW is optional and not fetched automatically: unpack the official G2PWModel folder into {root / G2PW_DIR}",
            file=sys.stderr,
        )
    write_manifest(root, "official", f"hf:{HUB_REPO}@{revision}")
    print(f"official GPT-SoVITS {generation} models verified in {root} (commit {revision})")
    return 0


def tiny_t2s_config(generation: str = "v2") -> dict[str, Any]:
    """``TINY_T2S_CONFIG`` with the generation's phone vocabulary (v1: 512 rows)."""
    from workers.gpt.model.config import PHONEME_VOCAB_SIZES

    config = json.loads(json.dumps(TINY_T2S_CONFIG))
    config["model"]["phoneme_vocab_size"] = PHONEME_VOCAB_SIZES[generation]
    return config


def make_tiny(root: Path, full_size: bool = False, seed: int = 0, generation: str = "v2") -> tuple[Path, Path]:
    """Random models of one generation (v1, v2, v2Pro, v2ProPlus) in the official formats, at the
    generation's official file names: tiny (seconds to build and run: tests, ``voxmill demo
    --tiny``) or with the official dimensions (benchmarks). Returns the (GPT, SoVITS) paths."""
    from workers.gpt.model import T2SConfig, write_random_checkpoint as write_t2s
    from workers.gpt.text.bert import write_tiny_bert
    from workers.sovits.model import generation_config, write_random_checkpoint as write_sovits, write_tiny_hubert
    from workers.sovits.model import write_random_sv_checkpoint
    from workers.sovits.model.sv import SMALL_SV_CONFIG

    if generation not in GENERATION_FILES:
        raise ValueError(f"unknown generation {generation!r}; one of {', '.join(GENERATION_FILES)}")
    gpt_name, sovits_name = GENERATION_FILES[generation]
    paths = ModelPaths.under(root, gpt=root / gpt_name, sovits=root / sovits_name)
    for path in (paths.gpt, paths.sovits):
        path.parent.mkdir(parents=True, exist_ok=True)
    if full_size:  # benchmarks: every render runs to the runaway guard, a fixed, known cost
        write_t2s(paths.gpt, T2SConfig.for_generation(generation), seed=seed)
    else:
        write_t2s(paths.gpt, tiny_t2s_config(generation), seed=seed, eos_logit=TINY_EOS_LOGIT)
    sovits_config = generation_config(generation, full_size=full_size)
    if generation in PRO_GENERATIONS and not full_size:
        sovits_config["model"]["sv_dim"] = SMALL_SV_CONFIG.embedding_dim  # pairs with the small SV model
    write_sovits(paths.sovits, sovits_config, seed=seed, generation=generation)
    if generation in PRO_GENERATIONS:  # the speaker-verification model only Pro voices need
        write_random_sv_checkpoint(paths.sv, seed=seed, full_size=full_size)  # small: 3.5 MB; full: 214 MB
    write_tiny_hubert(paths.hubert, seed=seed)
    write_tiny_bert(paths.bert, seed=seed)
    with open(paths.hubert / "preprocessor_config.json", "w") as handle:
        json.dump({"feature_extractor_type": "Wav2Vec2FeatureExtractor", "sampling_rate": 16000}, handle)
    kind = "full-size-random" if full_size else "tiny-random"
    write_manifest(root, kind, f"voxmill make-tiny generation={generation} seed={seed}")
    (root / "READY").write_text(f"random weights: the audio is noise{'' if full_size else TINY_READY_MARK}\n")
    return paths.gpt, paths.sovits
