"""Shared helpers for the JPEG-operator tests: natural photos and Pillow/libjpeg references."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

PIL_SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}


def photo(name: str, height: int, width: int, top: int = 0, left: int = 0) -> np.ndarray:
    """A crop of a natural photo that scikit-image ships, uint8 HxWx3 (or HxW for 'camera')."""
    import skimage.data as data

    img = data.camera() if name == "camera" else getattr(data, name)()
    return np.ascontiguousarray(img[top:top + height, left:left + width])


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 / HxW -> float [1, C, H, W] in [0, 1]."""
    t = torch.from_numpy(img).float() / 255
    return (t.permute(2, 0, 1) if t.dim() == 3 else t[None])[None]


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float [1, C, H, W] in [0, 1] -> uint8 HxWxC (or HxW)."""
    a = (x[0].detach().double() * 255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
    return a[..., 0] if a.shape[-1] == 1 else a


def pillow_jpeg(img: np.ndarray, quality: int, subsampling: str = "4:2:0", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=quality, subsampling=PIL_SUBSAMPLING[subsampling], **kw)
    return buf.getvalue()


def pillow_decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def psnr_uint8(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)
