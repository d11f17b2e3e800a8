"""Rounding with chosen gradients.

``ste`` and ``cubic`` give a value and a gradient; ``floor_div_ste`` is libjpeg's integer
``(n + bias) >> k`` for integer-valued float tensors.
"""

from __future__ import annotations


import torch

ROUNDING_MODES = ("ste", "cubic", "exact")


def round_half_away(x: torch.Tensor) -> torch.Tensor:
    """Round half away from zero, as libjpeg's quantizer does (no gradient)."""
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Exact rounding forward (half away from zero), identity gradient."""
    return x + (round_half_away(x) - x).detach()


def round_cubic(x: torch.Tensor) -> torch.Tensor:
    """Shin & Song's surrogate ``round(x) + (x - round(x))**3``, used forward and backward.

    Its value differs from ``round(x)`` by at most 1/8 and its gradient is ``3 (x - round(x))**2``.
    """
    r = round_half_away(x).detach()
    return r + (x - r) ** 3


def floor_div_ste(n: torch.Tensor, d: int) -> torch.Tensor:
    """``floor(n / d)`` for integer-valued ``n`` with gradient ``1/d``.

    For integer n the value ``n/d - (d-1)/(2d)`` lies strictly inside (k - 1/2, k + 1/2) around
    ``k = floor(n/d)``, so a rounding gives the floor without ties.
    """
    return round_ste(n / d - (d - 1) / (2 * d))
