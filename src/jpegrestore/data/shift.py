"""Crops of already-compressed batches whose JPEG block grid is shifted against the crop (CODiff's data).

CODiff compresses a 264x264 crop and then takes a 256x256 crop out of both the JPEG and the original; with
probability 1/2 at a random offset in 0..8 per axis, otherwise at (0, 0). The block grid of the JPEG input then
starts at a random phase inside the crop. Cropping before compression (the datamodule's ``misalign_prob``) does
not do this: a freshly compressed crop always has its grid at the crop's origin.

Use with the datamodule's ``crop_size`` = crop + margin (e.g. 264) and :func:`shifted_crop` on the device batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

IMAGE_KEYS = ("input", "target")


def shifted_crop(
    batch: Mapping[str, Any], size: int, shift_prob: float, generator: torch.Generator
) -> dict[str, Any]:
    """Crop ``input`` and ``target`` of a compressed batch to ``size`` x ``size``, same offset for both.

    Per image, with probability ``shift_prob`` the offset (top, left) is uniform in 0..(H - size) x 0..(W - size)
    (both ends included, as in the authors' code), otherwise (0, 0). ``coeffs`` is dropped: it describes the
    uncropped JPEG. Other entries pass through.

    Args:
        batch: {"input": [B, C, H, W], "target": [B, C, H, W], ...} with H, W >= size.
        generator: CPU generator the offsets are drawn from.
    """
    images = batch["input"]
    b, _, h, w = images.shape
    if h < size or w < size:
        raise ValueError(
            f"shifted crop of {size}x{size} needs larger training crops, got {h}x{w}: set data.crop_size to at "
            f"least {size} (CODiff: {size} + 8)"
        )
    shifted = torch.rand(b, generator=generator) < shift_prob
    tops = torch.randint(0, h - size + 1, (b,), generator=generator) * shifted
    lefts = torch.randint(0, w - size + 1, (b,), generator=generator) * shifted
    out = {k: v for k, v in batch.items() if k != "coeffs"}
    offsets = list(zip(tops.tolist(), lefts.tolist()))
    for key in IMAGE_KEYS:
        out[key] = torch.stack([batch[key][i, :, t : t + size, l : l + size] for i, (t, l) in enumerate(offsets)])
    out["crop_offset"] = torch.stack([tops, lefts], 1)
    return out
