"""Projection onto the set of images whose JPEG equals given coefficients (posterior-sampling paper, eq. 11)."""

from __future__ import annotations

import torch

from . import colour, dct, sampling
from .codec import (
    _LINEAR, _INTEGER, _ceil_div, _check_coeffs, _check_images, _encode, _unquantized,
)
from .coefficients import Coefficients
from .precision import full_precision
from .rounding import round_half_away


def _real_blocks(coeffs: Coefficients) -> list[torch.Tensor]:
    """Mask [Hb, Wb] of blocks that libjpeg encodes from image data (not dummy blocks), per component."""
    rows, cols = _ceil_div(coeffs.size[0], 8), _ceil_div(coeffs.size[1], 8)
    masks = []
    for c in coeffs.components():
        m = torch.zeros(c.shape[1:3], dtype=torch.bool, device=c.device)
        m[: min(rows, m.shape[0]), : min(cols, m.shape[1])] = True
        masks.append(m)
    if len(masks) == 3:
        masks[1] = masks[2] = torch.ones_like(masks[1])
    return masks


def _fold_edges(plane: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Least-squares inverse of edge replication: [B, Hp, Wp] -> [B, height, width].

    The last real row (column) takes the mean of the changes asked of it and of its copies.
    """
    if plane.shape[-2] > height:
        plane = torch.cat([plane[..., : height - 1, :], plane[..., height - 1:, :].mean(-2, keepdim=True)], -2)
    if plane.shape[-1] > width:
        plane = torch.cat([plane[..., : width - 1], plane[..., width - 1:].mean(-1, keepdim=True)], -1)
    return plane


def _correction(images: torch.Tensor, coeffs: Coefficients, unquantized: list[torch.Tensor], margin: float) -> torch.Tensor:
    """Image-space step that moves every DCT coefficient into its quantization bin.

    Per component: clamp to [c - 1/2 + margin, c + 1/2 - margin], inverse DCT of the change, and for
    chroma nearest-neighbour expansion (the least-squares inverse of libjpeg's 2x2 averaging).
    Returns the change in [0, 1] RGB (or gray) units, [B, C, H, W].
    """
    height, width = coeffs.size
    h, v = sampling.check_subsampling(coeffs.subsampling) if coeffs.num_components == 3 else (1, 1)
    deltas = []
    for i, (u, c, real) in enumerate(zip(unquantized, coeffs.components(), _real_blocks(coeffs))):
        c = c.to(u.dtype)
        target = torch.minimum(torch.maximum(u, c - 0.5 + margin), c + 0.5 - margin)
        step = (target - u) * real[None, :, :, None, None]
        plane = dct.blocks_to_plane(dct.block_idct(step * coeffs.qt[:, i, None, None].to(u.dtype)))
        if i > 0:
            plane = _fold_edges(plane, _ceil_div(height, v), _ceil_div(width, h))
            plane = plane.repeat_interleave(v, -2).repeat_interleave(h, -1)
        deltas.append(_fold_edges(plane, height, width))
    delta = torch.stack(deltas, 1)
    if delta.shape[1] == 3:
        delta = colour.ycbcr_to_rgb(delta + torch.tensor([0.0, 128.0, 128.0], dtype=delta.dtype,
                                                         device=delta.device)[None, :, None, None])
    return delta / 255


@full_precision
def is_consistent(images: torch.Tensor, coeffs: Coefficients) -> torch.Tensor:
    """Whether libjpeg, re-encoding images with the coefficients' tables, reproduces them. -> Bool[B]."""
    got = _encode(images.detach(), coeffs.qt, coeffs.subsampling, _INTEGER)
    ok = torch.ones(images.shape[0], dtype=torch.bool, device=images.device)
    for g, c in zip(got, coeffs.components()):
        ok &= (g.to(c.dtype) == c).flatten(1).all(1)
    return ok


def _all_in_bins(unquantized: list[torch.Tensor], coeffs: Coefficients) -> bool:
    """Whether libjpeg's rounding of the exact unquantized values gives ``coeffs`` on every real block."""
    for u, c, real in zip(unquantized, coeffs.components(), _real_blocks(coeffs)):
        wrong = (round_half_away(u) != c.to(u.dtype)) & real[None, :, :, None, None]
        if bool(wrong.any()):
            return False
    return True


@full_precision
def project(
    images: torch.Tensor,
    coeffs: Coefficients,
    iterations: int = 60,
    margin: float = 0.15,
) -> torch.Tensor:
    """Nearest image (in the DCT domain) whose JPEG equals ``coeffs``.

    Each DCT coefficient is clamped into its quantization bin ``[c - 1/2, c + 1/2] * q`` (eq. 11 of the
    posterior-sampling paper), alternating with the [0, 1] box. The residual of each step is measured
    with the bit-exact encoder, so the result re-encodes (``encode(x, tables=coeffs.qt)``, 8-bit input
    rounding included) to ``coeffs``; iterations stop early once every image does. The gradient is
    that of one continuous projection step (identity inside a bin, zero for a clamped coefficient).

    Args:
        images: float [B, C, H, W] in [0, 1] matching ``coeffs.size`` and component count.
        coeffs: the coefficients to be consistent with (e.g. from ``read`` or ``encode``).
        iterations: maximum alternating steps; at quality 100 (all tables 1) exact consistency
            may need more steps than this or be out of reach, see ``is_consistent``.
        margin: how far inside each bin to aim, in quantization steps (0 <= margin < 0.5).
    Returns:
        float [B, C, H, W] in [0, 1]: float32 (half images are computed in float32), float64 for float64.
    """
    _check_images(images)
    _check_coeffs(coeffs)
    if tuple(images.shape[-2:]) != coeffs.size or images.shape[1] != coeffs.num_components:
        raise ValueError(
            f"images {tuple(images.shape)} do not match coefficients of size {coeffs.size} "
            f"with {coeffs.num_components} components"
        )
    if not 0 <= margin < 0.5:
        raise ValueError(f"margin must be in [0, 0.5), got {margin}")
    work_dtype = torch.float64 if images.dtype == torch.float64 else torch.float32
    x = images.to(work_dtype)
    coeffs = coeffs.to(images.device)
    qt = coeffs.qt.to(work_dtype)
    # One continuous, differentiable step carries the gradient.
    first = (x + _correction(x, coeffs, _unquantized(x, qt, coeffs.subsampling, _LINEAR), margin)).clamp(0, 1)
    with torch.no_grad():
        y = first.detach()
        for _ in range(iterations):
            u = _unquantized(y, qt, coeffs.subsampling, _INTEGER)
            if _all_in_bins(u, coeffs):
                break
            y = (y + _correction(y, coeffs, u, margin)).clamp(0, 1)
    return first + (y - first).detach()
