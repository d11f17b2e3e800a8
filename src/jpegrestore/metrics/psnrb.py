"""PSNR-B (Yim and Bovik, IEEE TIP 2011), per image.

For a distorted image y (here: ``pred``) and block size B = 8, with horizontal and
vertical neighbour pairs split into those that straddle a block boundary (set B) and
the others (set B^c):

    D_B   = sum over B   of (y_i - y_j)^2 / |B|
    D_B^c = sum over B^c of (y_i - y_j)^2 / |B^c|
    eta   = log2(8) / log2(min(H, W))  if D_B > D_B^c  else 0
    BEF   = eta * (D_B - D_B^c)
    PSNR-B = 10 log10(1 / (MSE(x, y) + BEF))           (data in [0, 1])

Block boundaries lie on the 8x8 grid of the *uncropped* image (the JPEG grid), so a
``crop_border`` that is not a multiple of 8 shifts the grid instead of breaking it.
Unlike torchmetrics, BEF is computed per image (never summed over a batch) and RGB is
accepted. For RGB the choice here is: compute MSE_c + BEF_c for each channel c and
average over the channels before taking the log, i.e. ``MSE_RGB + mean_c BEF_c``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from jpegrestore.metrics.colour import prepare_pair

BLOCK = 8


def _boundary_mask(pairs: int, offset: int, device: torch.device) -> Tensor:
    """Float [pairs]: 1 where the pair (k, k+1) straddles a block boundary of the original grid."""
    index = torch.arange(pairs, device=device)
    return ((index + offset + 1) % BLOCK == 0).float()


def _boundary_count(length: int, offset: int) -> int:
    """Number of boundaries between neighbours along an axis of ``length`` starting at ``offset``."""
    return (offset + length - 1) // BLOCK - offset // BLOCK


def blocking_effect_factor(images: Tensor, offset: int = 0) -> Tensor:
    """BEF of each channel of each image: float [B, C, H, W] in [0, 1] -> float32 [B, C].

    ``offset`` is the number of rows/columns cropped from the top/left of the original
    image, so that block boundaries stay on the original 8x8 grid.
    """
    height, width = images.shape[-2:]
    images = images.float()
    sum_h = (images[..., :, 1:] - images[..., :, :-1]).square().sum(dim=-2)  # [B, C, W-1], over rows
    sum_v = (images[..., 1:, :] - images[..., :-1, :]).square().sum(dim=-1)  # [B, C, H-1], over columns
    cols = _boundary_mask(width - 1, offset, images.device)
    rows = _boundary_mask(height - 1, offset, images.device)
    boundary_sum = (sum_h * cols).sum(-1) + (sum_v * rows).sum(-1)
    inner_sum = sum_h.sum(-1) + sum_v.sum(-1) - boundary_sum
    n_boundary = height * _boundary_count(width, offset) + width * _boundary_count(height, offset)
    n_inner = height * (width - 1) + width * (height - 1) - n_boundary
    d_boundary = boundary_sum / max(n_boundary, 1)
    d_inner = inner_sum / max(n_inner, 1)
    eta = math.log2(BLOCK) / math.log2(min(height, width))
    return torch.where(d_boundary > d_inner, eta * (d_boundary - d_inner), torch.zeros_like(d_boundary))


def psnrb(
    pred: Tensor,
    target: Tensor,
    y_channel: bool = False,
    y_convention: str = "jfif",
    crop_border: int = 0,
) -> Tensor:
    """PSNR-B in dB of each image (BEF measured on ``pred``).

    pred, target: float [B, C, H, W] in [0, 1]; images must be at least 2x2 after cropping.
    Returns float32 Tensor[B]; +inf for identical images without blocking.
    """
    pred, target = prepare_pair(pred, target, y_channel, y_convention, crop_border)
    if min(pred.shape[-2:]) < 2:
        raise ValueError(f"PSNR-B needs images of at least 2x2, got {tuple(pred.shape[-2:])}")
    mse_per_channel = (pred - target).square().mean(dim=(2, 3))  # [B, C]
    bef = blocking_effect_factor(pred, offset=crop_border)
    return 10.0 * torch.log10(1.0 / (mse_per_channel + bef).mean(dim=1))
