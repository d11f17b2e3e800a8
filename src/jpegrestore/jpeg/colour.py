"""JFIF full-range YCbCr colour conversion, in float and in libjpeg's 16-bit fixed point.

All functions work on [B, 3, H, W] tensors in 0..255 sample units.
"""

from __future__ import annotations

import torch

# Float JFIF matrices (ITU-T T.871).
_RGB_TO_YCC = (
    (0.299, 0.587, 0.114),
    (-0.168735892, -0.331264108, 0.5),
    (0.5, -0.418687589, -0.081312411),
)
_YCC_TO_RGB = (
    (1.0, 0.0, 1.402),
    (1.0, -0.344136286, -0.714136286),
    (1.0, 1.772, 0.0),
)

# libjpeg's fixed point: FIX(x) = round(x * 2**16).
_SCALE_BITS = 16
_ONE_HALF = 1 << (_SCALE_BITS - 1)
_FIX = {
    "0.29900": 19595, "0.58700": 38470, "0.11400": 7471,
    "0.16874": 11059, "0.33126": 21709, "0.50000": 32768,
    "0.41869": 27439, "0.08131": 5329,
    "1.40200": 91881, "1.77200": 116130, "0.71414": 46802, "0.34414": 22554,
}


def _matmul3(x: torch.Tensor, m: tuple, offset: tuple) -> torch.Tensor:
    w = torch.tensor(m, dtype=x.dtype, device=x.device)
    b = torch.tensor(offset, dtype=x.dtype, device=x.device)
    return torch.einsum("ij,bjhw->bihw", w, x) + b[None, :, None, None]


def rgb_to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """JFIF RGB -> YCbCr in float. [B, 3, H, W] 0..255 -> [B, 3, H, W] 0..255 (chroma centred on 128)."""
    return _matmul3(rgb, _RGB_TO_YCC, (0.0, 128.0, 128.0))


def ycbcr_to_rgb(ycc: torch.Tensor) -> torch.Tensor:
    """JFIF YCbCr -> RGB in float. [B, 3, H, W] 0..255 -> [B, 3, H, W] (not clamped)."""
    centred = ycc - torch.tensor((0.0, 128.0, 128.0), dtype=ycc.dtype, device=ycc.device)[None, :, None, None]
    return _matmul3(centred, _YCC_TO_RGB, (0.0, 0.0, 0.0))


def rgb_to_ycbcr_fixed(rgb: torch.Tensor) -> torch.Tensor:
    """libjpeg's integer RGB -> YCbCr (jccolor.c). int [B, 3, H, W] 0..255 -> int32 0..255."""
    r, g, b = rgb.int().unbind(1)
    f = _FIX
    y = (f["0.29900"] * r + f["0.58700"] * g + f["0.11400"] * b + _ONE_HALF) >> _SCALE_BITS
    # Chroma uses a 0.5-epsilon rounding fudge so 255 cannot overflow.
    cbcr_offset = (128 << _SCALE_BITS) + _ONE_HALF - 1
    cb = (-f["0.16874"] * r - f["0.33126"] * g + f["0.50000"] * b + cbcr_offset) >> _SCALE_BITS
    cr = (f["0.50000"] * r - f["0.41869"] * g - f["0.08131"] * b + cbcr_offset) >> _SCALE_BITS
    return torch.stack((y, cb, cr), 1)


def ycbcr_to_rgb_fixed(ycc: torch.Tensor) -> torch.Tensor:
    """libjpeg's integer YCbCr -> RGB (jdcolor.c), clamped. int [B, 3, H, W] -> int32 0..255."""
    y, cb, cr = ycc.int().unbind(1)
    cb = cb - 128
    cr = cr - 128
    f = _FIX
    r = y + ((f["1.40200"] * cr + _ONE_HALF) >> _SCALE_BITS)
    b = y + ((f["1.77200"] * cb + _ONE_HALF) >> _SCALE_BITS)
    g = y + ((-f["0.34414"] * cb - f["0.71414"] * cr + _ONE_HALF) >> _SCALE_BITS)
    return torch.stack((r, g, b), 1).clamp_(0, 255)
