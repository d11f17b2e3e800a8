"""QGAC (Ehrlich et al., ECCV 2020): quantization-guided JPEG artifact correction in the DCT domain."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from jpegrestore import jpeg
from jpegrestore.utils.precision import float32_region, in_float32

from .cfm import ConvolutionalFilterManifold
from .colornet import ColorNet
from .normalization import DCTStats, denormalize_blocks, normalize_blocks
from .rrdb import RRDB
from .ynet import YNet

TABLE_SCALE = 255.0


def nearest_upsample_blocks(blocks: torch.Tensor) -> torch.Tensor:
    """2x nearest-neighbour upsampling of an image given by its DCT blocks, done in the pixel domain.

    [N, hb, wb, 8, 8] coefficients -> [N, 2hb, 2wb, 8, 8] coefficients of the image whose every pixel
    is repeated 2x2 (IDCT -> pixel repeat -> DCT; linear, so it commutes with the level shift).
    """
    plane = jpeg.blocks_to_image(jpeg.block_idct(blocks))  # [N, 1, 8hb, 8wb]
    plane = plane.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
    return jpeg.block_dct(jpeg.image_to_blocks(plane))


def _resolve_stats(stats: DCTStats | str | Path | None) -> DCTStats:
    if stats is None or (isinstance(stats, str) and stats == "prior"):
        return DCTStats.prior()
    if isinstance(stats, DCTStats):
        return stats
    if isinstance(stats, (str, Path)):
        return DCTStats.load(stats)
    raise ValueError(
        f"stats must be a DCTStats, a path to a .json/.pt stats file, 'prior' or None; got {type(stats).__name__}"
    )


@torch.no_grad()
def init_qgac_weights(module: nn.Module, rrdb_scale: float = 0.1, output_scale: float = 0.01) -> None:
    """Initialise every QGAC part inside `module`.

    Plain convs: He-normal (fan-in), zero bias. Convs inside RRDBs: additionally times `rrdb_scale`
    (the ESRGAN/QGAC 0.1 scaling). CFMs: generated kernels at He variance (see
    ConvolutionalFilterManifold.reset_parameters). The last layer of the Y fusion and the colour
    decoder CFM are scaled by `output_scale` so the predicted residuals start small.
    """
    if any(p.is_meta for p in module.parameters()):
        return  # built under torch.device("meta"): no values to initialise
    cfm_parts = set()
    for m in module.modules():
        if isinstance(m, ConvolutionalFilterManifold):
            m.reset_parameters()
            cfm_parts.update(m.modules())
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and m not in cfm_parts:
            nn.init.kaiming_normal_(m.weight, a=0.25, mode="fan_in")
            if m.bias is not None:
                m.bias.zero_()
    for m in module.modules():
        if isinstance(m, RRDB):
            for conv in m.modules():
                if isinstance(conv, nn.Conv2d):
                    conv.weight.mul_(rrdb_scale)
        elif isinstance(m, YNet):
            m.fusion.net[-1].weight.mul_(output_scale)
        elif isinstance(m, ColorNet):
            m.decode.reset_parameters(kernel_scale=output_scale)


class QGAC(nn.Module):
    """Quantization Guided JPEG Artifact Correction network.

    Args:
        block_channels: BlockNet width (256).
        freq_channels: FrequencyNet RRDB width, a multiple of 64 (256 = 4 per frequency).
        color_channels: colour net widths (chroma RRDB, fused RRDB) = (32, 64); fused > chroma.
        cfm_hidden: table-CNN width of every CFM (64).
        inner_channels: coefficient-layout channels between the Y subnetworks (64).
        fusion_width: per-frequency width of the Y fusion convs (4).
        stats: DCTStats, path to a stats file, or None / "prior" for DCTStats.prior(), a placeholder that
            checkpoints and the training tasks (jpegrestore.tasks.dct_stats) overwrite with measured values.
            Kept as buffers `stats_mean`/`stats_std` [3, 8, 8] so checkpoints carry them.
        color: build the colour net. Without it, colour inputs get restored Y and unrestored
            (nearest-upsampled) chroma.
        init_scale: multiplier of the He-normal init of RRDB convs (0.1, as in ESRGAN and QGAC).
        frequency_grouping: "isolated" (paper, default) or "plain_concat" (the author's code), see
            FrequencyNet.
        residual_init_scale: multiplier of the init of the two output layers (Y fusion's last conv,
            colour decoder CFM); 0.01 makes the initial residuals a fraction of a gray level.

    forward(coeffs: jpeg.Coefficients) -> RGB [B, 3, H, W] on a 0..1 scale, not clamped
        ([B, 1, H, W] for grayscale coefficients). Chroma may be 4:4:4 or 4:2:0.
    forward_y(coeffs) -> Y [B, 1, H, W] on a 0..1 scale (any subsampling, grayscale allowed).
    """

    def __init__(
        self,
        block_channels: int = 256,
        freq_channels: int = 256,
        color_channels: Sequence[int] = (32, 64),
        cfm_hidden: int = 64,
        inner_channels: int = 64,
        fusion_width: int = 4,
        stats: DCTStats | str | Path | None = None,
        color: bool = True,
        init_scale: float = 0.1,
        residual_init_scale: float = 0.01,
        frequency_grouping: str = "isolated",
    ) -> None:
        super().__init__()
        self.config: dict[str, Any] = {
            "block_channels": block_channels,
            "freq_channels": freq_channels,
            "color_channels": tuple(color_channels),
            "cfm_hidden": cfm_hidden,
            "inner_channels": inner_channels,
            "fusion_width": fusion_width,
            "color": color,
            "init_scale": init_scale,
            "residual_init_scale": residual_init_scale,
            "frequency_grouping": frequency_grouping,
        }
        self.y_net = YNet(block_channels, freq_channels, inner_channels, cfm_hidden, fusion_width, frequency_grouping)
        self.color_net = ColorNet(color_channels, cfm_hidden) if color else None
        resolved = _resolve_stats(stats)
        # Buffers follow the construction device (also torch.device("meta")); checkpoints carry them.
        self.register_buffer("stats_mean", torch.empty(3, 8, 8))
        self.register_buffer("stats_std", torch.empty(3, 8, 8))
        with torch.no_grad():
            self.stats_mean.copy_(resolved.mean)
            self.stats_std.copy_(resolved.std)
        init_qgac_weights(self, rrdb_scale=init_scale, output_scale=residual_init_scale)

    # ------------------------------------------------------------------ helpers

    @property
    def stats(self) -> DCTStats:
        """The normalization statistics in use (a CPU float64 copy)."""
        return DCTStats(self.stats_mean, self.stats_std)

    @torch.no_grad()
    def set_stats(self, stats: DCTStats) -> None:
        """Replace the normalization statistics (all three components) in the buffers."""
        self.stats_mean.copy_(stats.mean)
        self.stats_std.copy_(stats.std)

    def _dequantized(self, coeffs: Any, component: int) -> torch.Tensor:
        """Dequantized coefficient blocks [B, hb, wb, 8, 8] of one component, in the buffers' dtype."""
        blocks = coeffs.components()[component]
        table = coeffs.qt[:, component, None, None].to(self.stats_mean.dtype)
        return blocks.to(self.stats_mean.dtype) * table

    def _table(self, coeffs: Any, component: int) -> torch.Tensor:
        return coeffs.qt[:, component : component + 1].to(self.stats_mean.dtype) / TABLE_SCALE

    def _normalize(self, blocks: torch.Tensor, component: int) -> torch.Tensor:
        return normalize_blocks(blocks, self.stats_mean[component], self.stats_std[component])

    def _denormalize(self, blocks: torch.Tensor, component: int) -> torch.Tensor:
        return denormalize_blocks(blocks, self.stats_mean[component], self.stats_std[component])

    @staticmethod
    def _check_color_layout(coeffs: Any) -> None:
        y_grid = tuple(coeffs.y.shape[1:3])
        c_grid = tuple(coeffs.cb.shape[1:3])
        if c_grid != y_grid and (2 * c_grid[0], 2 * c_grid[1]) != y_grid:
            raise ValueError(
                f"QGAC restores 4:4:4 or 4:2:0 colour only; got {coeffs.subsampling} "
                f"(luma grid {y_grid}, chroma grid {c_grid})"
            )

    # ------------------------------------------------------------------ restoration

    def restore_y_normalized(self, coeffs: Any) -> torch.Tensor:
        """Restored normalized Y coefficients in coefficient layout [B, 1, 8*hb, 8*wb]."""
        if not isinstance(coeffs, jpeg.Coefficients):
            raise ValueError(f"QGAC expects jpeg.Coefficients, got {type(coeffs).__name__}")
        y = jpeg.blocks_to_image(self._normalize(self._dequantized(coeffs, 0), 0))
        return self.y_net(y, self._table(coeffs, 0))

    def forward_coefficients(self, coeffs: Any) -> list[torch.Tensor]:
        """Restored dequantized DCT blocks [y] or [y, cb, cr], each [B, hb, wb, 8, 8] on the luma grid."""
        y_norm = self.restore_y_normalized(coeffs)
        restored = [self._denormalize(jpeg.image_to_blocks(y_norm), 0)]
        if coeffs.cb is None:
            return restored
        self._check_color_layout(coeffs)
        batch = coeffs.y.shape[0]
        chroma = torch.cat([self._dequantized(coeffs, 1), self._dequantized(coeffs, 2)])  # [2B, ...]
        upsampled = nearest_upsample_blocks(chroma) if chroma.shape[1:3] != coeffs.y.shape[1:3] else chroma
        if self.color_net is not None:
            mean = self.stats_mean[1:3].repeat_interleave(batch, 0)[:, None, None]  # [2B, 1, 1, 8, 8]
            std = self.stats_std[1:3].repeat_interleave(batch, 0)[:, None, None]
            chroma_norm = jpeg.blocks_to_image(normalize_blocks(chroma, mean, std))
            tables = torch.cat([self._table(coeffs, 1), self._table(coeffs, 2)])
            y_table = self._table(coeffs, 0).repeat(2, 1, 1, 1)
            residual = self.color_net(chroma_norm, tables, y_norm.repeat(2, 1, 1, 1), y_table)
            # the residual is in normalized units: adding it before denormalizing = adding residual * std
            upsampled = upsampled + jpeg.image_to_blocks(residual) * std.to(residual.dtype)
        return restored + list(upsampled.split(batch))

    @in_float32
    def _to_samples(self, blocks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Dequantized blocks [B, hb, wb, 8, 8] -> sample plane [B, 1, H, W] in 0..255 (cropped, not clamped).
        The inverse DCT runs in float32 also under autocast (like the colour conversion in :meth:`forward`)."""
        plane = jpeg.blocks_to_image(jpeg.block_idct(blocks)) + 128.0
        return plane[..., : size[0], : size[1]]

    def forward_y(self, coeffs: Any) -> torch.Tensor:
        """Restored luma. jpeg.Coefficients -> [B, 1, H, W] on a 0..1 scale (not clamped)."""
        y_blocks = self._denormalize(jpeg.image_to_blocks(self.restore_y_normalized(coeffs)), 0)
        return self._to_samples(y_blocks, coeffs.size) / 255.0

    def forward(self, coeffs: Any) -> torch.Tensor:
        """Restored image. jpeg.Coefficients -> RGB [B, 3, H, W] (grayscale: [B, 1, H, W]), 0..1 scale, not clamped."""
        planes = [self._to_samples(b, coeffs.size) for b in self.forward_coefficients(coeffs)]
        if len(planes) == 1:
            return planes[0] / 255.0
        with float32_region():
            return jpeg.ycbcr_to_rgb(torch.cat(planes, dim=1)) / 255.0
