"""8-bit PNG output and side-by-side comparison panels (JPEG / restored / original, with a zoomed crop)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import Tensor

from jpegrestore.metrics.protocol import to_8bit_levels

LABEL_HEIGHT = 14
GAP = 4


def to_uint8(image: Tensor) -> np.ndarray:
    """float [C, H, W] in [0, 1] (C = 1 or 3) -> uint8 [H, W, C] by :func:`jpegrestore.metrics.to_8bit_levels`.

    The one 8-bit rounding of the project: metrics are computed on ``quantize_8bit`` of the same image.
    """
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"expected an image [1 or 3, H, W], got shape {tuple(image.shape)}")
    return to_8bit_levels(image).permute(1, 2, 0).cpu().numpy()


def to_pil(image: Tensor) -> Image.Image:
    """float [C, H, W] in [0, 1] -> Pillow image, mode "L" for one channel, "RGB" for three."""
    array = to_uint8(image)
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)


def save_png(image: Tensor, path: str | Path) -> None:
    """Write float [C, H, W] in [0, 1] as an 8-bit PNG (gray or RGB)."""
    to_pil(image).save(path, format="PNG")


def worst_crop(jpeg_image: Tensor, target: Tensor, size: int) -> tuple[int, int]:
    """Top-left (row, col) of the ``size`` x ``size`` window where the JPEG differs most from the target.

    jpeg_image, target: [C, H, W] in [0, 1]; the window is clipped to the image.
    """
    error = (jpeg_image.float() - target.float()).abs().mean(0, keepdim=True)[None]  # [1, 1, H, W]
    size = min(size, error.shape[-2], error.shape[-1])
    local = F.avg_pool2d(error, size, stride=max(1, size // 4))
    index = int(local.flatten().argmax())
    stride = max(1, size // 4)
    return (index // local.shape[-1]) * stride, (index % local.shape[-1]) * stride


def comparison_panel(images: Sequence[Tensor], labels: Sequence[str], zoom: int = 4) -> Image.Image:
    """Images [C, H, W] in [0, 1] side by side, labelled; below, the same zoomed-in crop of each.

    The crop (a quarter of the shorter side, at least 16 px) sits where the first image (the JPEG)
    differs most from the last (the original); it is magnified with nearest-neighbour so each
    crop row is as wide as its image.
    """
    height, width = images[0].shape[-2:]
    crop = max(16, min(height, width) // zoom)
    top, left = worst_crop(images[0], images[-1], crop)
    crop_h, crop_w = min(crop, height), min(crop, width)
    scale = max(1, width // crop_w)
    rows = []
    for image in images:
        full = to_pil(image).convert("RGB")
        patch = to_pil(image[:, top:top + crop_h, left:left + crop_w]).convert("RGB")
        patch = patch.resize((crop_w * scale, crop_h * scale), Image.NEAREST)
        draw = ImageDraw.Draw(full)
        draw.rectangle([left, top, left + crop_w - 1, top + crop_h - 1], outline=(255, 0, 0))
        rows.append((full, patch))
    column_w = max(width, crop_w * scale)
    total_w = len(images) * column_w + (len(images) - 1) * GAP
    total_h = LABEL_HEIGHT + height + GAP + crop_h * scale
    panel = Image.new("RGB", (total_w, total_h), (255, 255, 255))
    draw = ImageDraw.Draw(panel)
    for i, ((full, patch), label) in enumerate(zip(rows, labels)):
        x = i * (column_w + GAP)
        draw.text((x + 2, 1), label, fill=(0, 0, 0))
        panel.paste(full, (x, LABEL_HEIGHT))
        panel.paste(patch, (x, LABEL_HEIGHT + height + GAP))
    return panel


def save_comparison(path: str | Path, jpeg_image: Tensor, restored: Tensor | Sequence[Tensor | None] | None,
                    target: Tensor, labels: Sequence[str]) -> None:
    """PNG panel JPEG / restored ... / original for one image [C, H, W]: ``restored`` is one image, a list (one
    column each; None draws a mid-gray column, e.g. for a method that failed) or None (no restored column)."""
    if restored is None:
        restored = []
    elif isinstance(restored, Tensor):
        restored = [restored]
    columns = [jpeg_image.new_full(jpeg_image.shape, 0.5) if r is None else r for r in restored]
    comparison_panel([jpeg_image, *columns, target], labels).save(path, format="PNG")
