"""JPEG degradation of training/evaluation batches, and batch collation.

Two paths give the same batch keys and layout:

* ``compress_batch`` (default, "device"): after the batch reached the training device, encode the target with
  ``jpegrestore.jpeg`` under ``torch.no_grad`` and decode it.
* ``pillow_jpeg`` ("pillow"): per sample inside DataLoader workers, with libjpeg through Pillow; the
  coefficients are read back from the very bytes Pillow wrote.

Batch keys: "target" float [B, C, H, W] in [0, 1] (C = 3, or 1 in grayscale mode), "quality" LongTensor[B],
"input" float [B, C, H, W] in [0, 1] (the decoded JPEG), "coeffs" ``jpeg.Coefficients``; "name" (list of str)
for evaluation batches.
"""

from __future__ import annotations

import io
import os
import tempfile
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import default_collate

COMPRESSION_MODES = ("device", "pillow")
SUBSAMPLING_MODES = ("4:4:4", "4:2:2", "4:2:0")


def check_compression(compression: str, subsampling: str) -> None:
    if compression not in COMPRESSION_MODES:
        raise ValueError(f"compression must be one of {COMPRESSION_MODES}, got {compression!r}")
    if subsampling not in SUBSAMPLING_MODES:
        raise ValueError(f"subsampling must be one of {SUBSAMPLING_MODES}, got {subsampling!r}")


@torch.no_grad()
def compress_batch(batch: dict, subsampling: str = "4:2:0", rounding: str = "exact") -> dict:
    """Add "coeffs" (``jpeg.encode`` of "target" at "quality") and "input" (its decode) to ``batch``.

    Runs on whatever device the batch is on; a batch that already holds "coeffs" is returned unchanged.
    """
    from jpegrestore import jpeg

    if "coeffs" in batch:
        return batch
    target, quality = batch["target"], batch["quality"]
    coeffs = jpeg.encode(target, quality=quality, subsampling=subsampling, rounding=rounding)
    batch["coeffs"] = coeffs
    batch["input"] = jpeg.decode(coeffs, rounding=rounding).to(target.dtype)
    return batch


def pillow_encode(image: np.ndarray, quality: int, subsampling: str = "4:2:0") -> bytes:
    """uint8 [H, W, 3] RGB or [H, W, 1] gray -> baseline JPEG bytes written by Pillow (libjpeg)."""
    mode = "L" if image.shape[2] == 1 else "RGB"
    buffer = io.BytesIO()
    picture = Image.fromarray(np.ascontiguousarray(image[:, :, 0] if mode == "L" else image), mode)
    options = {} if mode == "L" else {"subsampling": subsampling}
    picture.save(buffer, format="JPEG", quality=int(quality), **options)
    return buffer.getvalue()


def read_coefficients(data: bytes):
    """JPEG bytes -> ``jpeg.Coefficients`` (batch 1), through a temporary file deleted right after."""
    from jpegrestore import jpeg

    handle, path = tempfile.mkstemp(suffix=".jpg", prefix="jpegrestore-")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        return jpeg.read(path)
    finally:
        os.unlink(path)


def pillow_jpeg(image: np.ndarray, quality: int, subsampling: str = "4:2:0") -> tuple[np.ndarray, Any]:
    """Compress with Pillow: returns (decoded uint8 [H, W, C], its ``jpeg.Coefficients`` of batch 1)."""
    data = pillow_encode(image, quality, subsampling)
    with Image.open(io.BytesIO(data)) as decoded:
        pixels = np.asarray(decoded.convert("L" if image.shape[2] == 1 else "RGB"), dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    # float32 like the coefficients of ``jpeg.encode``, so both compression paths give the same batch layout
    return pixels, read_coefficients(data).to(torch.float32)


def collate(samples: Sequence[dict]) -> dict:
    """Collate sample dicts: tensors are stacked, names listed, ``jpeg.Coefficients`` concatenated."""
    if not samples:
        raise ValueError("collate: empty list of samples")
    coeffs = [s["coeffs"] for s in samples] if "coeffs" in samples[0] else None
    rest = [{k: v for k, v in s.items() if k != "coeffs"} for s in samples]
    batch = default_collate(rest)
    if coeffs is not None:
        batch["coeffs"] = type(coeffs[0]).cat(coeffs)
    return batch
