"""JPEG consistency: does the restoration compress back to the same JPEG as the original?"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from jpegrestore import jpeg


def jpeg_consistency(
    restored: Tensor,
    original: Tensor,
    quality: int | Sequence[int] | Tensor | None = None,
    tables: Tensor | None = None,
    subsampling: str = "4:2:0",
    rounding: str = "exact",
) -> Tensor:
    """RMSE in gray levels (0..255) between JPEG(original) and JPEG(restored), per image.

    restored, original: float [B, C, H, W] in [0, 1]. Both are compressed with the same
    quantization tables: ``tables`` [B, 2 or 3, 8, 8] (e.g. read from the file) or the IJG
    tables of ``quality`` (int or LongTensor[B]). ``rounding="exact"`` reproduces libjpeg.
    Returns float32 Tensor[B]; 0 means perfectly consistent.
    """
    if restored.dim() != 4 or restored.shape != original.shape:
        raise ValueError(
            f"restored and original must be [B, C, H, W] of the same shape, got "
            f"{tuple(restored.shape)} and {tuple(original.shape)}"
        )
    if (quality is None) == (tables is None):
        raise ValueError("jpeg_consistency needs exactly one of quality or tables")
    if tables is None:
        tables = jpeg.quant_tables(quality, device=original.device)
    reference = jpeg.compress(original, tables=tables, subsampling=subsampling, rounding=rounding)
    recompressed = jpeg.compress(restored, tables=tables, subsampling=subsampling, rounding=rounding)
    difference = (recompressed.float() - reference.float()) * 255.0
    return difference.square().mean(dim=(1, 2, 3)).sqrt()
