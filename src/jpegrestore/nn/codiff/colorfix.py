"""AdaIN colour fix: give a restored image the per-channel colour statistics of its JPEG input.

One-step diffusion restorers can drift in colour; CODiff's test script corrects this by default with
adaptive instance normalisation against the low-quality input: every channel of the output is shifted
and scaled so that its mean and standard deviation equal those of the same channel of the input.

Two ways to combine it with 8-bit output (``CODiffMethod(quantization=...)``):

- "float" (:func:`adain_color_fix` on the float output; the result is rounded once, where it is written or
  measured);
- "authors" (:func:`authors_8bit_output`, their test script): the output truncated to 8 bits (torchvision's
  ``ToPILImage``, ``floor(255 x)``), the colour fix applied to those levels against the JPEG's, the result
  truncated again. Both truncations lower the output by half a gray level on average.
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
    truncate again afterwards (:func:`authors_8bit_output`); this works on the float output and leaves
    quantization to the caller.
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


def truncate_to_8bit(images: Tensor) -> Tensor:
    """float images (any shape) -> ``floor(255 x) / 255`` of x clamped to [0, 1], float32: the 8-bit levels
    torchvision's ``ToPILImage`` keeps (it truncates, where :func:`jpegrestore.metrics.to_8bit_levels` rounds)."""
    return torch.floor(images.float().clamp(0, 1) * 255) / 255


def authors_8bit_output(restored: Tensor, reference: Tensor, color_fix: bool = True, eps: float = EPS) -> Tensor:
    """The output of the authors' test script on 8-bit levels. -> [B, C, H, W], float32 holding ``level / 255``.

    Args:
        restored: the decoded output [B, C, H, W] in [0, 1] (before any colour fix).
        reference: the JPEG inputs [B, C, H', W'] in [0, 1] (8-bit levels; rounded to them here).
        color_fix: apply the AdaIN fix between the two truncations (their default); False truncates once.
        eps: see :func:`channel_mean_std`.
    """
    levels = truncate_to_8bit(restored)
    if not color_fix:
        return levels
    reference_levels = torch.round(reference.float().clamp(0, 1) * 255) / 255
    return truncate_to_8bit(adain_color_fix(levels, reference_levels, eps))
