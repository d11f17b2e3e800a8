"""Luma conventions and the shared input checks of the full-reference metrics.

Two Y conventions are in use for JPEG restoration tables:

* ``"jfif"`` (default): full-range JFIF / BT.601 luma, ``Y = 0.299 R + 0.587 G + 0.114 B``,
  the Y that JPEG itself codes. Range [0, 1].
* ``"bt601"``: BasicSR's studio-range luma, ``Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255``
  for R, G, B in [0, 1]. Range [16/255, 235/255].

Both are compared with a peak value of 1 (BasicSR does the same on its 0..255 scale).
"""

from __future__ import annotations

import torch
from torch import Tensor

Y_CONVENTION_NAMES = {
    "jfif": "Y (JFIF full range)",
    "bt601": "Y (BT.601 studio range, BasicSR)",
}

_Y_WEIGHTS = {
    "jfif": ((0.299, 0.587, 0.114), 0.0),
    "bt601": ((65.481 / 255.0, 128.553 / 255.0, 24.966 / 255.0), 16.0 / 255.0),
}


def y_convention_name(y_convention: str = "jfif") -> str:
    """Human-readable name of a Y convention for table headers, e.g. ``"Y (JFIF full range)"``."""
    _check_convention(y_convention)
    return Y_CONVENTION_NAMES[y_convention]


def channel_label(y_channel: bool, y_convention: str = "jfif") -> str:
    """``"RGB"`` or the Y convention name: where a metric was computed."""
    return y_convention_name(y_convention) if y_channel else "RGB"


def _check_convention(y_convention: str) -> None:
    if y_convention not in _Y_WEIGHTS:
        raise ValueError(f"unknown y_convention {y_convention!r}; expected one of {sorted(_Y_WEIGHTS)}")


def rgb_to_y(images: Tensor, y_convention: str = "jfif") -> Tensor:
    """Luma of RGB images: float [B, 3, H, W] in [0, 1] -> [B, 1, H, W] (see module doc for ranges)."""
    _check_convention(y_convention)
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"rgb_to_y expects [B, 3, H, W] images, got shape {tuple(images.shape)}")
    weights, offset = _Y_WEIGHTS[y_convention]
    kernel = torch.tensor(weights, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images * kernel).sum(dim=1, keepdim=True) + offset


def prepare_pair(
    pred: Tensor,
    target: Tensor,
    y_channel: bool = False,
    y_convention: str = "jfif",
    crop_border: int = 0,
) -> tuple[Tensor, Tensor]:
    """Validate a (pred, target) pair, cast to float32, optionally take Y, crop borders.

    pred, target: float [B, C, H, W] in [0, 1] with C in {1, 3}. With ``y_channel`` an RGB
    pair becomes [B, 1, H, W] luma; single-channel input is taken as luma already.
    ``crop_border`` pixels are removed from each side. Returns float32 tensors.
    """
    if not isinstance(pred, Tensor) or not isinstance(target, Tensor):
        raise ValueError("pred and target must be torch tensors")
    if pred.dim() != 4 or pred.shape != target.shape:
        raise ValueError(
            f"pred and target must be [B, C, H, W] of the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if pred.shape[1] not in (1, 3):
        raise ValueError(f"expected 1 or 3 channels, got {pred.shape[1]}")
    if not pred.is_floating_point() or not target.is_floating_point():
        raise ValueError(f"expected float images in [0, 1], got {pred.dtype} and {target.dtype}")
    _check_convention(y_convention)
    if crop_border < 0 or 2 * crop_border >= min(pred.shape[-2:]):
        raise ValueError(f"crop_border={crop_border} is invalid for images of size {tuple(pred.shape[-2:])}")
    pred, target = pred.float(), target.float()
    if y_channel and pred.shape[1] == 3:
        pred, target = rgb_to_y(pred, y_convention), rgb_to_y(target, y_convention)
    if crop_border:
        pred = pred[..., crop_border:-crop_border, crop_border:-crop_border]
        target = target[..., crop_border:-crop_border, crop_border:-crop_border]
    return pred, target
