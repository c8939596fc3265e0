"""Reading and writing the official GPT-SoVITS checkpoint containers, and nothing else.

Format facts (RVC-Boss/GPT-SoVITS, read off the official savers and loaders):

* GPT / T2S ``*.ckpt``: a plain ``torch.save`` zip (first bytes ``PK``). Top-level dict
  ``{"weight": state_dict, "config": dict, "info": "GPT-e{epoch}"}``; every ``weight`` key is
  prefixed ``model.`` and every tensor is fp16. Only ``weight`` and ``config`` are read.
* Speaker-verification weights (v2Pro/v2ProPlus, ``sv/pretrained_eres2netv2w24s4ep4.ckpt``):
  a bare state dict (name -> tensor, fp32 + int64 ``num_batches_tracked``), saved straight from
  ``model.state_dict()``, so the ordered dict carries its ``_metadata``. Read by
  ``read_state_dict``.
* SoVITS ``*.pth``: ``{"weight", "config", "info"}`` (+ ``lora_rank`` for v3/v4 LoRA files);
  ``weight`` has every generator tensor in fp16 except keys containing ``enc_q``. ``config`` is
  the training hparams: a plain dict, or, in files written by ``s2_train.py``, a pickled
  ``utils.HParams`` object. Files saved by ``my_save2`` have their leading ``PK`` replaced by a
  two-byte version header: ``00`` v1, ``01`` v2, ``02`` v3, ``03`` v3-LoRA, ``04`` v4-LoRA,
  ``05`` v2Pro, ``06`` v2ProPlus. Plain v1/v2 files keep ``PK``; v1 and v2 are then told apart by
  the rows of ``enc_p.text_embedding.weight`` (322 v1, 732 v2), never by file size.

Checkpoints come from users, so they are unpickled by an allow-list: tensors, storages and
ordered dicts are rebuilt, any class named ``HParams`` becomes a plain nested dict, and every
other global is refused. Nothing in a checkpoint can run code.
"""

from __future__ import annotations

import _compat_pickle
import io
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

VERSION_HEADERS: dict[bytes, str] = {
    b"00": "v1",
    b"01": "v2",
    b"02": "v3",
    b"03": "v3-lora",
    b"04": "v4-lora",
    b"05": "v2Pro",
    b"06": "v2ProPlus",
}
ZIP_MAGIC = b"PK"
_PICKLE_PROTO = b"\x80"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, of an unknown layout, or of a version we do
    not run. The message says which file and why."""


class UnsupportedModelVersion(CheckpointError):
    """A well-formed official checkpoint of a model version this engine does not implement."""


@dataclass(frozen=True)
class Container:
    """An official checkpoint as stored: its weights, its config as plain dicts, and the
    version named by the file header (``None`` for plain ``PK`` files)."""

    weight: dict[str, torch.Tensor]
    config: dict[str, Any]
    info: str
    header_version: str | None


class _HParamsAsDict(dict):  # type: ignore[type-arg]
    """Stand-in for the official ``utils.HParams``: pickle restores it through ``__setstate__``
    or ``__dict__``; either way it ends up as dict items."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.update(state)

    @property
    def __dict__(self) -> "_HParamsAsDict":  # type: ignore[override]
        return self


class _OrderedDictAsDict(dict):  # type: ignore[type-arg]
    """Stand-in for ``collections.OrderedDict``. A dict subclass has an instance ``__dict__``, so
    a state dict saved with its ``_metadata`` attribute (``model.state_dict()`` as is) unpickles;
    the attribute is dropped by ``_plain``/``dict()``."""


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): _OrderedDictAsDict,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch", "Size"): torch.Size,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "tuple"): tuple,
    ("builtins", "list"): list,
    ("builtins", "dict"): dict,
}


class _AllowListUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        # torch.save writes protocol 2, which names globals as Python 2 did (``__builtin__.set``):
        # map them as the default ``find_class`` does, so the allow-list sees Python 3 names.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if name == "HParams":
            return _HParamsAsDict
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise pickle.UnpicklingError(
                f"checkpoint refers to {module}.{name}, which is not on the allow-list of a "
                "GPT-SoVITS checkpoint; refusing to load it"
            )
        return allowed


class _AllowListPickleModule:
    """What ``torch.load(pickle_module=...)`` needs: an ``Unpickler`` and ``load``."""

    Unpickler = _AllowListUnpickler

    @staticmethod
    def load(file: Any, **kwargs: Any) -> Any:
        return _AllowListUnpickler(file, **kwargs).load()


def _plain(value: Any) -> Any:
    """HParams objects and ordered dicts → plain dicts, recursively."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint ({exc.strerror})") from exc


def _unpickle(raw: bytes, path: Path, allow_legacy: bool = False) -> Any:
    """A torch zip archive (or, with ``allow_legacy``, a pre-1.6 ``torch.save`` stream, which
    starts with a pickle protocol byte) -> its object, through the allow-list unpickler."""
    legacy = allow_legacy and raw[:1] == _PICKLE_PROTO
    if not legacy and not zipfile.is_zipfile(io.BytesIO(raw)):
        raise CheckpointError(f"{path}: not a torch zip archive (truncated or corrupt?)")
    try:
        return torch.load(
            io.BytesIO(raw),
            map_location="cpu",
            weights_only=False,
            pickle_module=_AllowListPickleModule,
        )
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path}: corrupt checkpoint ({exc})") from exc


def read_container(path: str | Path) -> Container:
    """Read an official GPT or SoVITS container, undoing the two-byte version header."""
    path = Path(path)
    raw = _read_bytes(path)
    header = raw[:2]
    header_version: str | None = None
    if header != ZIP_MAGIC:
        header_version = VERSION_HEADERS.get(header)
        if header_version is None:
            raise CheckpointError(f"{path}: neither a torch zip archive nor a GPT-SoVITS file")
        raw = ZIP_MAGIC + raw[2:]
    obj = _unpickle(raw, path)
    if not isinstance(obj, dict) or "weight" not in obj:
        raise CheckpointError(f"{path}: no 'weight' entry; not a GPT-SoVITS inference checkpoint")
    weight = obj["weight"]
    if not isinstance(weight, dict) or not all(isinstance(v, torch.Tensor) for v in weight.values()):
        raise CheckpointError(f"{path}: 'weight' is not a state dict of tensors")
    return Container(
        weight=dict(weight),
        config=_plain(obj.get("config") or {}),
        info=str(obj.get("info", "")),
        header_version=header_version,
    )


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a bare state dict (a plain torch zip of name -> tensor), such as the official
    speaker-verification weights. The older non-zip ``torch.save`` format is read too: the SV
    file comes from another project (3D-Speaker), whose format could not be checked offline."""
    path = Path(path)
    obj = _unpickle(_read_bytes(path), path, allow_legacy=True)
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: not a bare state dict of tensors")
    return {str(k): v for k, v in obj.items()}


def write_container(
    path: str | Path,
    weight: dict[str, torch.Tensor],
    config: dict[str, Any],
    info: str,
    header_version: str | None = None,
) -> None:
    """Write weights the way the official savers do: every tensor fp16, plain ``torch.save`` zip,
    optionally with the two-byte version header in place of ``PK``."""
    payload = {
        "weight": {k: v.detach().to(torch.float16).cpu().contiguous() for k, v in weight.items()},
        "config": config,
        "info": info,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    raw = buffer.getvalue()
    if header_version is not None:
        magic = {v: k for k, v in VERSION_HEADERS.items()}[header_version]
        raw = magic + raw[2:]
    Path(path).write_bytes(raw)


def cast_state_dict(weight: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """fp16 on disk → the dtype we run in; integer buffers keep their type."""
    return {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in weight.items()}
