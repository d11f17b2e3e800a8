"""Tiled inference for one-step latent diffusion: VAE encode, UNet denoise and VAE decode in overlapping tiles.

Every stage is a callable on a spatial tensor, so these functions know nothing about the networks:

    encode(image [B, 3, h, w])           -> latent [B, 4, h/8, w/8]
    denoise(latent tile [B, 4, t, t])     -> denoised latent tile, same shape
    decode(latent [B, 4, h, w])           -> image [B, 3, 8h, 8w]

A tensor larger than the tile is cut into overlapping tiles; each output tile is weighted by a Gaussian
window centred on the tile (standard deviation 0.1 of the tile size on each axis, the authors' choice)
and the weighted tiles are divided by the summed weights. The window falls to about 4e-6 of its peak at
a tile edge, so tile borders (where a tile's own padding shows) get almost no weight; two neighbours
whose centres are d apart hand over smoothly (a logistic of width (0.1 t)^2 / d pixels, 1.4 latent
pixels for t = 96, d = 64) around the middle of their overlap, without a step.

Defaults (CODiff's test script): latent tiles of 96 with an overlap of 32; VAE encoder tiles of 1024
pixels and VAE decoder tiles of 224 latents. The authors' VAE tiling instead runs the encoder/decoder
layer by layer over padded tiles with GroupNorm statistics shared across tiles; here each VAE tile is a
full encoder/decoder call and overlaps are blended like the latent tiles (the diffusers approach), so
the functions stay independent of the VAE's internals. Two smaller differences from their latent tiling:
they skip tiling whenever h * w <= 96^2 (a 128x64 latent runs whole) and then cut square tiles of the
shorter side, while here a stage is tiled whenever a side exceeds the tile; and their window centres the
rows at n/2 instead of (n - 1)/2.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

Stage = Callable[[Tensor], Tensor]

#: Standard deviation of the blending window as a fraction of the tile size (authors: variance 0.01).
WINDOW_SIGMA = 0.1


@dataclass(frozen=True)
class TileConfig:
    """Tile sizes of the three stages; a stage runs untiled when its input fits in one tile.

    Args:
        latent_tile / latent_overlap: UNet tiles in latent pixels (paper: 96 / 32).
        encoder_tile / encoder_overlap: VAE encoder tiles in image pixels (multiples of 8).
        decoder_tile / decoder_overlap: VAE decoder tiles in latent pixels.
        enabled: False runs every stage on the whole tensor.
    """

    latent_tile: int = 96
    latent_overlap: int = 32
    encoder_tile: int = 1024
    encoder_overlap: int = 128
    decoder_tile: int = 224
    decoder_overlap: int = 32
    enabled: bool = True

    def __post_init__(self) -> None:
        for name, tile, overlap in (
            ("latent", self.latent_tile, self.latent_overlap),
            ("encoder", self.encoder_tile, self.encoder_overlap),
            ("decoder", self.decoder_tile, self.decoder_overlap),
        ):
            check_tile(tile, overlap, f"{name}_tile")
        if self.encoder_tile % 8 or self.encoder_overlap % 8:
            raise ValueError(
                f"encoder_tile and encoder_overlap must be multiples of 8 pixels (one latent pixel), got "
                f"{self.encoder_tile} and {self.encoder_overlap}"
            )


def check_tile(tile: int, overlap: int, name: str = "tile") -> None:
    """ValueError unless ``tile`` is a positive int and ``0 <= overlap < tile``."""
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 1:
        raise ValueError(f"{name} must be a positive integer, got {tile!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap < tile:
        raise ValueError(f"{name} overlap must be an int in 0..{tile - 1}, got {overlap!r}")


def tile_starts(length: int, tile: int, overlap: int, align: int = 1) -> list[int]:
    """Start offsets of tiles of ``tile`` covering [0, length), evenly spread, on multiples of ``align``.

    One tile (start 0) when ``length <= tile``. Otherwise the first tile starts at 0, the last ends at
    ``length``, and neighbours overlap by at least ``overlap - align + 1``. ``length`` and ``tile`` must
    be multiples of ``align``.
    """
    check_tile(tile, overlap)
    if length % align or tile % align:
        raise ValueError(f"length {length} and tile {tile} must be multiples of {align}")
    if length <= tile:
        return [0]
    count = 1 + math.ceil((length - tile) / (tile - overlap))
    last = length - tile
    return sorted({round(i * last / (count - 1) / align) * align for i in range(count)})


def gaussian_window(height: int, width: int, device=None, dtype=torch.float32) -> Tensor:
    """Separable Gaussian [height, width], peak 1 at the centre, std ``WINDOW_SIGMA`` times each side."""

    def axis(n: int) -> Tensor:
        x = torch.arange(n, device=device, dtype=torch.float64)
        centre, sigma = (n - 1) / 2, WINDOW_SIGMA * n
        return torch.exp(-0.5 * ((x - centre) / sigma) ** 2)

    return torch.outer(axis(height), axis(width)).to(dtype)


def tiled_apply(stage: Stage, x: Tensor, tile: int, overlap: int, align: int = 1) -> Tensor:
    """``stage(x)`` computed in overlapping square tiles of ``x`` [B, C, H, W], Gaussian-blended.

    ``stage`` may change the channel count and scale the spatial size by any fixed factor (1/8 for an
    encoder, 8 for a decoder); the output has that size. Runs ``stage(x)`` directly when ``x`` fits in
    one tile. Tiles are clipped to ``x`` along an axis shorter than ``tile``.
    """
    height, width = x.shape[-2:]
    if height <= tile and width <= tile:
        return stage(x)
    rows = tile_starts(height, min(tile, height), overlap if height > tile else 0, align)
    cols = tile_starts(width, min(tile, width), overlap if width > tile else 0, align)
    tile_h, tile_w = min(tile, height), min(tile, width)
    output = weights = window = None
    scale = 1.0
    for top in rows:
        for left in cols:
            result = stage(x[..., top:top + tile_h, left:left + tile_w])
            if output is None:
                scale = result.shape[-1] / tile_w
                if result.shape[-2] != round(tile_h * scale) or result.shape[-1] != round(tile_w * scale):
                    raise ValueError(
                        f"tiled stage must scale both sides alike: {tile_h}x{tile_w} gave {tuple(result.shape[-2:])}"
                    )
                out_shape = (*result.shape[:-2], round(height * scale), round(width * scale))
                output = result.new_zeros(out_shape, dtype=torch.float32)
                weights = output.new_zeros(out_shape[-2:])
                window = gaussian_window(*result.shape[-2:], device=result.device)
            out_top, out_left = round(top * scale), round(left * scale)
            region = (..., slice(out_top, out_top + result.shape[-2]), slice(out_left, out_left + result.shape[-1]))
            output[region] += result.float() * window
            weights[region[1:]] += window
    return (output / weights).to(result.dtype)


def tiled_one_step(
    image: Tensor, encode: Stage, denoise: Stage, decode: Stage, tiles: TileConfig | None = None
) -> Tensor:
    """decode(denoise(encode(image))) with each stage tiled as ``tiles`` says. image [B, 3, H, W]
    (H, W multiples of 8) -> the decoded output [B, 3, H, W]."""
    tiles = tiles or TileConfig()
    if image.shape[-2] % 8 or image.shape[-1] % 8:
        raise ValueError(f"image height and width must be multiples of 8, got {tuple(image.shape[-2:])}")
    if not tiles.enabled:
        return decode(denoise(encode(image)))
    latent = tiled_apply(encode, image, tiles.encoder_tile, tiles.encoder_overlap, align=8)
    latent = tiled_apply(denoise, latent, tiles.latent_tile, tiles.latent_overlap)
    return tiled_apply(decode, latent, tiles.decoder_tile, tiles.decoder_overlap)
