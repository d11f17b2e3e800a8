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

#: Quantization steps: in the iterations measured with the bit-exact encoder, a coefficient this close to its bin's
#: edge (inside) moves in too. 8-bit rounding of the next step shifts coefficients by ~0.3 gray levels RMS (0.03
#: steps at QF 50's finest luma step, 10), which otherwise pushes such coefficients out again and again: without
#: the guard, noisy restorations of photo crops (decoded JPEG + N(0, 0.03^2 or 0.08^2)) at QF 30 and 50 did not
#: converge in 60 iterations; with 0.02 they take 1-28 (QF 5-50), about as many as clamping every coefficient
#: to +-0.35 of its bin does.
_EDGE_GUARD = 0.02


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


def _correction(coeffs: Coefficients, unquantized: list[torch.Tensor], margin: float, guard: float = 0.0) -> torch.Tensor:
    """Image-space step that moves every DCT coefficient outside its quantization bin into it (eq. 11).

    Per component: a coefficient ``u`` with ``|u - c| > 1/2 - guard`` (outside its bin ``[c - 1/2, c + 1/2]``,
    or within ``guard`` of its edge) goes to ``c -+ (1/2 - margin)`` (``margin`` steps inside the near edge);
    the others are not moved; inverse DCT of the change, and
    for chroma nearest-neighbour expansion (the least-squares inverse of libjpeg's 2x2 averaging).
    Returns the change in [0, 1] RGB (or gray) units, [B, C, H, W].
    """
    height, width = coeffs.size
    h, v = sampling.check_subsampling(coeffs.subsampling) if coeffs.num_components == 3 else (1, 1)
    deltas = []
    for i, (u, c, real) in enumerate(zip(unquantized, coeffs.components(), _real_blocks(coeffs))):
        c = c.to(u.dtype)
        outside = (u - c).abs() > 0.5 - guard
        target = torch.where(outside, torch.minimum(torch.maximum(u, c - 0.5 + margin), c + 0.5 - margin), u)
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


def _in_bins(unquantized: list[torch.Tensor], coeffs: Coefficients) -> torch.Tensor:
    """Per image, whether libjpeg's rounding of the exact unquantized values gives ``coeffs`` on every real
    block (equivalent to :func:`is_consistent`: dummy blocks follow from the real ones). -> Bool[B]."""
    ok = torch.ones(coeffs.batch_size, dtype=torch.bool, device=coeffs.y.device)
    for u, c, real in zip(unquantized, coeffs.components(), _real_blocks(coeffs)):
        wrong = (round_half_away(u) != c.to(u.dtype)) & real[None, :, :, None, None]
        ok &= ~wrong.flatten(1).any(1)
    return ok


@full_precision
def project(
    images: torch.Tensor,
    coeffs: Coefficients,
    iterations: int = 60,
    margin: float = 0.15,
) -> torch.Tensor:
    """Nearest image (in the DCT domain) whose JPEG equals ``coeffs``; consistent images come back unchanged.

    Eq. 11 of the posterior-sampling paper: every DCT coefficient outside its quantization bin
    ``[c - 1/2, c + 1/2] * q`` is clamped into it, every coefficient inside is left alone, alternating with
    the [0, 1] box. Consistency is judged as libjpeg would re-encode the image (8-bit samples, integer
    DCT, see :func:`is_consistent`): an image that already re-encodes to ``coeffs`` is returned as it is
    (bit for bit, identity gradient). Otherwise a first continuous step clamps the out-of-bin coefficients
    of the exact (float) DCT and carries the gradient (identity for a coefficient inside its bin, zero
    for a clamped one); then, measured with the bit-exact encoder, coefficients still outside their bins
    after 8-bit rounding (or within ``_EDGE_GUARD`` of an edge) are moved ``margin`` steps inside, until
    every image re-encodes to ``coeffs`` (``encode(quantize_8bit(x), tables=coeffs.qt)``) or ``iterations``
    run out. Images of a batch are projected independently.

    Args:
        images: float [B, C, H, W] in [0, 1] matching ``coeffs.size`` and component count.
        coeffs: the coefficients to be consistent with (e.g. from ``read`` or ``encode``).
        iterations: maximum correction steps after the first; at quality 100 (all tables 1) exact
            consistency may need more steps than this or be out of reach, see ``is_consistent``.
        margin: how far inside its bin an out-of-bin coefficient is moved, in quantization steps
            (0 <= margin < 0.5; 0 is the bin's edge, as in eq. 11, where 8-bit rounding often undoes it).
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

    def per_image(mask: torch.Tensor) -> torch.Tensor:
        return mask[:, None, None, None]

    with torch.no_grad():
        done = _in_bins(_unquantized(x.detach(), qt, coeffs.subsampling, _INTEGER), coeffs)
    if bool(done.all()):
        return x  # unchanged (half images come back in float32, as every result here)
    # One continuous, differentiable step carries the gradient (consistent images are not touched).
    step = (x + _correction(coeffs, _unquantized(x, qt, coeffs.subsampling, _LINEAR), margin)).clamp(0, 1)
    first = torch.where(per_image(done), x, step)
    with torch.no_grad():
        y = first.detach()
        for _ in range(iterations):
            u = _unquantized(y, qt, coeffs.subsampling, _INTEGER)
            done = _in_bins(u, coeffs)
            if bool(done.all()):
                break
            y = torch.where(per_image(done), y, (y + _correction(coeffs, u, margin, _EDGE_GUARD)).clamp(0, 1))
    return first + (y - first).detach()
