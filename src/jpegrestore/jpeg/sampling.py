"""Edge padding, libjpeg's chroma downsampling and libjpeg-turbo's "fancy" chroma upsampling.

Planes are [B, H, W] tensors of integer-valued samples (0..255): int64 for the exact path, float
for the differentiable path. ``floor_div(n, d)`` is either integer floor division or its
straight-through float equivalent, so both paths share one formula.
"""

from __future__ import annotations

from typing import Callable

import torch

FloorDiv = Callable[[torch.Tensor, int], torch.Tensor]

# Luma sampling factors (h, v) relative to chroma.
SUBSAMPLING_FACTORS = {"4:4:4": (1, 1), "4:2:2": (2, 1), "4:2:0": (2, 2)}


def check_subsampling(subsampling: str) -> tuple[int, int]:
    """Return (h, v) for a subsampling name; ValueError for an unknown one."""
    try:
        return SUBSAMPLING_FACTORS[subsampling]
    except KeyError:
        raise ValueError(f"subsampling must be one of {list(SUBSAMPLING_FACTORS)}, got {subsampling!r}") from None


def pad_edge(plane: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Replicate the last row/column of [B, H, W] up to [B, height, width] (no-op when already there)."""
    h, w = plane.shape[-2:]
    if height > h:
        plane = torch.cat([plane, plane[..., -1:, :].expand(*plane.shape[:-2], height - h, w)], -2)
    if width > w:
        plane = torch.cat([plane, plane[..., -1:].expand(*plane.shape[:-1], width - w)], -1)
    return plane


def _edge1(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Previous and next neighbour along ``dim`` with edge replication."""
    n = x.shape[dim]
    first, last = x.narrow(dim, 0, 1), x.narrow(dim, n - 1, 1)
    prev = torch.cat([first, x.narrow(dim, 0, n - 1)], dim)
    nxt = torch.cat([x.narrow(dim, 1, n - 1), last], dim)
    return prev, nxt


def _interleave(a: torch.Tensor, b: torch.Tensor, dim: int) -> torch.Tensor:
    """Interleave a and b along dim: a0 b0 a1 b1 ..."""
    out = torch.stack((a, b), dim + 1 if dim >= 0 else dim)
    shape = list(a.shape)
    shape[dim] *= 2
    return out.reshape(shape)


def downsample(plane: torch.Tensor, h: int, v: int, floor_div: FloorDiv) -> torch.Tensor:
    """libjpeg's chroma downsampling (jcsample.c) with its alternating rounding bias.

    [B, H, W] with H % v == 0 and W % h == 0 -> [B, H/v, W/h].
    h2v2: (sum of 2x2 + bias) >> 2, bias 1, 2, 1, 2, ... along each row. h2v1: (a + b + bias) >> 1,
    bias 0, 1, 0, 1, ...
    """
    if (h, v) == (1, 1):
        return plane
    b, hh, ww = plane.shape
    wo = ww // h
    if (h, v) == (2, 2):
        s = plane[:, 0::2] + plane[:, 1::2]  # pairwise adds: far faster than a strided reduction
        s = s[..., 0::2] + s[..., 1::2]
        bias = torch.tensor([1, 2], dtype=plane.dtype, device=plane.device).repeat((wo + 1) // 2)[:wo]
        return floor_div(s + bias, 4)
    if (h, v) == (2, 1):
        s = plane[..., 0::2] + plane[..., 1::2]
        bias = torch.tensor([0, 1], dtype=plane.dtype, device=plane.device).repeat((wo + 1) // 2)[:wo]
        return floor_div(s + bias, 2)
    raise ValueError(f"unsupported sampling factors {(h, v)}")


def upsample_fancy(plane: torch.Tensor, h: int, v: int, floor_div: FloorDiv) -> torch.Tensor:
    """libjpeg-turbo's triangular ("fancy") upsampling (jdsample.c), edges replicated.

    [B, Hc, Wc] (the real downsampled size, not block padded) -> [B, Hc*v, Wc*h].
    """
    if (h, v) == (1, 1):
        return plane
    if plane.shape[-1] <= 2:  # libjpeg-turbo falls back to box upsampling for such narrow planes
        return plane.repeat_interleave(v, -2).repeat_interleave(h, -1)
    if (h, v) == (2, 1):
        left, right = _edge1(plane, -1)
        three = 3 * plane
        return _interleave(floor_div(three + left + 1, 4), floor_div(three + right + 2, 4), -1)
    if (h, v) == (2, 2):
        above, below = _edge1(plane, -2)
        three = 3 * plane
        colsum = _interleave(three + above, three + below, -2)  # [B, 2Hc, Wc], weights 3/4, 1/4
        left, right = _edge1(colsum, -1)
        three = 3 * colsum
        return _interleave(floor_div(three + left + 8, 16), floor_div(three + right + 7, 16), -1)
    raise ValueError(f"unsupported sampling factors {(h, v)}")


def _filter_pairs(x: torch.Tensor, dim: int, out: torch.Tensor, near_bias: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Into ``out`` (x's shape with ``dim`` (-1 or -2) doubled): 3 x[i] + x[i-1] at 2i and 3 x[i] + x[i+1] at
    2i+1 along ``dim`` (edges replicated), plus ``near_bias``; in place, no concatenation."""
    n = x.shape[dim]
    for parity, (step, bias) in enumerate(((-1, near_bias[0]), (1, near_bias[1]))):
        o = out[..., parity::2] if dim == -1 else out[..., parity::2, :]  # positions parity, parity + 2, ...
        torch.mul(x, 3, out=o)
        if step < 0:
            o.narrow(dim, 1, n - 1).add_(x.narrow(dim, 0, n - 1))
            o.narrow(dim, 0, 1).add_(x.narrow(dim, 0, 1))
        else:
            o.narrow(dim, 0, n - 1).add_(x.narrow(dim, 1, n - 1))
            o.narrow(dim, n - 1, 1).add_(x.narrow(dim, n - 1, 1))
        if bias:
            o.add_(bias)
    return out


def upsample_fancy_exact(plane: torch.Tensor, h: int, v: int) -> torch.Tensor:
    """:func:`upsample_fancy` for integer-valued float32 planes with libjpeg's integer division (the decoder's
    exact path), computed in place without concatenations. [B, Hc, Wc] -> [B, Hc*v, Wc*h]."""
    if (h, v) == (1, 1):
        return plane
    if plane.shape[-1] <= 2:
        return plane.repeat_interleave(v, -2).repeat_interleave(h, -1)
    b, hc, wc = plane.shape
    if (h, v) == (2, 1):
        out = _filter_pairs(plane, -1, plane.new_empty(b, hc, 2 * wc), (1, 2))
        return out.mul_(0.25).floor_()
    if (h, v) == (2, 2):
        colsum = _filter_pairs(plane, -2, plane.new_empty(b, 2 * hc, wc))
        out = _filter_pairs(colsum, -1, plane.new_empty(b, 2 * hc, 2 * wc), (8, 7))
        return out.mul_(1.0 / 16).floor_()
    raise ValueError(f"unsupported sampling factors {(h, v)}")
