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


def mix_channels(x: torch.Tensor, m: tuple, offset: tuple | None = None) -> torch.Tensor:
    """``m @ x + offset`` over the channel dim: [B, K, H, W] -> [B, len(m), H, W], as element-wise multiply-adds.

    Element-wise arithmetic is what autocast, TF32 and reduced-precision matmul modes leave alone, so
    the result is the same under every precision setting (and exact for the fixed-point tables).
    """
    planes = x.unbind(1)
    out = []
    for row, b in zip(m, offset or (0.0,) * len(m)):
        acc = None
        for w, p in zip(row, planes):
            if w == 0:
                continue
            acc = p * w if acc is None else acc + p * w
        if acc is None:
            acc = torch.zeros_like(planes[0])
        out.append(acc + b if b else acc)
    return torch.stack(out, 1)


def rgb_to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """JFIF RGB -> YCbCr in float. [B, 3, H, W] 0..255 -> [B, 3, H, W] 0..255 (chroma centred on 128)."""
    return mix_channels(rgb, _RGB_TO_YCC, (0.0, 128.0, 128.0))


def ycbcr_to_rgb(ycc: torch.Tensor) -> torch.Tensor:
    """JFIF YCbCr -> RGB in float. [B, 3, H, W] 0..255 -> [B, 3, H, W] (not clamped)."""
    centred = ycc - torch.tensor((0.0, 128.0, 128.0), dtype=ycc.dtype, device=ycc.device)[None, :, None, None]
    return mix_channels(centred, _YCC_TO_RGB)


# libjpeg's fixed-point colour conversion, evaluated in float32. Every product and partial sum is
# an integer below 2**24, so float32 holds it exactly and the result equals libjpeg's bit for bit.
_TO_YCC_FIXED = (
    (_FIX["0.29900"], _FIX["0.58700"], _FIX["0.11400"]),
    (-_FIX["0.16874"], -_FIX["0.33126"], _FIX["0.50000"]),
    (_FIX["0.50000"], -_FIX["0.41869"], -_FIX["0.08131"]),
)
# Chroma uses a rounding fudge of 0.5 - epsilon so that 255 cannot overflow (jccolor.c).
_TO_YCC_OFFSET = (_ONE_HALF, (128 << _SCALE_BITS) + _ONE_HALF - 1, (128 << _SCALE_BITS) + _ONE_HALF - 1)
_TO_RGB_FIXED = (
    (0, 0, _FIX["1.40200"]),
    (0, -_FIX["0.34414"], -_FIX["0.71414"]),
    (0, _FIX["1.77200"], 0),
)


def rgb_to_ycbcr_fixed(rgb: torch.Tensor) -> torch.Tensor:
    """libjpeg's RGB -> YCbCr (jccolor.c). Integer-valued [B, 3, H, W] 0..255 -> float32 integers 0..255."""
    s = mix_channels(rgb.float(), _TO_YCC_FIXED, _TO_YCC_OFFSET)
    return torch.floor(s * (1.0 / (1 << _SCALE_BITS)))


def ycbcr_to_rgb_fixed(ycc: torch.Tensor) -> torch.Tensor:
    """libjpeg's YCbCr -> RGB (jdcolor.c), clamped. Integer-valued [B, 3, H, W] -> float32 integers 0..255."""
    ycc = ycc.float()
    centred = ycc - torch.tensor((0.0, 128.0, 128.0), device=ycc.device)[None, :, None, None]
    chroma = mix_channels(centred, _TO_RGB_FIXED, (_ONE_HALF,) * 3)
    return (ycc[:, :1] + torch.floor(chroma * (1.0 / (1 << _SCALE_BITS)))).clamp_(0, 255)
