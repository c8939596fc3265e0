"""The checkpoint unpickler refuses a pickle that would run code: a crafted ``.ckpt`` / ``.pth``
(a real torch zip, with or without the GPT-SoVITS version header) whose pickle calls ``os.system``,
``exec`` or ``eval`` to create a file is refused with an error naming the global, and the file is
never created."""

from __future__ import annotations

import builtins
import io
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from workers.checkpoints import CheckpointError, read_container, write_container


class _Payload:
    """Pickles as a call of ``func(*args)``: what a hostile checkpoint hides among its weights."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


def _payloads(marker: Path) -> dict[str, _Payload]:
    touch = f"open({str(marker)!r}, 'w').write('pwned')"
    return {
        "os.system": _Payload(os.system, f"touch {marker}"),
        "exec": _Payload(builtins.exec, touch),
        "eval": _Payload(builtins.eval, touch),
    }


def _crafted(path: Path, payload: _Payload, where: str, header: bytes | None) -> None:
    weight = {"model.w": torch.zeros(2, dtype=torch.float16)}
    obj: dict[str, Any] = {"weight": weight, "config": {}, "info": "GPT-e1"}
    if where == "weight":
        obj["weight"] = {**weight, "model.evil": payload}
    else:
        obj[where] = payload
    buffer = io.BytesIO()
    torch.save(obj, buffer)  # a genuine torch zip archive, as an official saver writes
    raw = buffer.getvalue()
    path.write_bytes(raw if header is None else header + raw[2:])


@pytest.mark.parametrize("call", ["os.system", "exec", "eval"])
@pytest.mark.parametrize(
    ("name", "where", "header"),
    [("gpt.ckpt", "config", None), ("sovits.pth", "weight", b"05"), ("lora.pth", "info", b"03")],
)
def test_a_pickle_that_would_run_code_is_refused_and_never_runs(
    tmp_path: Path, call: str, name: str, where: str, header: bytes | None
) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / name
    _crafted(path, _payloads(marker)[call], where, header)
    assert path.read_bytes()[:2] == (header or b"PK")
    with pytest.raises(CheckpointError) as refused:
        read_container(path)
    message = str(refused.value)
    assert str(path) in message and "allow-list" in message
    assert ("posix.system" in message or "os.system" in message) if call == "os.system" else f"builtins.{call}" in message
    assert not marker.exists()


def test_the_same_layout_without_a_payload_loads(tmp_path: Path) -> None:
    """The refusal is of the payload, not of the container: the honest file reads."""
    path = tmp_path / "honest.pth"
    write_container(path, {"model.w": torch.ones(2)}, {"model": {"n": 1}}, "GPT-e1", header_version="v2Pro")
    container = read_container(path)
    assert container.header_version == "v2Pro" and container.config == {"model": {"n": 1}}
