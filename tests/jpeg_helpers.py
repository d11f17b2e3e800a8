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


# --- A second float JPEG operator, written from T.871 and the JPEG spec with numpy/scipy (float64) -------------
# Independent of jpegrestore.jpeg: scipy's orthonormal DCT, the RGB->YCbCr matrix of T.871 and its numerical
# inverse, chroma averaged over each h x v group and upsampled by repetition. No rounding anywhere, so the
# result is the unquantized coefficients (in quantization-step units) that ``float_encode(quantize=False)`` gives.
_T871_RGB_TO_YCC = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
_FACTORS = {"4:4:4": (1, 1), "4:2:2": (2, 1), "4:2:0": (2, 2)}  # (horizontal, vertical) chroma decimation


def reference_float_encode(canvas: torch.Tensor, qt: torch.Tensor, subsampling: str) -> list[np.ndarray]:
    """Float [B, C, H, W] on 0..1 (H, W whole MCUs), tables [B, C, 8, 8] -> per component [B, Hb, Wb, 8, 8]."""
    from scipy.fft import dctn

    x = canvas.detach().double().cpu().numpy() * 255
    q = qt.detach().double().cpu().numpy()
    planes = [x[:, 0]]
    if x.shape[1] == 3:
        ycc = np.einsum("ij,bjhw->bihw", _T871_RGB_TO_YCC, x) + np.array([0, 128, 128])[None, :, None, None]
        h, v = _FACTORS[subsampling]
        b, _, height, width = ycc.shape
        planes = [ycc[:, 0]] + [ycc[:, i].reshape(b, height // v, v, width // h, h).mean((2, 4)) for i in (1, 2)]
    out = []
    for i, plane in enumerate(planes):
        b, height, width = plane.shape
        blocks = plane.reshape(b, height // 8, 8, width // 8, 8).transpose(0, 1, 3, 2, 4)
        out.append(dctn(blocks - 128, axes=(-2, -1), norm="ortho") / q[:, i, None, None])
    return out


def reference_float_decode(components: list, qt: torch.Tensor, subsampling: str) -> np.ndarray:
    """Per component [B, Hb, Wb, 8, 8] (quantization-step units), tables [B, C, 8, 8] -> float64 [B, C, H, W]
    on 0..1 (the MCU canvas, not clamped)."""
    from scipy.fft import idctn

    q = qt.detach().double().cpu().numpy()
    planes = []
    for i, c in enumerate(components):
        c = c.detach().double().cpu().numpy() if torch.is_tensor(c) else np.asarray(c, np.float64)
        blocks = idctn(c * q[:, i, None, None], axes=(-2, -1), norm="ortho") + 128
        b, hb, wb = blocks.shape[:3]
        plane = blocks.transpose(0, 1, 3, 2, 4).reshape(b, hb * 8, wb * 8)
        if i > 0:
            h, v = _FACTORS[subsampling]
            plane = plane.repeat(v, 1).repeat(h, 2)
        planes.append(plane)
    ycc = np.stack(planes, 1)
    if ycc.shape[1] == 3:
        centred = ycc - np.array([0, 128, 128])[None, :, None, None]
        ycc = np.einsum("ij,bjhw->bihw", np.linalg.inv(_T871_RGB_TO_YCC), centred)
    return ycc / 255
