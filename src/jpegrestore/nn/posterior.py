"""Networks of the posterior-sampling JPEG decoder (Man et al., "High-Perceptual Quality JPEG Decoding via
Posterior Sampling", CVPRW 2023): a stochastic generator G(Z, Y) and a VGG-style critic.

The paper's architecture appendix is not available and no code was published, so the design follows what the
paper cites and the same group's denoising posterior CGAN (PSCGAN):

- :class:`PosteriorGenerator`: a U-Net of ResNet blocks (He et al. [20]) whose blocks are modulated by FiLM
  (Perez et al. [40]) from the JPEG's quantization tables, and a noise map concatenated at every decoder level
  (PSCGAN's way of injecting Z at several scales, so different seeds change coarse and fine detail). With
  ``noise=False`` the noise maps are zeros: the same network trained with MSE this way is the MMSE estimator
  Xbar(Y) of the second-moment penalty ("Ours-MSE").
- :class:`VGGStyleDiscriminator`: BasicSR's VGG-style critic (Wang et al. [55], as used by Real-ESRGAN [54]):
  pairs of 3x3 and stride-2 4x4 convolutions with LeakyReLU(0.2), then two linear layers. An adaptive average
  pool before the linear head lets it judge any crop size (BasicSR's fixes 128 or 256).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jpegrestore import jpeg
from jpegrestore.utils.precision import float32_region

TABLE_FEATURES = 128  # luma and chroma 8x8 tables, flattened


def table_features(tables: Tensor) -> Tensor:
    """Quantization tables [B, 1|2|3, 8, 8] (integers 1..255 for baseline JPEG) -> conditioning [B, 128].

    Luma and chroma tables (a grayscale table is used for both), each entry mapped to ``log(q) / log(255)``:
    0 for q = 1, 1 for q = 255. The log spreads the high-quality tables (entries 1..10) as much as the coarse
    ones. Custom tables from real files are accepted as they are.
    """
    if tables.dim() != 4 or tables.shape[1] not in (1, 2, 3) or tables.shape[-2:] != (8, 8):
        raise ValueError(f"quantization tables must be [B, 1|2|3, 8, 8], got {tuple(tables.shape)}")
    luma = tables[:, 0]
    chroma = tables[:, 1] if tables.shape[1] > 1 else luma
    pair = torch.stack([luma, chroma], 1).float().clamp(min=1)
    return (pair.log() / math.log(255.0)).flatten(1)


class FiLM(nn.Module):
    """Feature-wise affine modulation ``x * (1 + gamma) + beta``, (gamma, beta) a linear map of the condition.

    The linear map starts at zero, so an untrained FiLM is the identity. (x [B, C, H, W], cond [B, D]) -> x's shape.
    """

    def __init__(self, cond_dim: int, channels: int) -> None:
        super().__init__()
        self.linear = nn.Linear(cond_dim, 2 * channels)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        gamma, beta = self.linear(cond)[:, :, None, None].chunk(2, dim=1)
        return x * (1 + gamma) + beta


class FiLMResBlock(nn.Module):
    """``x + conv(act(FiLM(conv(act(x)))))``: a pre-activation ResNet block, FiLM after its first convolution."""

    def __init__(self, channels: int, cond_dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.film = FiLM(cond_dim, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        h = self.film(self.conv1(self.act(x)), cond)
        return x + self.conv2(self.act(h))


class _Stage(nn.Module):
    """``blocks`` FiLM ResNet blocks of one width."""

    def __init__(self, channels: int, cond_dim: int, blocks: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(FiLMResBlock(channels, cond_dim) for _ in range(blocks))

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x, cond)
        return x


class PosteriorGenerator(nn.Module):
    """G(Z, Y): decoded JPEG Y and its quantization tables plus noise Z -> a restoration in [0, 1].

    A U-Net: a 3x3 head, ``len(widths)`` encoder stages (FiLM ResNet blocks, then a stride-2 convolution to the
    next width), a bottleneck stage, and decoder stages that upsample (nearest + 3x3 conv), concatenate the skip
    connection and ``noise_channels`` maps of N(0, 1) noise, fuse them with a 1x1 conv and run FiLM ResNet blocks.
    The output is ``clamp(Y + residual, 0, 1)`` (predicting the residual keeps an untrained network near the JPEG).

    Args:
        channels: image channels (3 RGB; 1 grayscale).
        widths: feature width of each resolution level, finest first; the image side is halved between levels.
        blocks: FiLM ResNet blocks per stage.
        noise_channels: noise maps concatenated at every decoder level (PSCGAN: 1).
        cond_hidden: width of the MLP that embeds the tables before every FiLM layer.
        stochastic: whether ``forward`` draws noise by default (False for the MMSE estimator, which is trained
            and run with zero noise maps).

    Any H, W: inputs are padded (replicate) to a multiple of ``2 ** (len(widths) - 1)`` and the output is cropped
    back. Shapes: image [B, channels, H, W] in [0, 1], tables [B, 1|2|3, 8, 8] -> [B, channels, H, W] in [0, 1].
    """

    def __init__(self, channels: int = 3, widths: Sequence[int] = (64, 128, 256), blocks: int = 2,
                 noise_channels: int = 1, cond_hidden: int = 128, stochastic: bool = True) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if not widths or min(widths) < 1 or blocks < 1 or noise_channels < 0:
            raise ValueError(f"PosteriorGenerator needs widths >= 1, blocks >= 1, noise_channels >= 0; got "
                             f"widths={widths}, blocks={blocks}, noise_channels={noise_channels}")
        self.channels, self.widths, self.noise_channels = channels, widths, noise_channels
        self.stochastic = stochastic
        self.multiple = 2 ** (len(widths) - 1)
        self.cond = nn.Sequential(nn.Linear(TABLE_FEATURES, cond_hidden), nn.LeakyReLU(0.2),
                                  nn.Linear(cond_hidden, cond_hidden), nn.LeakyReLU(0.2))
        self.head = nn.Conv2d(channels, widths[0], 3, padding=1)
        self.encoder = nn.ModuleList(_Stage(w, cond_hidden, blocks) for w in widths[:-1])
        self.down = nn.ModuleList(nn.Conv2d(a, b, 4, stride=2, padding=1) for a, b in zip(widths[:-1], widths[1:]))
        self.bottleneck = _Stage(widths[-1], cond_hidden, blocks)
        self.bottleneck_noise = nn.Conv2d(widths[-1] + noise_channels, widths[-1], 1)
        self.up = nn.ModuleList(nn.Conv2d(b, a, 3, padding=1) for a, b in zip(widths[:-1], widths[1:]))
        self.fuse = nn.ModuleList(nn.Conv2d(2 * w + noise_channels, w, 1) for w in widths[:-1])
        self.decoder = nn.ModuleList(_Stage(w, cond_hidden, blocks) for w in widths[:-1])
        self.tail = nn.Sequential(nn.LeakyReLU(0.2), nn.Conv2d(widths[0], channels, 3, padding=1))
        nn.init.zeros_(self.tail[1].weight)
        nn.init.zeros_(self.tail[1].bias)

    def noise_shapes(self, batch: int, height: int, width: int) -> list[tuple[int, int, int, int]]:
        """Shapes of the noise maps Z for an input of (padded) size height x width, coarsest first."""
        levels = len(self.widths)
        return [(batch, self.noise_channels, height // 2 ** (levels - 1 - i), width // 2 ** (levels - 1 - i))
                for i in range(levels)]

    def draw_noise(self, batch: int, height: int, width: int, device: torch.device | str | None = None,
                   generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> list[Tensor]:
        """Z: N(0, 1) maps at every decoder level for an unpadded H x W input (``generator`` seeds them)."""
        padded_h, padded_w = (-(-s // self.multiple) * self.multiple for s in (height, width))
        return [torch.randn(shape, generator=generator, device=device, dtype=dtype)
                for shape in self.noise_shapes(batch, padded_h, padded_w)]

    def generate(self, image: Tensor, tables: Tensor, noise: bool | None = None,
                 generator: torch.Generator | None = None, z: Sequence[Tensor] | None = None) -> Tensor:
        """Restore decoded JPEGs. image [B, C, H, W] in [0, 1], tables [B, 1|2|3, 8, 8] -> [B, C, H, W] in [0, 1].

        noise: draw Z (True), use zero maps (False: the MMSE estimator) or follow ``self.stochastic`` (None).
        generator: seeds Z (same seed, same output). z: explicit maps as from :meth:`draw_noise` (overrides both).
        """
        if image.dim() != 4 or image.shape[1] != self.channels:
            raise ValueError(f"PosteriorGenerator expects images [B, {self.channels}, H, W], got {tuple(image.shape)}")
        batch, _, height, width = image.shape
        if z is None:
            use_noise = self.stochastic if noise is None else noise
            if use_noise:
                z = self.draw_noise(batch, height, width, image.device, generator, image.dtype)
            else:
                padded_h, padded_w = (-(-s // self.multiple) * self.multiple for s in (height, width))
                z = [image.new_zeros(shape) for shape in self.noise_shapes(batch, padded_h, padded_w)]
        pad_h, pad_w = -height % self.multiple, -width % self.multiple
        x = F.pad(image, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else image
        cond = self.cond(table_features(tables.to(image.device)).to(image.dtype))
        h = self.head(x * 2 - 1)
        skips = []
        for stage, down in zip(self.encoder, self.down):
            h = stage(h, cond)
            skips.append(h)
            h = down(h)
        h = self.bottleneck(self.bottleneck_noise(torch.cat([h, z[0]], 1)), cond)
        for i in reversed(range(len(self.decoder))):
            h = self.up[i](F.interpolate(h, scale_factor=2, mode="nearest"))
            h = self.fuse[i](torch.cat([h, skips[i], z[len(self.decoder) - i]], 1))
            h = self.decoder[i](h, cond)
        residual = self.tail(h)[..., :height, :width]
        return (image + residual).clamp(0, 1)

    def forward(self, coeffs: jpeg.Coefficients, noise: bool | None = None,
                generator: torch.Generator | None = None, z: Sequence[Tensor] | None = None) -> Tensor:
        """Restore JPEG coefficients (decoded as libjpeg does, with their own tables). -> [B, C, H, W] in [0, 1].
        ``noise``, ``generator``, ``z`` as in :meth:`generate`."""
        with float32_region():  # the exact decoder stays out of autocast
            image = jpeg.decode(coeffs, rounding="exact")
        return self.generate(image, coeffs.qt, noise, generator, z)


class VGGStyleDiscriminator(nn.Module):
    """BasicSR's VGG-style critic, any input size. [B, in_channels, H, W] -> logits [B].

    ``stages`` times: 3x3 conv (width w) then 4x4 stride-2 conv, each followed by the norm (none on the very
    first conv) and LeakyReLU(0.2); widths ``base_channels * (1, 2, 4, 8, 8, ...)``. Then average pooling to
    4x4, ``Linear(width * 16, 100)``, LeakyReLU(0.2), ``Linear(100, 1)``. BasicSR uses 5 stages on 128 px with
    BatchNorm; ``norm="none"`` drops it (R1-regularized critics are often run without batch statistics).
    Inputs need sides >= ``2 ** stages``.
    """

    def __init__(self, in_channels: int = 3, base_channels: int = 64, stages: int = 5, norm: str = "batch") -> None:
        super().__init__()
        if norm not in ("batch", "none"):
            raise ValueError(f"VGGStyleDiscriminator norm must be 'batch' or 'none', got {norm!r}")
        if stages < 1:
            raise ValueError(f"VGGStyleDiscriminator needs stages >= 1, got {stages}")
        self.config: dict[str, Any] = {"in_channels": in_channels, "base_channels": base_channels, "stages": stages,
                                       "norm": norm}
        self.in_channels, self.stages = in_channels, stages

        def normed(conv: nn.Conv2d, use_norm: bool = True) -> list[nn.Module]:
            layers: list[nn.Module] = [conv]
            if norm == "batch" and use_norm:
                layers.append(nn.BatchNorm2d(conv.out_channels, affine=True))
            return layers + [nn.LeakyReLU(0.2)]

        layers: list[nn.Module] = []
        width_in = in_channels
        for stage in range(stages):
            width = base_channels * min(2 ** stage, 8)
            layers += normed(nn.Conv2d(width_in, width, 3, padding=1, bias=norm == "none" or stage == 0),
                             use_norm=stage > 0)
            layers += normed(nn.Conv2d(width, width, 4, stride=2, padding=1, bias=norm == "none"))
            width_in = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.head = nn.Sequential(nn.Linear(width_in * 16, 100), nn.LeakyReLU(0.2), nn.Linear(100, 1))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """He initialization for LeakyReLU(0.2), biases 0: without BatchNorm, PyTorch's default init shrinks the
        activations layer by layer and the critic starts (and, on short runs, stays) at constant logits."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, a=0.2, nonlinearity="leaky_relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"VGGStyleDiscriminator expects [B, {self.in_channels}, H, W], got {tuple(x.shape)}")
        if min(x.shape[-2:]) < 2 ** self.stages:
            raise ValueError(f"VGGStyleDiscriminator with {self.stages} stages needs sides >= {2 ** self.stages}, "
                             f"got {tuple(x.shape[-2:])}")
        return self.head(self.pool(self.features(x)).flatten(1)).flatten()
