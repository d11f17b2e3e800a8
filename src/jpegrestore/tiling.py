"""Tiled restoration in the coefficient domain, blended with linear ramps (no seams).

A large JPEG is cut along its MCU grid into overlapping tiles; every tile is a valid
:class:`jpeg.Coefficients` with its own size, so any network restores it as if it were a small file.
Outputs are blended with separable windows that ramp linearly across each overlap and are
normalised so the weights of all tiles sum to exactly 1 at every pixel.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from jpegrestore import jpeg

ALIGN = 16  # pixels: a multiple of every MCU size (8 or 16), so chroma grids split exactly
Restorer = Callable[[jpeg.Coefficients], Tensor]


@dataclass(frozen=True)
class Span:
    """Half-open pixel interval [start, stop) of one tile along one axis."""

    start: int
    stop: int

    @property
    def length(self) -> int:
        return self.stop - self.start


def check_tiling(tile: int, overlap: int) -> None:
    """ValueError unless ``tile`` is a positive multiple of 16 and ``0 < overlap <= tile / 2``."""
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < ALIGN or tile % ALIGN:
        raise ValueError(f"tile must be a positive multiple of {ALIGN} pixels (the MCU grid), got {tile!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 < overlap <= tile // 2:
        raise ValueError(f"tile_overlap must be an int in 1..{tile // 2} (half the tile {tile}), got {overlap!r}")


def tile_spans(length: int, tile: int, overlap: int) -> list[Span]:
    """Tiles covering [0, length) along one axis; starts on the 16-pixel grid, evenly spread.

    ``length`` is the padded extent of the block grid (a multiple of the MCU size). Every tile has
    ``tile`` pixels except the last, which ends at ``length`` (up to ``tile + 15`` pixels long).
    Neighbours overlap by at least ``overlap`` pixels when it is a multiple of 16 (else ``overlap - 15``).
    """
    if length <= tile + ALIGN:
        return [Span(0, length)]
    count = 1 + math.ceil((length - tile) / (tile - overlap))
    last = (length - tile) // ALIGN * ALIGN
    starts = sorted({round(i * last / (count - 1) / ALIGN) * ALIGN for i in range(count)})
    return [Span(s, s + tile) for s in starts[:-1]] + [Span(starts[-1], length)]


def axis_weights(spans: list[Span], length: int, device=None, dtype=torch.float32) -> Tensor:
    """Blend weights [len(spans), length] along one axis: linear ramps over each overlap, columns summing to 1.

    A tile weighs 1 where it is alone, ramps up from its first overlapped pixel and down towards its
    last; every weight is positive inside its own span and 0 outside.
    """
    x = torch.arange(length, device=device, dtype=dtype) + 0.5
    rows = []
    for i, span in enumerate(spans):
        w = ((x >= span.start) & (x < span.stop)).to(dtype)
        if i > 0 and spans[i - 1].stop > span.start:
            ramp_len = spans[i - 1].stop - span.start
            w = w * ((x - span.start) / ramp_len).clamp(max=1)
        if i + 1 < len(spans) and spans[i + 1].start < span.stop:
            ramp_len = span.stop - spans[i + 1].start
            w = w * ((span.stop - x) / ramp_len).clamp(max=1)
        rows.append(w)
    weights = torch.stack(rows)
    return weights / weights.sum(0, keepdim=True)


def crop_coefficients(coeffs: jpeg.Coefficients, rows: Span, cols: Span) -> jpeg.Coefficients:
    """The tile of ``coeffs`` covering pixel rows/cols (spans on the 16-pixel grid or ending at the grid edge).

    Returns Coefficients whose size is the tile's part of the original image (clipped at H, W).
    """
    height, width = coeffs.size
    h, v = jpeg.SUBSAMPLING_FACTORS[coeffs.subsampling] if coeffs.cb is not None else (1, 1)

    def part(blocks: Tensor, fy: int, fx: int) -> Tensor:
        return blocks[:, rows.start // (8 * fy): rows.stop // (8 * fy), cols.start // (8 * fx): cols.stop // (8 * fx)]

    size = (min(rows.stop, height) - rows.start, min(cols.stop, width) - cols.start)
    cb = None if coeffs.cb is None else part(coeffs.cb, v, h)
    cr = None if coeffs.cr is None else part(coeffs.cr, v, h)
    return jpeg.Coefficients(part(coeffs.y, 1, 1), cb, cr, coeffs.qt, coeffs.subsampling, size)


def grid_extent(coeffs: jpeg.Coefficients) -> tuple[int, int]:
    """Pixel extent (rows, cols) of the luma block grid (whole MCUs)."""
    return coeffs.y.shape[1] * 8, coeffs.y.shape[2] * 8


def needs_tiling(size: tuple[int, int], tile: int | None) -> bool:
    """Whether an image of ``size`` is larger than ``tile`` (None or 0 disables tiling)."""
    return bool(tile) and max(size) > tile


def restore_tiled(restore: Restorer, coeffs: jpeg.Coefficients, tile: int | None = 512, overlap: int = 32) -> Tensor:
    """Restore ``coeffs`` tile by tile and blend. -> [B, C, H, W] (whatever ``restore`` returns per tile).

    ``restore`` maps Coefficients to images of their own size. Images no larger than ``tile`` (or any
    image when ``tile`` is None/0) are restored in one call.
    """
    if not needs_tiling(coeffs.size, tile):
        return restore(coeffs)
    check_tiling(tile, overlap)
    height, width = coeffs.size
    extent = grid_extent(coeffs)
    row_spans, col_spans = tile_spans(extent[0], tile, overlap), tile_spans(extent[1], tile, overlap)
    out = None
    for i, rows in enumerate(row_spans):
        for j, cols in enumerate(col_spans):
            part = restore(crop_coefficients(coeffs, rows, cols))
            if out is None:
                out = part.new_zeros(part.shape[0], part.shape[1], height, width)
                row_w = axis_weights(row_spans, extent[0], part.device, part.dtype)[:, :height]
                col_w = axis_weights(col_spans, extent[1], part.device, part.dtype)[:, :width]
            r1, c1 = min(rows.stop, height), min(cols.stop, width)
            window = row_w[i, rows.start:r1, None] * col_w[j, None, cols.start:c1]
            out[..., rows.start:r1, cols.start:c1] += part * window
    return out
