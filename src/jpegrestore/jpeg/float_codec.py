"""A float JPEG pair whose round trip is exact: ``float_encode(float_decode(y)) == y``.

This is the measurement operator of DDRM-JPEG (and of anything else that needs a right inverse of
JPEG): float colour conversion, box-average chroma decimation, orthonormal DCT, division by the
table and rounding; and back: dequantization, inverse DCT, nearest-neighbour chroma upsampling and
colour conversion, with no rounding or clamping in between. Box averaging undoes nearest upsampling
exactly, and the DCT and colour matrices are inverted exactly, so the decode of any coefficients
re-encodes to the same coefficients (rounding absorbs the float error, which stays far below half a
quantization step).

The identity holds on the *MCU canvas*: the image padded (by edge replication) to whole MCUs, which
is the area the coefficients describe. ``float_decode`` returns that canvas by default. Cropping it to
the original size and re-encoding (which pads by replication again) does *not* give ``y`` back for
sizes that are not multiples of the MCU: the padded pixels the coefficients describe are free values,
not copies of the last row or column. Callers that need the identity (the sampler) work on the canvas
and crop at the very end.

This pair is close to libjpeg's codec but not equal to it: libjpeg rounds to 8-bit samples, uses
the islow integer DCT, biased chroma averaging, "fancy" triangular upsampling and clamping. Use
:func:`jpegrestore.jpeg.encode` / :func:`~jpegrestore.jpeg.decode` to reproduce real files.
"""

from __future__ import annotations

from typing import Optional

import torch

from . import colour, dct, sampling
from .codec import _check_coeffs, _resolve_tables
from .coefficients import Coefficients
from .precision import full_precision
from .tables import QualityLike


def _ceil_to(n: int, m: int) -> int:
    return -(-n // m) * m


def mcu_canvas(size: tuple[int, int], subsampling: str, channels: int = 3) -> tuple[int, int]:
    """(H, W) of the image padded to whole MCUs: 16x16 for 4:2:0, 8x16 (rows x cols) for 4:2:2, 8x8 for
    4:4:4 and grayscale (``channels == 1``)."""
    h, v = sampling.check_subsampling(subsampling) if channels == 3 else (1, 1)
    return _ceil_to(int(size[0]), 8 * v), _ceil_to(int(size[1]), 8 * h)


def _float_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


@full_precision
def float_encode(
    images: torch.Tensor,
    quality: Optional[QualityLike] = None,
    tables: Optional[torch.Tensor] = None,
    subsampling: str = "4:2:0",
    size: Optional[tuple[int, int]] = None,
    quantize: bool = True,
) -> Coefficients:
    """Float JPEG encode (no 8-bit rounding, no clamping): the operator whose right inverse is :func:`float_decode`.

    Args:
        images: float [B, 3 or 1, H, W] on the 0..1 scale (values outside [0, 1] are encoded as they are).
        quality / tables: exactly one: IJG quality (int or per image), or tables [B, 1|2|3, 8, 8] such as
            ``coeffs.qt`` of a real file.
        subsampling: "4:4:4", "4:2:2" or "4:2:0" (ignored for grayscale). Chroma is decimated by averaging
            each 2x2 (4:2:0) or 2x1 (4:2:2) group.
        size: the image size to record; ``images`` may be the MCU canvas of an image of this size (as
            :func:`float_decode` returns it). Default: the images' own size. Images smaller than the
            canvas of ``size`` are padded by edge replication.
        quantize: round the coefficients (default). False returns the unrounded values in
            quantization-step units, a linear function of the images.
    Returns:
        Coefficients in float32 (float64 for float64 images; half images are computed in float32), whole-MCU grids, integer-valued when
        ``quantize``.
    """
    if not torch.is_tensor(images) or images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be [B, 3 or 1, H, W], got {getattr(images, 'shape', type(images))}")
    if not images.is_floating_point():
        raise ValueError(f"images must be a float tensor on the 0..1 scale, got {images.dtype}")
    channels = images.shape[1]
    stored = subsampling if channels == 3 else "4:4:4"
    h, v = sampling.check_subsampling(stored) if channels == 3 else (1, 1)
    size = tuple(images.shape[-2:]) if size is None else (int(size[0]), int(size[1]))
    height, width = mcu_canvas(size, stored, channels)
    if images.shape[-2] > height or images.shape[-1] > width:
        raise ValueError(
            f"images of {tuple(images.shape[-2:])} are larger than the MCU canvas {(height, width)} of size {size}"
        )
    qt = _resolve_tables(quality, tables, images.shape[0], channels, images.device)
    x = images.to(_float_dtype(images)) * 255
    ycc = colour.rgb_to_ycbcr(x) if channels == 3 else x
    comps = []
    for i, plane in enumerate(ycc.unbind(1)):
        plane = sampling.pad_edge(plane, height, width)
        if i > 0 and (h, v) != (1, 1):
            b = plane.shape[0]
            plane = plane.reshape(b, height // v, v, width // h, h).mean((2, 4))
        coef = dct.block_dct(dct.image_to_blocks(plane) - 128) / qt[:, i, None, None].to(plane.dtype)
        comps.append(coef.round() if quantize else coef)
    cb, cr = (comps[1], comps[2]) if channels == 3 else (None, None)
    return Coefficients(comps[0], cb, cr, qt.to(comps[0].dtype), stored, size)


@full_precision
def float_decode(coeffs: Coefficients, crop: bool = False) -> torch.Tensor:
    """Float JPEG decode, the right inverse of :func:`float_encode`: no rounding, no clamping.

    Dequantize, inverse orthonormal DCT, nearest-neighbour chroma upsampling, JFIF colour conversion.

    Returns:
        float [B, C, Hc, Wc] on the 0..1 scale (not clamped): the MCU canvas (``mcu_canvas(coeffs.size)``,
        what ``float_encode`` needs for the exact identity), or with ``crop=True`` the image's own size.
        float64 for float64 coefficients, else float32.
    """
    _check_coeffs(coeffs)
    dtype = torch.float64 if coeffs.y.dtype == torch.float64 else torch.float32
    h, v = sampling.check_subsampling(coeffs.subsampling) if coeffs.num_components == 3 else (1, 1)
    planes = []
    for i, c in enumerate(coeffs.components()):
        q = coeffs.qt[:, i, None, None].to(dtype)
        plane = dct.blocks_to_plane(dct.block_idct(c.to(dtype) * q) + 128)
        if i > 0:
            plane = plane.repeat_interleave(v, -2).repeat_interleave(h, -1)
        planes.append(plane)
    ycc = torch.stack(planes, 1)
    rgb = colour.ycbcr_to_rgb(ycc) if len(planes) == 3 else ycc
    out = rgb / 255
    if crop:
        out = out[..., : coeffs.size[0], : coeffs.size[1]]
    return out
