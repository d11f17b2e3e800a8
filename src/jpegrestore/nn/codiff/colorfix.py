"""AdaIN colour fix: give a restored image the per-channel colour statistics of its JPEG input.

One-step diffusion restorers can drift in colour; CODiff's test script corrects this by default with
adaptive instance normalisation against the low-quality input: every channel of the output is shifted
and scaled so that its mean and standard deviation equal those of the same channel of the input.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: Added to each channel's variance before the square root (the authors' value).
EPS = 1e-5


def channel_mean_std(images: Tensor, eps: float = EPS) -> tuple[Tensor, Tensor]:
    """Per-image, per-channel mean and standard deviation. images [B, C, H, W] -> two [B, C, 1, 1].

    The standard deviation is ``sqrt(unbiased variance + eps)`` over the H*W pixels, as in the authors'
    code (so a constant channel has std sqrt(eps), never 0).
    """
    if images.ndim != 4:
        raise ValueError(f"expected images [B, C, H, W], got shape {tuple(images.shape)}")
    flat = images.flatten(2)
    mean = flat.mean(dim=2)[..., None, None]
    std = (flat.var(dim=2) + eps).sqrt()[..., None, None]
    return mean, std


def adain_color_fix(restored: Tensor, reference: Tensor, eps: float = EPS, clamp: bool = True) -> Tensor:
    """``restored`` with each channel's mean/std replaced by ``reference``'s. -> [B, C, H, W].

    Args:
        restored: the restored images [B, C, H, W], values in [0, 1].
        reference: the JPEG inputs [B, C, H', W'] in [0, 1] (same B and C; the size may differ).
        eps: added to both variances (see :func:`channel_mean_std`).
        clamp: clip the result to [0, 1] (the authors do).

    Computed in float32 at least. The authors apply it to the output already truncated to 8 bits and
    truncate again afterwards; here it works on the float output and leaves quantization to the caller.
    """
    if restored.shape[:2] != reference.shape[:2]:
        raise ValueError(
            f"colour fix needs the same batch and channels: restored {tuple(restored.shape)} vs "
            f"reference {tuple(reference.shape)}"
        )
    dtype = torch.promote_types(restored.dtype, torch.float32)
    out_mean, out_std = channel_mean_std(restored.to(dtype), eps)
    ref_mean, ref_std = channel_mean_std(reference.to(dtype), eps)
    fixed = (restored.to(dtype) - out_mean) / out_std * ref_std + ref_mean
    return fixed.clamp(0, 1) if clamp else fixed
