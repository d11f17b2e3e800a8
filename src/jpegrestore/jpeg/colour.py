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


# libjpeg's fixed-point colour conversion, evaluated in float32 (exact, see _fixed_sum below).
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
    return torch.stack(rgb_to_ycbcr_planes(list(rgb.float().unbind(1))), 1)


def ycbcr_to_rgb_fixed(ycc: torch.Tensor) -> torch.Tensor:
    """libjpeg's YCbCr -> RGB (jdcolor.c), clamped. Integer-valued [B, 3, H, W] -> float32 integers 0..255."""
    return ycbcr_to_rgb_planes(*ycc.float().unbind(1))


# ---- The same conversions on separate planes, as the codec runs them -----------------------------
# Weights and offsets are pre-scaled by 2**-16, so floor() of the sum is libjpeg's ">> 16". Exact in
# float32: each product w * p is an integer below 2**24 (or an even one below 2**25) in units of
# 2**-16, and the sum starts from the offset, which keeps every partial sum below 2**24 units in
# magnitude (e.g. blue: -14.8M + 116130 * 0..255 stays within +-14.9M).
_UNIT = 1.0 / (1 << _SCALE_BITS)


def _fixed_sum(planes: list[torch.Tensor], weights: tuple, offset: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """floor((offset + sum_j weights[j] * planes[j]) / 2**16), float32 [B, H, W], one pass per term."""
    acc = None
    for w, p in zip(weights, planes):
        if w == 0:
            continue
        if acc is None:
            acc = torch.add(p.new_tensor(offset * _UNIT), p, alpha=w * _UNIT, out=out)
        else:
            acc.add_(p, alpha=w * _UNIT)
    return acc.floor_()


def rgb_to_ycbcr_planes(rgb: list[torch.Tensor]) -> list[torch.Tensor]:
    """libjpeg's RGB -> YCbCr (jccolor.c) on planes: 3 integer-valued float32 [B, H, W] in 0..255 -> Y, Cb, Cr."""
    return [_fixed_sum(rgb, row, off) for row, off in zip(_TO_YCC_FIXED, _TO_YCC_OFFSET)]


# jdcolor.c centres chroma on 0 before its products; folded into the offsets here: R = Y + (1.402 Cr'), etc.
_TO_RGB_OFFSET = tuple(_ONE_HALF - 128 * sum(row) for row in _TO_RGB_FIXED)


def ycbcr_to_rgb_planes(y: torch.Tensor, cb: torch.Tensor, cr: torch.Tensor) -> torch.Tensor:
    """libjpeg's YCbCr -> RGB (jdcolor.c), clamped: integer-valued float32 planes [B, H, W] -> [B, 3, H, W] 0..255."""
    out = torch.empty((y.shape[0], 3, *y.shape[1:]), dtype=torch.float32, device=y.device)
    for k, (row, off) in enumerate(zip(_TO_RGB_FIXED, _TO_RGB_OFFSET)):
        _fixed_sum([y, cb, cr], row, off, out=out[:, k]).add_(y)
    return out.clamp_(0, 255)
