"""The JPEG operator of the DDRM-JPEG authors' code, for reproducing their protocol (``operator="authors"``).

Source: github.com/bahjat-kawar/ddrm-jpeg, ``functions/jpeg_torch.py`` (``jpeg_encode``, ``jpeg_decode``,
``general_quant_matrix``) and ``runners/diffusion.py`` (the measurement is that encoder applied to the clean
image, ``y_0 = jpeg_decode(jpeg_encode(x_orig))``, not a libjpeg file). Their steps, on images in [0, 255]:

- colour: Y, Cb, Cr from RGB with the JFIF weights rounded to 4 digits (:data:`RGB_TO_YCBCR`), chroma + 128;
  back with the inverse of that matrix (their code writes the inverse out to 9 digits);
- chroma 4:2:0 by keeping the top-left sample of every 2x2 group; back by repeating each sample 2x2;
- orthonormal 8x8 DCT of ``plane - 128``, divided by the table and rounded (half to even) when encoding;
  back by multiplying, inverse DCT, + 128; no 8-bit rounding or clamping anywhere;
- tables: the IJG base tables scaled by ``s = 5000 / qf`` as a float for qf < 50 (libjpeg: the integer
  ``5000 // qf``), ``200 - 2 qf`` above, then ``floor((s q + 50) / 100)`` in float32, clamped to 1..255
  (:func:`authors_tables`; differs from libjpeg's tables at qualities that do not divide 5000, e.g. 30).

The pair is exact in the sense the sampler needs: ``authors_encode(authors_decode(y)) == y`` (the repeated
chroma sample is the top-left one again). Differences from :func:`jpegrestore.jpeg.float_encode` (the default
operator): top-left instead of 2x2-average chroma, 4-digit instead of exact JFIF colour constants, float scale
of the tables. Their code takes square images whose side is a multiple of 16; here any size is accepted and
padded by edge replication to whole 16x16 MCUs (as libjpeg pads), the canvas the coefficients describe.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Optional

import torch
from torch import Tensor

from jpegrestore import jpeg
from jpegrestore.jpeg import dct
from jpegrestore.jpeg.sampling import pad_edge
from jpegrestore.jpeg.tables import BASE_CHROMA, BASE_LUMA, QualityLike, check_quality
from jpegrestore.sampling.measurements import JPEGMeasurement

#: The authors' RGB -> YCbCr matrix (rows Y, Cb, Cr), the JFIF weights rounded to 4 digits.
RGB_TO_YCBCR = ((0.299, 0.587, 0.114), (-0.1687, -0.3313, 0.5), (0.5, -0.4187, -0.0813))
#: The only layout the authors' operator has.
SUBSAMPLING = "4:2:0"
#: What the evaluation reports as its compression when a method uses :class:`AuthorsCompression`.
DESCRIPTION = ("the DDRM-JPEG authors' torch JPEG (functions/jpeg_torch.py: 4:2:0 by top-left chroma, colour "
               "constants to 4 digits, float 5000/qf tables, float decode clamped to [0, 1])")


@lru_cache(maxsize=None)
def _colour_matrices_cpu(dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    forward = torch.tensor(RGB_TO_YCBCR, dtype=torch.float64)
    return forward.to(dtype), torch.linalg.inv(forward).to(dtype)


def _apply(matrix: Tensor, x: Tensor) -> Tensor:
    return torch.einsum("ij,bjhw->bihw", matrix.to(x.device), x)


def authors_tables(quality: QualityLike, device: Optional[torch.device | str] = None,
                   dtype: torch.dtype = torch.float32) -> Tensor:
    """The authors' tables for qualities 1..100. -> [B, 3, 8, 8] (Y, Cb, Cr; integer values 1..255).

    Computed in float32 as their code computes it (a Python float scale times an integer tensor); at every quality
    this equals exact rational arithmetic, while the same formula on float64 tensors gives 212 instead of 213 at
    qf 12 (51 * 5000 / 12 + 50 = 21300 exactly).
    """
    q = check_quality(quality, device=device)
    scale = torch.where(q < 50, 5000 / q.to(torch.float64), (200 - 2 * q).to(torch.float64)).to(torch.float32)
    base = torch.tensor((BASE_LUMA, BASE_CHROMA, BASE_CHROMA), dtype=torch.float32, device=q.device)
    return torch.floor((scale[:, None, None, None] * base + 50) / 100).clamp(1, 255).to(dtype)


def _check_images(images: Tensor) -> None:
    if not torch.is_tensor(images) or images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise ValueError("the authors' JPEG encodes float RGB images [B, 3, H, W] on the 0..1 scale, got "
                         f"{getattr(images, 'shape', type(images).__name__)} {getattr(images, 'dtype', '')}")


def check_authors_layout(coeffs: jpeg.Coefficients) -> None:
    """ValueError unless ``coeffs`` are colour 4:2:0, the only layout of the authors' operator."""
    if not isinstance(coeffs, jpeg.Coefficients):
        raise ValueError(f"operator='authors' measures jpeg.Coefficients, got {type(coeffs).__name__}")
    if coeffs.num_components != 3 or coeffs.subsampling != SUBSAMPLING:
        layout = "grayscale" if coeffs.num_components == 1 else coeffs.subsampling
        raise ValueError(f"operator='authors' has only 4:2:0 colour (the authors' code), got a {layout} JPEG; "
                         "use the default operator='float' for other layouts")


def authors_encode(images: Tensor, quality: Optional[QualityLike] = None, tables: Optional[Tensor] = None,
                   size: Optional[tuple[int, int]] = None, quantize: bool = True) -> jpeg.Coefficients:
    """The authors' ``jpeg_encode`` on images on the 0..1 scale (values outside are encoded as they are).

    Args:
        images: float [B, 3, H, W]; may be the 16x16-MCU canvas of an image of ``size``.
        quality / tables: exactly one: qualities (their tables, :func:`authors_tables`) or tables [B, 3, 8, 8]
            (e.g. ``coeffs.qt`` of the measurement).
        size: the image size to record (default: the images' own); smaller images are edge-padded to the canvas.
        quantize: round (half to even, as ``torch.round``); False returns the values in quantization-step units.
    Returns:
        4:2:0 Coefficients in the images' float dtype (float32 unless float64), whole 16x16 MCUs.
    """
    _check_images(images)
    if (quality is None) == (tables is None):
        raise ValueError("give exactly one of quality or tables")
    dtype = torch.float64 if images.dtype == torch.float64 else torch.float32
    size = tuple(images.shape[-2:]) if size is None else (int(size[0]), int(size[1]))
    height, width = jpeg.mcu_canvas(size, SUBSAMPLING)
    if images.shape[-2] > height or images.shape[-1] > width:
        raise ValueError(f"images of {tuple(images.shape[-2:])} are larger than the MCU canvas {(height, width)} "
                         f"of size {size}")
    if tables is None:
        tables = authors_tables(quality, images.device, dtype)
        if tables.shape[0] == 1 and images.shape[0] > 1:
            tables = tables.expand(images.shape[0], -1, -1, -1)
    if tables.dim() != 4 or tables.shape[1:] != (3, 8, 8) or tables.shape[0] != images.shape[0]:
        raise ValueError(f"tables must be [{images.shape[0]}, 3, 8, 8], got {tuple(tables.shape)}")
    tables = tables.to(images.device, dtype)
    forward, _ = _colour_matrices_cpu(dtype)
    ycc = _apply(forward, pad_edge(images.to(dtype) * 255, height, width))
    comps = []
    for i, plane in enumerate(ycc.unbind(1)):
        if i > 0:
            plane = plane[:, ::2, ::2] + 128  # the top-left sample of every 2x2 group
        coef = dct.block_dct(dct.image_to_blocks(plane) - 128) / tables[:, i, None, None]
        comps.append(coef.round() if quantize else coef)
    return jpeg.Coefficients(comps[0], comps[1], comps[2], tables, SUBSAMPLING, size)


def authors_decode(coeffs: jpeg.Coefficients) -> Tensor:
    """The authors' ``jpeg_decode``: 4:2:0 Coefficients -> float [B, 3, Hc, Wc] on the 0..1 scale, the MCU
    canvas (crop to ``coeffs.size`` for the image), not rounded, not clamped."""
    check_authors_layout(coeffs)
    dtype = torch.float64 if coeffs.y.dtype == torch.float64 else torch.float32
    planes = []
    for i, c in enumerate(coeffs.components()):
        plane = dct.blocks_to_plane(dct.block_idct(c.to(dtype) * coeffs.qt[:, i, None, None].to(dtype)) + 128)
        if i > 0:
            plane = plane.repeat_interleave(2, -2).repeat_interleave(2, -1) - 128
        planes.append(plane)
    _, inverse = _colour_matrices_cpu(dtype)
    return _apply(inverse, torch.stack(planes, 1)) / 255


class AuthorsCompression:
    """The authors' simulated JPEG of clean images, the measurement of their protocol.

    ``(images float [B, 3, H, W] in [0, 1], quality) -> (y, jpeg_image)``: y = :func:`authors_encode` of the
    images (4:2:0 Coefficients with their tables), jpeg_image = its :func:`authors_decode` cropped to the image
    and clamped to [0, 1] (their JPEG baseline, ``y_0``, before 8-bit rounding).
    """

    description = DESCRIPTION
    subsampling = SUBSAMPLING

    def __call__(self, images: Tensor, quality: QualityLike) -> tuple[jpeg.Coefficients, Tensor]:
        y = authors_encode(images, quality)
        decoded = authors_decode(y)[..., : y.size[0], : y.size[1]].clamp(0, 1)
        return y, decoded.to(images.dtype)


class AuthorsJPEGMeasurement(JPEGMeasurement):
    """H = :func:`authors_encode` with the measurement's tables, H+ = :func:`authors_decode` (images on [-1, 1]).

    The measurement is 4:2:0 colour Coefficients: the authors' simulated y (:class:`AuthorsCompression`), or a
    real file's coefficients read through the authors' operator.
    """

    def __init__(self, coeffs: jpeg.Coefficients, rgb_prior: bool = True) -> None:
        check_authors_layout(coeffs)
        super().__init__(coeffs, rgb_prior)

    def forward(self, x: Tensor) -> jpeg.Coefficients:
        """x [B, 3, *canvas] in [-1, 1] -> quantized float coefficients with the measurement's tables."""
        return authors_encode((x + 1) / 2, tables=self.y.qt, size=self.size)

    def pinv(self, y: jpeg.Coefficients) -> Tensor:
        """Coefficients -> [B, 3, *canvas] in [-1, 1] (not clamped)."""
        return authors_decode(y) * 2 - 1
