"""``SoVITSModel``: the inference half of the official ``SynthesizerTrn`` (no posterior encoder,
no discriminator) for v1, v2, v2Pro and v2ProPlus, with the official module and parameter names
so a checkpoint's ``weight`` maps onto it key for key (weight-norm pairs folded at load).

Style: per reference, ``ge_i = ref_enc(spec_i)``; the Pro family fuses each with that reference's
speaker-verification embedding, ``ge_i = prelu(ge_i + sv_emb(sv_i))``. The voice's style is the
mean of the ``ge_i`` (``style_vector``, computed once per voice). The flow and the vocoder take
that style; the text encoder's MRTE takes it as is (v1/v2, gin 512) or ``ge_to512(style)`` (Pro),
which ``decode`` applies, so a stored style is all a voice needs to decode."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from . import weight_norm
from .config import CODEBOOK_SIZE, MRTE_HIDDEN, SSL_DIM, SoVITSConfig
from .flow import ResidualCouplingBlock
from .style import MelStyleEncoder
from .text_encoder import TextEncoder
from .vocoder import Generator


class Codebook(nn.Module):
    """The one RVQ codebook. Only ``embed`` is read at inference; the EMA statistics are kept
    because the checkpoint stores them (fp16 like everything else)."""

    def __init__(self, dim: int, size: int) -> None:
        super().__init__()
        self.register_buffer("inited", torch.ones(1))
        self.register_buffer("cluster_size", torch.zeros(size))
        self.register_buffer("embed", torch.randn(size, dim))
        self.register_buffer("embed_avg", torch.zeros(size, dim))

    embed: torch.Tensor

    def nearest(self, x: torch.Tensor) -> torch.Tensor:
        """``[n, dim]`` -> ``[n]`` index of the nearest codeword. Same expression as the official
        (argmax of -(|x|^2 - 2 x.e + |e|^2)) so near-ties break the same way."""
        e = self.embed.t()  # [dim, size]
        dist = -(x.pow(2).sum(1, keepdim=True) - 2 * x @ e + e.pow(2).sum(0, keepdim=True))
        return dist.max(dim=-1).indices


class _VQLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self._codebook = Codebook(SSL_DIM, CODEBOOK_SIZE)


class _ResidualVQ(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([_VQLayer()])


class Quantizer(nn.Module):
    """``quantizer.vq.layers.0._codebook.*`` (n_q = 1; project_in/out are identities)."""

    def __init__(self) -> None:
        super().__init__()
        self.vq = _ResidualVQ()

    @property
    def codebook(self) -> Codebook:
        layer = self.vq.layers[0]
        assert isinstance(layer, _VQLayer)
        return layer._codebook

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``[b, 768, t]`` -> codes ``[1, b, t]`` (layout n_q, batch, time)."""
        b, d, t = x.shape
        return self.codebook.nearest(x.transpose(1, 2).reshape(b * t, d)).view(1, b, t)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes ``[1, b, t]`` -> codebook vectors ``[b, 768, t]``."""
        return nn.functional.embedding(codes[0], self.codebook.embed).transpose(1, 2)


class SoVITSModel(nn.Module):
    """Semantic tokens + phones + a voice's style vector -> 32 kHz waveform.

    All methods take batch 1 (as the official inference does) and run without grad.
    """

    def __init__(self, config: SoVITSConfig) -> None:
        super().__init__()
        self.config = config
        self.enc_p = TextEncoder(config)
        self.dec = Generator(config)
        self.flow = ResidualCouplingBlock(config.inter_channels, config.hidden_channels, config.gin_channels)
        self.ref_enc = MelStyleEncoder(config.ref_bins, config.gin_channels)
        # 25 Hz: two 50 Hz HuBERT frames per semantic token.
        self.ssl_proj = nn.Conv1d(SSL_DIM, SSL_DIM, 2, stride=2)
        self.quantizer = Quantizer()
        if config.is_pro:
            self.sv_emb = nn.Linear(config.sv_dim, config.gin_channels)
            self.prelu = nn.PReLU(config.gin_channels)
            self.ge_to512 = nn.Linear(config.gin_channels, MRTE_HIDDEN)

    @classmethod
    def load(
        cls, path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> "SoVITSModel":
        """Load an official v1/v2/v2Pro/v2ProPlus ``.pth`` strictly; eval mode, weight norm
        folded, ``dtype``."""
        from .checkpoint import load_sovits

        return load_sovits(path, device=device, dtype=dtype)

    @property
    def dtype(self) -> torch.dtype:
        return self.ssl_proj.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.ssl_proj.weight.device

    def official_key_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every key an official checkpoint stores for this config, with its shape."""
        wn = set(weight_norm.marked_prefixes(self))
        shapes: dict[str, tuple[int, ...]] = {}
        for key, tensor in self.state_dict().items():
            prefix, _, leaf = key.rpartition(".")
            if leaf == "weight" and prefix in wn:
                shapes[f"{prefix}.weight_g"] = (tensor.shape[0],) + (1,) * (tensor.dim() - 1)
                shapes[f"{prefix}.weight_v"] = tuple(tensor.shape)
            else:
                shapes[key] = tuple(tensor.shape)
        return shapes

    @property
    def is_pro(self) -> bool:
        return self.config.is_pro

    @torch.inference_mode()
    def style_vector(
        self, specs: list[torch.Tensor], sv_embeddings: list[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Reference spectrograms ``[1, 1025, F]`` -> style vector ``[1, gin, 1]``; several
        references are averaged as the official decode does. Compute once per voice.

        Pro models need ``sv_embeddings``: one ``[1, 20480]`` speaker-verification embedding per
        spectrogram, in the same order; each is fused with its own reference before the mean.
        Other generations take none."""
        if not specs:
            raise ValueError("need at least one reference spectrogram")
        if self.is_pro:
            if sv_embeddings is None or len(sv_embeddings) != len(specs):
                got = "none" if sv_embeddings is None else str(len(sv_embeddings))
                raise ValueError(
                    f"a {self.config.version} model needs one SV embedding per reference "
                    f"spectrogram ({len(specs)}), got {got}"
                )
        elif sv_embeddings is not None:
            raise ValueError(f"a {self.config.version} model takes no SV embeddings")
        styles = []
        for i, spec in enumerate(specs):
            if spec.dim() != 3 or spec.shape[:2] != (1, self.config.spec_channels):
                raise ValueError(
                    f"expected a spectrogram [1, {self.config.spec_channels}, F], got {tuple(spec.shape)}"
                )
            spec = spec.to(device=self.device, dtype=self.dtype)
            ge = self.ref_enc(spec[:, : self.config.ref_bins])  # [1, gin, 1]
            if sv_embeddings is not None:
                ge = self.prelu(ge + self.sv_projection(sv_embeddings[i]).unsqueeze(-1))
            styles.append(ge)
        return torch.stack(styles, 0).mean(0)

    def sv_projection(self, sv: torch.Tensor) -> torch.Tensor:
        """Pro only: ``sv_emb`` of a speaker-verification embedding ``[1, 20480]`` -> ``[1, gin]``."""
        if not self.is_pro:
            raise ValueError(f"a {self.config.version} model has no SV projection")
        sv = sv.reshape(1, -1) if sv.dim() == 1 else sv
        if sv.shape != (1, self.config.sv_dim):
            raise ValueError(f"an SV embedding must be [1, {self.config.sv_dim}], got {tuple(sv.shape)}")
        return self.sv_emb(sv.to(device=self.device, dtype=self.dtype))

    def mrte_style(self, style: torch.Tensor) -> torch.Tensor:
        """What the text encoder's MRTE adds at its 512-wide level: the style itself (v1/v2) or
        ``ge_to512`` of it (Pro), a Linear over the channel axis -> ``[1, 512, 1]``."""
        if not self.is_pro:
            return style
        return self.ge_to512(style.transpose(1, 2)).transpose(1, 2)

    @torch.inference_mode()
    def decode(
        self,
        codes: torch.Tensor,
        phones: torch.Tensor,
        style: torch.Tensor,
        noise_scale: float = 0.5,
        speed: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """codes ``[1, 1, T]`` (25 Hz semantic tokens), phones ``[1, P]`` (target phones only),
        style ``[1, gin, 1]`` -> waveform ``[1, 1, n * 640]`` at 32 kHz, n = 2T (speed 1) or
        int(2T / speed) + 1. ``noise_scale`` scales the prior sample (0 = deterministic);
        the noise is drawn from ``generator`` (or torch's global RNG)."""
        self._check_inputs(codes, phones, style)
        codes, phones = codes.to(self.device), phones.to(self.device)
        style = style.to(device=self.device, dtype=self.dtype)
        m, logs = self._prior(codes, phones, style, speed)
        noise = torch.randn(m.shape, generator=generator, device=generator.device if generator else m.device)
        return self._synthesize(m, logs, style, noise.to(device=m.device, dtype=m.dtype), noise_scale)

    def decode_with_references(
        self,
        codes: torch.Tensor,
        phones: torch.Tensor,
        specs: list[torch.Tensor],
        noise_scale: float = 0.5,
        speed: float = 1.0,
        generator: torch.Generator | None = None,
        sv_embeddings: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``decode`` with the style computed from reference spectrograms (and, for Pro, their SV
        embeddings: one per spectrogram), as the official ``decode(..., refer, ..., sv_emb)``."""
        style = self.style_vector(specs, sv_embeddings)
        return self.decode(codes, phones, style, noise_scale, speed, generator)

    @torch.inference_mode()
    def extract_latent(self, ssl: torch.Tensor) -> torch.Tensor:
        """HuBERT features ``[1, 768, T]`` (50 Hz) -> semantic codes ``[1, 1, T // 2]``."""
        if ssl.dim() != 3 or ssl.shape[1] != SSL_DIM:
            raise ValueError(f"expected HuBERT features [1, {SSL_DIM}, T], got {tuple(ssl.shape)}")
        return self.quantizer.encode(self.ssl_proj(ssl.to(device=self.device, dtype=self.dtype)))

    def _check_inputs(self, codes: torch.Tensor, phones: torch.Tensor, style: torch.Tensor) -> None:
        if codes.dim() != 3 or codes.shape[:2] != (1, 1) or codes.shape[2] < 1:
            raise ValueError(f"codes must be [1, 1, T>0], got {tuple(codes.shape)}")
        if phones.dim() != 2 or phones.shape[0] != 1 or phones.shape[1] < 1:
            raise ValueError(f"phones must be [1, P>0], got {tuple(phones.shape)}")
        if style.shape != (1, self.config.gin_channels, 1):
            raise ValueError(f"style must be [1, {self.config.gin_channels}, 1], got {tuple(style.shape)}")
        if int(codes.min()) < 0 or int(codes.max()) >= CODEBOOK_SIZE:
            raise ValueError(f"semantic codes must lie in [0, {CODEBOOK_SIZE})")
        if int(phones.min()) < 0 or int(phones.max()) >= self.config.n_symbols:
            raise ValueError(f"phone ids must lie in [0, {self.config.n_symbols})")

    def _prior(
        self, codes: torch.Tensor, phones: torch.Tensor, style: torch.Tensor, speed: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        content = self.quantizer.decode(codes)  # [1, 768, T] at 25 Hz
        b, d, t = content.shape
        content = content.unsqueeze(-1).expand(b, d, t, 2).reshape(b, d, 2 * t)  # nearest x2 -> 50 Hz
        return self.enc_p(content, phones, self.mrte_style(style), speed)

    def _synthesize(
        self,
        m: torch.Tensor,
        logs: torch.Tensor,
        style: torch.Tensor,
        noise: torch.Tensor,
        noise_scale: float | torch.Tensor,
    ) -> torch.Tensor:
        z_p = m + noise * torch.exp(logs) * noise_scale  # [1, inter, n]
        return self.dec(self.flow.reverse(z_p, style), style)
