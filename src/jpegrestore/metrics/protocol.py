"""The two rules every reported metric follows: 8-bit rounded outputs and a finite PSNR ceiling.

* Users get 8-bit PNGs (``evaluate.py`` panels, ``jpegrestore restore``), so restored images are
  scored after the same rounding the PNG writer applies: :func:`quantize_8bit` is that rounding,
  and :func:`to_8bit_levels` is what the PNG writer stores. BasicSR-style protocols do the same.
* An image restored exactly (e.g. a flat patch) has MSE 0 and an infinite PSNR / PSNR-B, which
  would make any mean over images infinite. Reported per-image PSNR and PSNR-B are therefore
  capped at :data:`PSNR_CEILING_DB` (:func:`cap_psnr`); the raw metric functions still return +inf.
  At 100 dB only exact or practically exact 8-bit images are capped: one gray level of error in one
  value of a 256x256 RGB image already scores 10 log10(255^2 * 3 * 256^2) = 101 dB.
"""

from __future__ import annotations

import torch
from torch import Tensor

PSNR_CEILING_DB = 100.0

PROTOCOL_NOTE = (
    "metrics on 8-bit rounded outputs (the PNGs evaluate.py and `jpegrestore restore` save); "
    f"per-image PSNR and PSNR-B capped at {PSNR_CEILING_DB:g} dB (exact or practically exact images)"
)


def to_8bit_levels(images: Tensor) -> Tensor:
    """float images in [0, 1] (any shape) -> uint8 levels 0..255, clamped and rounded half up.

    Half up (``floor(255 x + 0.5)``) is the rounding of the JPEG encoder's input as well.
    """
    if not images.is_floating_point():
        raise ValueError(f"expected float images in [0, 1], got {images.dtype}")
    return torch.floor(images.detach().float().clamp(0, 1) * 255 + 0.5).to(torch.uint8)


def quantize_8bit(images: Tensor) -> Tensor:
    """float images in [0, 1] (any shape) -> float32 of the same shape holding ``level / 255``.

    The image a user gets from the saved 8-bit PNG; idempotent on images that are 8-bit already.
    """
    return to_8bit_levels(images).float() / 255


def cap_psnr(values: Tensor) -> Tensor:
    """Per-image PSNR or PSNR-B in dB -> the same values with +inf (and anything above) at the ceiling."""
    return values.clamp(max=PSNR_CEILING_DB)
