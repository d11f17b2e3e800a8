"""Structural similarity (Wang et al. 2004), per image.

Gaussian window 11x11 with sigma 1.5, constants K1 = 0.01, K2 = 0.03 for a data range of
1, population (biased) local statistics, and only the window positions that lie fully
inside the image ("valid"). This is what ``skimage.metrics.structural_similarity`` with
``gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1`` computes.
No automatic downsampling of large images (Wang's MATLAB script does that; BasicSR does not).
For RGB the SSIM is the mean over the three channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from jpegrestore.metrics.colour import prepare_pair

WINDOW_SIZE = 11
SIGMA = 1.5
K1, K2 = 0.01, 0.03


def gaussian_kernel_1d(size: int = WINDOW_SIZE, sigma: float = SIGMA, device=None) -> Tensor:
    """Normalised 1-D Gaussian taps, float32 [size]."""
    offsets = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    taps = torch.exp(-offsets.square() / (2 * sigma**2))
    return taps / taps.sum()


def _blur(x: Tensor, taps: Tensor) -> Tensor:
    """Separable valid Gaussian filter of every channel: [N, C, H, W] -> [N, C, H-10, W-10]."""
    channels = x.shape[1]
    horizontal = taps.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    vertical = taps.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    return F.conv2d(F.conv2d(x, horizontal, groups=channels), vertical, groups=channels)


def ssim_map(pred: Tensor, target: Tensor) -> Tensor:
    """SSIM map of float [B, C, H, W] images in [0, 1] -> [B, C, H-10, W-10]."""
    if min(pred.shape[-2:]) < WINDOW_SIZE:
        raise ValueError(f"SSIM needs images of at least {WINDOW_SIZE}x{WINDOW_SIZE}, got {tuple(pred.shape[-2:])}")
    pred, target = pred.float(), target.float()
    taps = gaussian_kernel_1d(device=pred.device)
    c1, c2 = K1**2, K2**2
    # Blur all five statistics in one grouped convolution, in float32 even under autocast.
    stacked = torch.cat([pred, target, pred * pred, target * target, pred * target], dim=1)
    with torch.autocast(device_type=pred.device.type, enabled=False):
        mu_x, mu_y, xx, yy, xy = _blur(stacked, taps).chunk(5, dim=1)
    var_x = xx - mu_x.square()
    var_y = yy - mu_y.square()
    cov = xy - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    denominator = (mu_x.square() + mu_y.square() + c1) * (var_x + var_y + c2)
    return numerator / denominator


def ssim(
    pred: Tensor,
    target: Tensor,
    y_channel: bool = False,
    y_convention: str = "jfif",
    crop_border: int = 0,
) -> Tensor:
    """SSIM of each image: pred, target float [B, C, H, W] in [0, 1] -> float32 Tensor[B] in [-1, 1]."""
    pred, target = prepare_pair(pred, target, y_channel, y_convention, crop_border)
    return ssim_map(pred, target).mean(dim=(1, 2, 3))
