"""Peak signal-to-noise ratio, per image."""

from __future__ import annotations

import torch
from torch import Tensor

from jpegrestore.metrics.colour import prepare_pair


def psnr(
    pred: Tensor,
    target: Tensor,
    y_channel: bool = False,
    y_convention: str = "jfif",
    crop_border: int = 0,
) -> Tensor:
    """PSNR in dB of each image, peak 1: ``10 log10(1 / MSE)``.

    pred, target: float [B, C, H, W] in [0, 1]. The MSE is over all channels and pixels of
    one image (RGB, or Y when ``y_channel``). Returns float32 Tensor[B]; +inf where equal.
    """
    pred, target = prepare_pair(pred, target, y_channel, y_convention, crop_border)
    mse = (pred - target).square().mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(1.0 / mse)
