"""Real JPEG files through libjpeg (the ``jpeglib`` package): exact coefficients and tables.

Files are checked with Pillow first, because libjpeg only warns about a truncated file and fills
the missing blocks with zeros; here that is an error.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Union

import numpy as np
import torch

from .codec import _dummy_blocks, _check_coeffs
from .coefficients import Coefficients
from .precision import full_precision

PathLike = Union[str, os.PathLike]

# jpeglib reports luma sampling factors as (v, h); chroma must be (1, 1).
_SUBSAMPLING_BY_FACTORS = {(1, 1): "4:4:4", (1, 2): "4:2:2", (2, 2): "4:2:0"}


def _validate_file(path: Path) -> None:
    """Raise a clear error for a missing, empty, non-JPEG, truncated, CMYK or high-bit-depth file."""
    from PIL import Image, UnidentifiedImageError

    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise OSError(f"{path}: is a directory, not a JPEG file")
    size = path.stat().st_size
    if size == 0:
        raise OSError(f"{path}: empty file")
    with open(path, "rb") as f:
        if f.read(2) != b"\xff\xd8":
            raise OSError(f"{path}: not a JPEG file (no SOI marker)")
    try:
        with Image.open(path) as im:
            if im.format != "JPEG":
                raise OSError(f"{path}: not a JPEG file (Pillow reads it as {im.format})")
            if im.mode in ("CMYK", "YCCK"):
                raise ValueError(f"{path}: {im.mode} JPEG is not supported (only grayscale and YCbCr)")
            if im.mode not in ("L", "RGB"):
                raise ValueError(f"{path}: JPEG mode {im.mode} is not supported (only grayscale and YCbCr)")
            im.load()  # full decode: raises on truncation and corrupt entropy data
    except UnidentifiedImageError as e:
        raise OSError(f"{path}: not a readable JPEG file ({e})") from None
    except OSError as e:
        if "truncated" in str(e).lower():
            raise OSError(f"{path}: truncated JPEG file ({e})") from None
        raise OSError(f"{path}: corrupt JPEG file ({e})") from None
    except (SyntaxError, IndexError, struct.error) as e:
        raise OSError(f"{path}: corrupt JPEG file ({e})") from None


@full_precision
def read(path: PathLike) -> Coefficients:
    """Read a JPEG file's quantized DCT coefficients and tables exactly.

    Handles baseline, progressive and optimized files; grayscale and YCbCr 4:4:4 / 4:2:2 / 4:2:0.
    Returns Coefficients with batch size 1, int32 coefficients and float32 tables.
    Raises FileNotFoundError for a missing file, OSError for an empty, non-JPEG, truncated or corrupt
    one, ValueError for an unsupported kind (CMYK, unusual sampling factors).
    """
    import jpeglib

    path = Path(path)
    _validate_file(path)
    try:
        jpg = jpeglib.read_dct(str(path))
    except Exception as e:  # libjpeg errors surface as various exceptions
        raise OSError(f"{path}: libjpeg could not read the coefficients ({e})") from None
    factors = [tuple(int(v) for v in f) for f in np.asarray(jpg.samp_factor)]
    height, width = int(jpg.height), int(jpg.width)
    tables = np.asarray(jpg.qt)
    table_of = [int(i) for i in np.asarray(jpg.quant_tbl_no)]
    if jpg.Cb is None:
        comps = [jpg.Y]
        subsampling = "4:4:4"
    else:
        if len(factors) != 3 or factors[1] != (1, 1) or factors[2] != (1, 1) or factors[0] not in _SUBSAMPLING_BY_FACTORS:
            raise ValueError(f"{path}: unsupported sampling factors {factors} (supported: 4:4:4, 4:2:2, 4:2:0)")
        comps = [jpg.Y, jpg.Cb, jpg.Cr]
        subsampling = _SUBSAMPLING_BY_FACTORS[factors[0]]
    tensors = [torch.from_numpy(np.ascontiguousarray(c)).to(torch.int32)[None] for c in comps]
    qt = torch.from_numpy(np.stack([tables[i] for i in table_of[: len(comps)]]).astype(np.float32))[None]
    if len(tensors) == 3:
        v, h = factors[0]
        grid = tensors[1].shape[1:3]
        y = tensors[0]
        pad_rows, pad_cols = grid[0] * v - y.shape[1], grid[1] * h - y.shape[2]
        if pad_rows or pad_cols:  # add libjpeg's dummy blocks so the luma grid covers whole MCUs
            y = torch.nn.functional.pad(y.permute(0, 3, 4, 1, 2), (0, pad_cols, 0, pad_rows)).permute(0, 3, 4, 1, 2)
            tensors[0] = _dummy_blocks(y.contiguous(), (height, width), subsampling)
    cb, cr = (tensors[1], tensors[2]) if len(tensors) == 3 else (None, None)
    coeffs = Coefficients(tensors[0], cb, cr, qt, subsampling, (height, width))
    _check_coeffs(coeffs)
    return coeffs


@full_precision
def write(path: PathLike, coeffs: Coefficients) -> None:
    """Write coefficients and tables to a baseline JPEG file (batch size 1), losslessly.

    Raises ValueError for a batch larger than one, non-integer coefficients or tables outside 1..255.
    """
    import jpeglib

    _check_coeffs(coeffs)
    if coeffs.batch_size != 1:
        raise ValueError(f"write takes one image; got a batch of {coeffs.batch_size} (index it: coeffs[i])")
    height, width = coeffs.size
    rows, cols = -(-height // 8), -(-width // 8)
    arrays = []
    for c in coeffs.components():
        c = c.detach()
        if c.is_floating_point():
            if not torch.equal(c, c.round()):
                raise ValueError("coefficients must be integer-valued to be written")
        arrays.append(c[0].to("cpu", torch.int16).numpy())
    arrays[0] = np.ascontiguousarray(arrays[0][:rows, :cols])
    qt = coeffs.qt[0].detach().to("cpu")
    if not torch.equal(qt, qt.round()) or bool((qt < 1).any()) or bool((qt > 255).any()):
        raise ValueError("tables must hold integers in 1..255 to be written as baseline JPEG")
    qt = qt.numpy().astype(np.uint16)
    if len(arrays) == 3 and np.array_equal(qt[1], qt[2]):
        tables, table_of = qt[:2], [0, 1, 1]
    else:
        tables, table_of = qt, list(range(len(arrays)))
    kwargs = dict(Y=arrays[0], qt=np.ascontiguousarray(tables), quant_tbl_no=table_of)
    if len(arrays) == 3:
        kwargs.update(Cb=np.ascontiguousarray(arrays[1]), Cr=np.ascontiguousarray(arrays[2]))
    jpg = jpeglib.from_dct(**kwargs)
    jpg.height, jpg.width = height, width
    path = Path(path)
    if not path.parent.exists():
        raise FileNotFoundError(f"{path.parent}: no such directory")
    jpg.write_dct(str(path))
