"""Pixel losses: L1, a differentiable SSIM, and QGAC's regression loss ``L1 - lambda * SSIM``.

Images are float [B, C, H, W]; ``data_range`` is the span of their values (1.0 for [0, 1] images).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from jpegrestore.utils.precision import in_float32

SSIM_K1, SSIM_K2 = 0.01, 0.03


def gaussian_window(size: int = 11, sigma: float = 1.5, *, dtype=torch.float32, device=None) -> torch.Tensor:
    """Normalized 1-D Gaussian of ``size`` taps centred on the middle tap. -> [size], sums to 1."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"SSIM window size must be a positive odd integer, got {size}")
    offsets = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    taps = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return (taps / taps.sum()).to(dtype)


def _blur_valid(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable depthwise Gaussian filter without padding. [B, C, H, W] -> [B, C, H-k+1, W-k+1]."""
    c = x.shape[1]
    k = window.numel()
    horizontal = window.view(1, 1, 1, k).expand(c, 1, 1, k)
    vertical = window.view(1, 1, k, 1).expand(c, 1, k, 1)
    return F.conv2d(F.conv2d(x, horizontal, groups=c), vertical, groups=c)


def ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
) -> torch.Tensor:
    """Differentiable SSIM (Wang et al. 2004), Gaussian window, population statistics.

    pred, target: [B, C, H, W] with H, W >= ``window_size``. Statistics are computed only where the window
    fits inside the image (as scikit-image's ``structural_similarity(gaussian_weights=True)``, which crops
    its border). -> Tensor[B]: the SSIM map averaged over channels and positions, in [-1, 1].
    """
    if pred.shape != target.shape or pred.dim() != 4:
        raise ValueError(f"ssim expects two [B, C, H, W] tensors of one shape, got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}")
    if min(pred.shape[-2:]) < window_size:
        raise ValueError(f"ssim needs images of at least {window_size}x{window_size}, got {tuple(pred.shape[-2:])}")
    dtype = torch.promote_types(pred.dtype, torch.float32)
    with torch.autocast(device_type=pred.device.type, enabled=False):  # variances need full precision
        return _ssim_full_precision(pred.to(dtype), target.to(dtype), data_range, window_size, sigma)


def _ssim_full_precision(x: torch.Tensor, y: torch.Tensor, data_range: float, window_size: int,
                         sigma: float) -> torch.Tensor:
    window = gaussian_window(window_size, sigma, dtype=x.dtype, device=x.device)
    # Centre each image plane before the second moments: less cancellation in E[x^2] - E[x]^2.
    xc = x - x.mean(dim=(2, 3), keepdim=True)
    yc = y - y.mean(dim=(2, 3), keepdim=True)
    mu_xc, mu_yc = _blur_valid(xc, window), _blur_valid(yc, window)
    var_x = _blur_valid(xc * xc, window) - mu_xc**2
    var_y = _blur_valid(yc * yc, window) - mu_yc**2
    cov_xy = _blur_valid(xc * yc, window) - mu_xc * mu_yc
    mu_x, mu_y = _blur_valid(x, window), _blur_valid(y, window)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.mean(dim=(1, 2, 3))


@in_float32
def l1_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over all elements. -> scalar."""
    return (pred - target).abs().mean()


@in_float32
def mse_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all elements. -> scalar."""
    return (pred - target).square().mean()


DISTANCES = {"l1": l1_loss, "mse": mse_loss}


class L1Loss(nn.Module):
    """Mean absolute error as a module. (pred, target) [B, C, H, W] -> scalar."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return l1_loss(pred, target)


class L1SSIMLoss(nn.Module):
    """QGAC's regression loss (paper eq. 1): ``mean|pred - target| - ssim_weight * mean SSIM(pred, target)``.

    (pred, target) [B, C, H, W] in [0, ``data_range``] -> scalar. The paper uses ``ssim_weight=0.05``.
    ``distance="mse"`` swaps the L1 term for the mean squared error (optimizes PSNR directly).
    """

    def __init__(self, ssim_weight: float = 0.05, data_range: float = 1.0, window_size: int = 11,
                 distance: str = "l1") -> None:
        super().__init__()
        if distance not in DISTANCES:
            raise ValueError(f"unknown pixel distance {distance!r}; choose one of {sorted(DISTANCES)}")
        self.ssim_weight = ssim_weight
        self.data_range = data_range
        self.window_size = window_size
        self.distance = distance

    @in_float32
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = DISTANCES[self.distance](pred, target)
        if self.ssim_weight:
            loss = loss - self.ssim_weight * ssim(pred, target, self.data_range, self.window_size).mean()
        return loss
