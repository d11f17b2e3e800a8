"""Bits per pixel of real JPEG files written by Pillow (libjpeg-turbo)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import torch
from PIL import Image
from torch import Tensor

from jpegrestore.metrics.protocol import to_8bit_levels

_PIL_SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}


def _qualities(quality: int | Sequence[int] | Tensor, batch: int) -> list[int]:
    values = quality.tolist() if isinstance(quality, Tensor) else quality
    values = [values] * batch if isinstance(values, int) else list(values)
    if len(values) != batch:
        raise ValueError(f"got {len(values)} qualities for a batch of {batch} images")
    for q in values:
        if isinstance(q, bool) or not isinstance(q, int) or not 1 <= q <= 100:
            raise ValueError(f"quality must be an int in 1..100, got {q!r}")
    return values


def to_pil(image: Tensor) -> Image.Image:
    """float [3 or 1, H, W] in [0, 1] -> 8-bit RGB or L Pillow image (clamped, rounded by ``to_8bit_levels``)."""
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"expected a [3 or 1, H, W] image, got shape {tuple(image.shape)}")
    array = to_8bit_levels(image).cpu()
    if image.shape[0] == 1:
        return Image.fromarray(array[0].numpy())  # 2-D uint8 -> mode "L"
    return Image.fromarray(array.permute(1, 2, 0).contiguous().numpy())  # H x W x 3 uint8 -> "RGB"


def jpeg_bytes(image: Tensor, quality: int, subsampling: str = "4:2:0") -> bytes:
    """The JPEG file Pillow writes for one float [3 or 1, H, W] image in [0, 1] (baseline, no optimize)."""
    if subsampling not in _PIL_SUBSAMPLING:
        raise ValueError(f"unknown subsampling {subsampling!r}; expected one of {list(_PIL_SUBSAMPLING)}")
    (quality,) = _qualities(quality, 1)
    buffer = io.BytesIO()
    options = {"quality": quality}
    if image.shape[0] == 3:
        options["subsampling"] = _PIL_SUBSAMPLING[subsampling]
    to_pil(image).save(buffer, format="JPEG", **options)
    return buffer.getvalue()


def bits_per_pixel(
    images: Tensor, quality: int | Sequence[int] | Tensor, subsampling: str = "4:2:0"
) -> Tensor:
    """Size of each image's JPEG file in bits per pixel: ``8 * len(file) / (H * W)``.

    images: float [B, 3 or 1, H, W] in [0, 1]; quality: int or one int per image (1..100).
    Returns float64 Tensor[B] on the CPU (file sizes are host-side by nature).
    """
    if images.dim() != 4:
        raise ValueError(f"bits_per_pixel expects [B, C, H, W], got shape {tuple(images.shape)}")
    height, width = images.shape[-2:]
    qualities = _qualities(quality, images.shape[0])
    sizes = [len(jpeg_bytes(image, q, subsampling)) for image, q in zip(images, qualities)]
    return torch.tensor(sizes, dtype=torch.float64) * 8.0 / (height * width)
