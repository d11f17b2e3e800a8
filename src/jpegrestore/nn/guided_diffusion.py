"""The UNet of OpenAI's guided-diffusion (Dhariwal & Nichol, "Diffusion Models Beat GANs on Image Synthesis",
2021), the prior of DDRM-JPEG, written from its published definition so that the released checkpoints load
with ``strict=True`` (module and state-dict key names follow it).

The paper's prior, ``256x256_diffusion_uncond.pt``, is :data:`GUIDED_DIFFUSION_256_UNCOND`: 552,814,086
parameters in 566 tensors. It predicts epsilon in channels 0..2 and the learned variance interpolation in
channels 3..5 (``learn_sigma``) for images in [-1, 1] at integer timesteps 0..999 of the linear beta schedule
1e-4..0.02.

Structure, at base width ``model_channels`` = M and levels ``channel_mult``:
``input_blocks`` (a 3x3 conv, then per level ``num_res_blocks`` ResBlocks (+ attention) and a downsampling block
except at the last level), ``middle_block`` (ResBlock, attention, ResBlock), ``output_blocks`` (per level, deepest
first, ``num_res_blocks + 1`` ResBlocks on the concatenated skip (+ attention), the last one followed by an
upsampling block except at level 0), ``out`` (GroupNorm, SiLU, 3x3 conv). Timesteps enter through a sinusoidal
embedding (cos half first) and a two-layer MLP of width 4M; every ResBlock adds it, as scale and shift of its
second normalisation when ``use_scale_shift_norm``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: File name of the DDRM-JPEG paper's prior, as OpenAI released it.
CHECKPOINT_NAME = "256x256_diffusion_uncond.pt"

#: Constructor arguments of the 256x256 unconditional ImageNet model (guided-diffusion's README flags:
#: --attention_resolutions 32,16,8 --class_cond False --diffusion_steps 1000 --image_size 256 --learn_sigma True
#: --noise_schedule linear --num_channels 256 --num_head_channels 64 --num_res_blocks 2 --resblock_updown True
#: --use_scale_shift_norm True; channel_mult follows from image_size 256).
GUIDED_DIFFUSION_256_UNCOND: dict[str, Any] = {
    "image_size": 256,
    "in_channels": 3,
    "model_channels": 256,
    "out_channels": 6,
    "num_res_blocks": 2,
    "attention_resolutions": (32, 16, 8),
    "channel_mult": (1, 1, 2, 2, 4, 4),
    "dropout": 0.0,
    "num_heads": 4,
    "num_head_channels": 64,
    "use_scale_shift_norm": True,
    "resblock_updown": True,
    "use_new_attention_order": False,
}

#: Parameter count and state-dict tensor count of :data:`GUIDED_DIFFUSION_256_UNCOND`.
GUIDED_DIFFUSION_256_UNCOND_PARAMETERS = 552_814_086
GUIDED_DIFFUSION_256_UNCOND_TENSORS = 566


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 (input and affine parameters) and returned in the input's dtype, as
    guided-diffusion's ``GroupNorm32``: half-precision activations are normalised in float32."""

    def forward(self, x: Tensor) -> Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.group_norm(x.float(), self.num_groups, weight, bias, self.eps).to(x.dtype)


def timestep_embedding(timesteps: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of timesteps [B] -> [B, dim]: cos(t f_i) for the first half, sin(t f_i) for the second,
    f_i = max_period^(-i / (dim // 2)); a zero column is appended when dim is odd."""
    half = dim // 2
    exponents = torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    freqs = torch.exp(-math.log(max_period) * exponents)
    angles = timesteps.float()[:, None] * freqs[None, :]
    embedding = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
    if dim % 2:
        embedding = F.pad(embedding, (0, 1))
    return embedding


class Downsample(nn.Module):
    """Halve H and W: a stride-2 3x3 conv (``op``, when ``use_conv``) or 2x2 average pooling."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None) -> None:
        super().__init__()
        out_channels = out_channels or channels
        if use_conv:
            self.op: nn.Module = nn.Conv2d(channels, out_channels, 3, stride=2, padding=1)
        elif out_channels != channels:
            raise ValueError("average-pool downsampling cannot change the channel count")
        else:
            self.op = nn.AvgPool2d(2, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Double H and W by nearest-neighbour repetition, followed by a 3x3 conv (``conv``) when ``use_conv``."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, out_channels or channels, 3, padding=1) if use_conv else None

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return x if self.conv is None else self.conv(x)


class ResBlock(nn.Module):
    """Residual block conditioned on the timestep embedding, optionally resampling (``up`` / ``down``).

    ``in_layers`` = (norm, SiLU, 3x3 conv), ``emb_layers`` = (SiLU, linear to C_out or 2 C_out),
    ``out_layers`` = (norm, SiLU, dropout, 3x3 conv); with ``use_scale_shift_norm`` the embedding gives
    (scale, shift) applied as norm(h) (1 + scale) + shift. When resampling, the resampling sits between the first
    SiLU and conv on the main path and is applied to the skip input too. [B, C_in, H, W] -> [B, C_out, H', W'].
    """

    def __init__(
        self, channels: int, emb_channels: int, dropout: float = 0.0, out_channels: int | None = None,
        use_conv_skip: bool = False, use_scale_shift_norm: bool = False, up: bool = False, down: bool = False,
        groups: int = 32,
    ) -> None:
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(
            GroupNorm32(groups, channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.updown = up or down
        if up:
            self.h_upd: nn.Module = Upsample(channels, False)
            self.x_upd: nn.Module = Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels)
        )
        self.out_layers = nn.Sequential(
            GroupNorm32(groups, out_channels), nn.SiLU(), nn.Dropout(dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        nn.init.zeros_(self.out_layers[3].weight)  # the block starts as the identity (skip path only)
        nn.init.zeros_(self.out_layers[3].bias)
        if out_channels == channels:
            self.skip_connection: nn.Module = nn.Identity()
        else:
            kernel = 3 if use_conv_skip else 1
            self.skip_connection = nn.Conv2d(channels, out_channels, kernel, padding=kernel // 2)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        if self.updown:
            h = self.in_layers[1](self.in_layers[0](x))
            h = self.in_layers[2](self.h_upd(h))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            for layer in self.out_layers[1:]:
                h = layer(h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over all positions: norm, 1x1 ``qkv`` (C -> 3C), attention per head, 1x1 ``proj_out``, residual.

    Heads: C // ``num_head_channels`` when that is given (not -1), else ``num_heads``. The released checkpoints
    use the legacy channel order of ``qkv`` (heads first: per head its q, k and v channels); the new order
    (q, k, v first, each split into heads) is ``use_new_attention_order``.
    """

    def __init__(
        self, channels: int, num_heads: int = 1, num_head_channels: int = -1, use_new_attention_order: bool = False,
        groups: int = 32,
    ) -> None:
        super().__init__()
        if num_head_channels == -1:
            self.num_heads = num_heads
        elif channels % num_head_channels:
            raise ValueError(
                f"attention channels {channels} are not a multiple of num_head_channels {num_head_channels}"
            )
        else:
            self.num_heads = channels // num_head_channels
        self.new_order = use_new_attention_order
        self.norm = GroupNorm32(groups, channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, c, *spatial = x.shape
        flat = x.reshape(b, c, -1)
        length, heads, head_ch = flat.shape[2], self.num_heads, c // self.num_heads
        qkv = self.qkv(self.norm(flat))  # [B, 3C, L]
        if self.new_order:  # [B, 3, heads, ch, L]
            qkv = qkv.reshape(b, 3, heads, head_ch, length).transpose(0, 1)
        else:  # [B, heads, 3, ch, L]
            qkv = qkv.reshape(b, heads, 3, head_ch, length).permute(2, 0, 1, 3, 4)
        q, k, v = (part.transpose(-1, -2) for part in qkv)  # each [B, heads, L, ch]
        attended = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(ch)) v
        h = attended.transpose(-1, -2).reshape(b, c, length)
        return (flat + self.proj_out(h)).reshape(b, c, *spatial)


class TimestepSequential(nn.Sequential):
    """Sequential container whose ResBlocks also receive the timestep embedding."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class GuidedDiffusionUNet(nn.Module):
    """guided-diffusion's ``UNetModel`` (unconditional).

    Args:
        image_size: side the model was trained at; ``attention_resolutions`` are relative to it.
        in_channels, out_channels: image channels; out = 2 x in for learned variances (``learn_sigma``).
        model_channels: base width M; level i has width M * channel_mult[i].
        num_res_blocks: ResBlocks per level on the way down (one more on the way up).
        attention_resolutions: feature-map sides (at ``image_size``) that get attention, e.g. (32, 16, 8) at 256.
        channel_mult: width multipliers per level; 2 ** (levels - 1) is the size H and W must be a multiple of.
        dropout: dropout inside ResBlocks.
        conv_resample: learned 3x3 convs in the resampling blocks (only used without ``resblock_updown``).
        num_heads, num_head_channels, num_heads_upsample: attention heads (see :class:`AttentionBlock`);
            ``num_heads_upsample`` -1 means ``num_heads``.
        use_scale_shift_norm: FiLM-style timestep conditioning in ResBlocks.
        resblock_updown: resample with ResBlocks instead of plain (conv) resampling layers.
        use_new_attention_order: qkv channel order (False for the released checkpoints).
        norm_groups: GroupNorm groups (32 in guided-diffusion; widths must be multiples of it).

    ``forward(x, timesteps)``: x [B, in_channels, H, W] (H, W multiples of :attr:`size_multiple`), timesteps
    [B] -> [B, out_channels, H, W]. The torso (input, middle and output blocks) runs in :attr:`torso_dtype`, the
    timestep MLP and the head ``out`` in their own dtype, which is also the output's: float32, or half when the
    whole model was cast. Half precision as the authors run it is :meth:`convert_to_fp16`: only the torso's
    convolutions become half, every norm (computed in float32), linear layer and the head stay float32, and
    float32 x gives a float32 output.
    """

    def __init__(
        self, image_size: int, in_channels: int, model_channels: int, out_channels: int, num_res_blocks: int,
        attention_resolutions: Iterable[int], channel_mult: Sequence[int] = (1, 2, 4, 8), dropout: float = 0.0,
        conv_resample: bool = True, num_heads: int = 1, num_head_channels: int = -1, num_heads_upsample: int = -1,
        use_scale_shift_norm: bool = False, resblock_updown: bool = False, use_new_attention_order: bool = False,
        norm_groups: int = 32,
    ) -> None:
        super().__init__()
        self.config = {
            "image_size": image_size, "in_channels": in_channels, "model_channels": model_channels,
            "out_channels": out_channels, "num_res_blocks": num_res_blocks,
            "attention_resolutions": tuple(attention_resolutions), "channel_mult": tuple(channel_mult),
            "dropout": dropout, "conv_resample": conv_resample, "num_heads": num_heads,
            "num_head_channels": num_head_channels, "num_heads_upsample": num_heads_upsample,
            "use_scale_shift_norm": use_scale_shift_norm, "resblock_updown": resblock_updown,
            "use_new_attention_order": use_new_attention_order, "norm_groups": norm_groups,
        }
        self.image_size, self.in_channels, self.out_channels = image_size, in_channels, out_channels
        self.model_channels = model_channels
        self.size_multiple = 2 ** (len(channel_mult) - 1)
        attention_rates = {image_size // int(res) for res in attention_resolutions}  # downsampling factors
        heads_up = num_heads if num_heads_upsample == -1 else num_heads_upsample
        emb_dim = 4 * model_channels

        def resblock(ch_in: int, ch_out: int, **updown: bool) -> ResBlock:
            return ResBlock(ch_in, emb_dim, dropout, ch_out, use_scale_shift_norm=use_scale_shift_norm,
                            groups=norm_groups, **updown)

        def attention(ch: int, heads: int) -> AttentionBlock:
            return AttentionBlock(ch, heads, num_head_channels, use_new_attention_order, groups=norm_groups)

        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        ch = int(channel_mult[0] * model_channels)
        first_ch = ch
        self.input_blocks = nn.ModuleList([TimestepSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        skip_channels = [ch]
        rate = 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [resblock(ch, int(mult * model_channels))]
                ch = int(mult * model_channels)
                if rate in attention_rates:
                    layers.append(attention(ch, num_heads))
                self.input_blocks.append(TimestepSequential(*layers))
                skip_channels.append(ch)
            if level != len(channel_mult) - 1:
                down = resblock(ch, ch, down=True) if resblock_updown else Downsample(ch, conv_resample, ch)
                self.input_blocks.append(TimestepSequential(down))
                skip_channels.append(ch)
                rate *= 2
        self.middle_block = TimestepSequential(resblock(ch, ch), attention(ch, num_heads), resblock(ch, ch))
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for index in range(num_res_blocks + 1):
                layers = [resblock(ch + skip_channels.pop(), int(mult * model_channels))]
                ch = int(mult * model_channels)
                if rate in attention_rates:
                    layers.append(attention(ch, heads_up))
                if level and index == num_res_blocks:
                    layers.append(resblock(ch, ch, up=True) if resblock_updown else Upsample(ch, conv_resample, ch))
                    rate //= 2
                self.output_blocks.append(TimestepSequential(*layers))
        self.out = nn.Sequential(
            GroupNorm32(norm_groups, ch), nn.SiLU(), nn.Conv2d(first_ch, out_channels, 3, padding=1)
        )
        nn.init.zeros_(self.out[2].weight)
        nn.init.zeros_(self.out[2].bias)

    def _torso(self) -> Iterable[nn.Module]:
        return (self.input_blocks, self.middle_block, self.output_blocks)

    @property
    def torso_dtype(self) -> torch.dtype:
        """dtype the input, middle and output blocks compute in (that of their convolutions)."""
        return self.input_blocks[0][0].weight.dtype

    def convert_to_fp16(self, dtype: torch.dtype = torch.float16) -> "GuidedDiffusionUNet":
        """Cast the torso's convolutions (Conv1d/Conv2d weights and biases of the input, middle and output blocks)
        to ``dtype`` (float16, or bfloat16), as guided-diffusion's ``convert_to_fp16`` does. -> self."""
        for part in self._torso():
            for module in part.modules():
                if isinstance(module, (nn.Conv1d, nn.Conv2d)):
                    module.to(dtype)
        return self

    def convert_to_fp32(self) -> "GuidedDiffusionUNet":
        """Undo :meth:`convert_to_fp16`. -> self."""
        return self.convert_to_fp16(torch.float32)

    def forward(self, x: Tensor, timesteps: Tensor) -> Tensor:
        if x.shape[-2] % self.size_multiple or x.shape[-1] % self.size_multiple:
            raise ValueError(f"guided-diffusion UNet needs H and W divisible by {self.size_multiple}, "
                             f"got {tuple(x.shape[-2:])}")
        embedding = timestep_embedding(timesteps.reshape(-1), self.model_channels)
        emb = self.time_embed(embedding.to(self.time_embed[0].weight.dtype))
        skips = []
        h = x.to(self.torso_dtype)
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h.to(self.out[2].weight.dtype))


# ---------------------------------------------------------------------------------------------------- loading


def looks_like_guided_diffusion(state: Mapping[str, Any]) -> bool:
    """True for a state dict with guided-diffusion's UNet key layout."""
    return all(isinstance(state.get(key), Tensor) for key in ("input_blocks.0.0.weight", "out.2.weight",
                                                               "time_embed.0.weight"))


def config_path_for(path: str | os.PathLike[str]) -> Path:
    """Optional side file ``<checkpoint>.json`` holding the constructor arguments of a non-default config."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def save_guided_diffusion(model: GuidedDiffusionUNet, path: str | os.PathLike[str]) -> Path:
    """Write ``model``'s state dict to ``path`` (as the released files are: a bare state dict) and its constructor
    arguments to ``<path>.json`` so :func:`load_guided_diffusion` rebuilds other configs too. -> ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    config_path_for(path).write_text(json.dumps(model.config, indent=1))
    return path


def build_guided_diffusion_from_state(
    state: Mapping[str, Tensor], source: str, config: Mapping[str, Any] | None = None
) -> GuidedDiffusionUNet:
    """Build the UNet (config: ``config``, else ``<source>.json`` beside the file, else
    :data:`GUIDED_DIFFUSION_256_UNCOND`) and load ``state`` with ``strict=True``.

    ValueError naming ``source`` and the first mismatched keys when the weights do not fit.
    """
    if config is None:
        side = config_path_for(source)
        config = json.loads(side.read_text()) if side.is_file() else GUIDED_DIFFUSION_256_UNCOND
    with torch.device("meta"):
        model = GuidedDiffusionUNet(**config)
    model = model.to_empty(device="cpu")
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as error:
        expected, given = set(model.state_dict()), set(state)
        missing, unexpected = sorted(expected - given), sorted(given - expected)
        detail = f"missing {missing[:4]}, unexpected {unexpected[:4]}" if missing or unexpected else str(error)
        raise ValueError(
            f"{source} does not fit the guided-diffusion UNet config {dict(config)}: {detail}. The default is the "
            f"{CHECKPOINT_NAME} config; for another unconditional config put its constructor arguments in "
            f"{config_path_for(source).name} beside the file"
        ) from error
    return model.eval()


def load_guided_diffusion(
    path: str | os.PathLike[str], config: Mapping[str, Any] | None = None
) -> GuidedDiffusionUNet:
    """Load a guided-diffusion UNet checkpoint (e.g. :data:`CHECKPOINT_NAME`) on the CPU, in eval mode.

    FileNotFoundError naming the path; ValueError when the file is not a guided-diffusion state dict or does not
    fit the config.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"guided-diffusion checkpoint not found: {path} (expected a file like {CHECKPOINT_NAME})"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # zip, pickle and format errors all mean "not a checkpoint"
        raise ValueError(f"cannot read {path} as a PyTorch checkpoint: {error}") from error
    if not isinstance(state, dict) or not looks_like_guided_diffusion(state):
        keys = list(state)[:4] if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path} is not a guided-diffusion UNet state dict (no input_blocks.0.0.weight, "
                         f"out.2.weight, time_embed.0.weight; got {keys})")
    return build_guided_diffusion_from_state(state, str(path), config)
