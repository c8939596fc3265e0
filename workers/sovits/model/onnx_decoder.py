"""The SoVITS decoder as an ONNX graph, and an ONNX Runtime runner for it.

Graph: ``(codes int64 [1,1,T], phones int64 [1,P], style float32 [1,gin,1], noise_scale float32
[1], noise float32 [1,inter,2T]) -> wav float32 [1,1,1280*T]``, speed fixed at 1, T and P
dynamic. Every generation exports the same way: ``style`` is the voice's stored (for v2Pro and
v2ProPlus: SV-fused) style, and the graph holds the Pro ``ge_to512`` step before MRTE. The prior
noise is an input rather than a RandomNormal node so that a run is reproducible and can be
compared with the torch path: the runner draws it with torch from the caller's generator, exactly
as ``SoVITSModel.decode`` does, so equal seeds give equal noise.
Exported in fp32 from a CPU copy of the model with the TorchScript-based exporter (the newer
dynamo exporter needs onnxscript, which we do not install).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .synthesizer import SoVITSModel

INPUT_NAMES = ["codes", "phones", "style", "noise_scale", "noise"]
OUTPUT_NAME = "wav"
OPSET = 17


class _DecoderGraph(nn.Module):
    def __init__(self, model: SoVITSModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        codes: torch.Tensor,
        phones: torch.Tensor,
        style: torch.Tensor,
        noise_scale: torch.Tensor,
        noise: torch.Tensor,
    ) -> torch.Tensor:
        m, logs = self.model._prior(codes, phones, style)
        return self.model._synthesize(m, logs, style, noise, noise_scale)


def export_decoder(model: SoVITSModel, path: str | Path, opset: int = OPSET) -> Path:
    """Write the decoder graph of ``model`` to ``path`` (fp32, dynamic lengths)."""
    path = Path(path)
    cpu = copy.deepcopy(model).to(device="cpu", dtype=torch.float32).eval()
    c = cpu.config
    t, p = 7, 5  # example lengths; every length axis is declared dynamic below
    example = (
        torch.zeros(1, 1, t, dtype=torch.long),
        torch.ones(1, p, dtype=torch.long),
        torch.zeros(1, c.gin_channels, 1),
        torch.tensor([0.5]),
        torch.zeros(1, c.inter_channels, 2 * t),
    )
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # deprecation and tracer warnings; the graph is checked by tests
        torch.onnx.export(
            _DecoderGraph(cpu),
            example,
            str(path),
            input_names=INPUT_NAMES,
            output_names=[OUTPUT_NAME],
            dynamic_axes={
                "codes": {2: "codes"},
                "phones": {1: "phones"},
                "noise": {2: "frames"},
                OUTPUT_NAME: {2: "samples"},
            },
            opset_version=opset,
            dynamo=False,
        )
    return path


def default_providers(device: str = "cpu") -> list[str]:
    """CUDA when asked for and available in this onnxruntime build, else CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device.startswith("cuda") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxDecoder:
    """Runs an exported decoder graph with onnxruntime; same contract as ``SoVITSModel.decode``
    at speed 1."""

    def __init__(
        self,
        path: str | Path,
        device: str = "cpu",
        providers: list[str] | None = None,
        intra_op_threads: int = 0,
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if intra_op_threads:
            options.intra_op_num_threads = intra_op_threads
        # No spinning between ops: on shared CPU hosts a spinning pool steals the core the
        # other threads (and the other pools) need; same numbers either way.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            str(path), sess_options=options, providers=providers or default_providers(device)
        )
        noise_shape = self.session.get_inputs()[INPUT_NAMES.index("noise")].shape
        self.inter_channels = int(noise_shape[1])

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    def decode(
        self,
        codes: torch.Tensor,
        phones: torch.Tensor,
        style: torch.Tensor,
        noise_scale: float = 0.5,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """codes ``[1,1,T]``, phones ``[1,P]``, style ``[1,gin,1]`` -> wav ``[1,1,1280*T]``."""
        if codes.dim() != 3 or codes.shape[:2] != (1, 1):
            raise ValueError(f"codes must be [1, 1, T], got {tuple(codes.shape)}")
        frames = 2 * codes.shape[2]
        noise = torch.randn((1, self.inter_channels, frames), generator=generator)
        feeds = {
            "codes": codes.detach().cpu().numpy().astype(np.int64),
            "phones": phones.detach().cpu().numpy().astype(np.int64),
            "style": style.detach().cpu().float().numpy(),
            "noise_scale": np.array([noise_scale], dtype=np.float32),
            "noise": noise.numpy(),
        }
        (wav,) = self.session.run([OUTPUT_NAME], feeds)
        return torch.from_numpy(wav)
