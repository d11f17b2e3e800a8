"""Quantization tables: ITU T.81 Annex K base tables scaled the IJG (libjpeg) way."""

from __future__ import annotations

from typing import NamedTuple, Sequence, Union

import torch

# Annex K.1 (luminance) and K.2 (chrominance), natural row-major order.
BASE_LUMA = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
BASE_CHROMA = (
    (17, 18, 24, 47, 99, 99, 99, 99),
    (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99),
    (47, 66, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
    (99, 99, 99, 99, 99, 99, 99, 99),
)

QualityLike = Union[int, Sequence[int], torch.Tensor]


def check_quality(quality: QualityLike, device: torch.device | str | None = None) -> torch.Tensor:
    """Validate quality factors and return them as LongTensor[B].

    Raises ValueError for a quality outside 1..100 or a non-integer value.
    """
    q = torch.as_tensor(quality, device=device)
    if q.is_floating_point():
        if not torch.equal(q, q.round()):
            raise ValueError(f"quality must be an integer in 1..100, got {quality!r}")
        q = q.long()
    if q.dtype == torch.bool or q.is_complex():
        raise ValueError(f"quality must be an integer in 1..100, got {quality!r}")
    q = q.long().reshape(-1)
    if q.numel() == 0:
        raise ValueError("quality is empty")
    bad = (q < 1) | (q > 100)
    if bool(bad.any()):
        raise ValueError(f"quality must be in 1..100, got {q[bad].tolist()}")
    return q


def quant_tables(
    quality: QualityLike,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """IJG quantization tables for quality factors.

    Args:
        quality: int, sequence or LongTensor[B] of qualities in 1..100.
    Returns:
        Tensor[B, 2, 8, 8] (luma, chroma) with integer values in 1..255 (baseline),
        identical to what libjpeg's ``jpeg_set_quality(q, force_baseline=TRUE)`` writes.
    """
    q = check_quality(quality, device=device)
    scale = torch.where(q < 50, 5000 // q, 200 - 2 * q)  # [B]
    base = torch.tensor((BASE_LUMA, BASE_CHROMA), dtype=torch.long, device=q.device)  # [2, 8, 8]
    tables = (base[None] * scale[:, None, None, None] + 50) // 100
    return tables.clamp_(1, 255).to(dtype)


class QualityEstimate(NamedTuple):
    """``quality`` LongTensor[B] in 1..100: the IJG quality whose tables are nearest; ``exact`` BoolTensor[B]: the
    file's tables are exactly those (False for custom tables, e.g. from cameras or editors)."""

    quality: torch.Tensor
    exact: torch.Tensor


def estimate_quality(tables: torch.Tensor) -> QualityEstimate:
    """The IJG quality of quantization tables, as libjpeg/Pillow would have written them.

    tables: [B, C, 8, 8] per-component tables (``Coefficients.qt``: luma first, then the chroma tables) or
    [B, 2, 8, 8] (luma, chroma). Nearest is measured as the mean absolute log ratio over the luma table and,
    when present, the first chroma table, so custom tables map to the IJG quality of similar coarseness.
    """
    if tables.dim() != 4 or tables.shape[-2:] != (8, 8) or tables.shape[1] < 1:
        raise ValueError(f"estimate_quality expects tables [B, C, 8, 8], got {tuple(tables.shape)}")
    candidates = quant_tables(torch.arange(1, 101), device=tables.device, dtype=torch.float64)  # [100, 2, 8, 8]
    used = min(tables.shape[1], 2)
    given = tables[:, :used].double().clamp(min=1)  # [B, used, 8, 8]
    reference = candidates[:, :used]
    distance = (given[:, None].log() - reference[None].log()).abs().mean(dim=(2, 3, 4))  # [B, 100]
    best = distance.argmin(dim=1)
    exact = distance.gather(1, best[:, None])[:, 0] == 0
    return QualityEstimate(best + 1, exact)
