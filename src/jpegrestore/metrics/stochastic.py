"""Spread of stochastic restorations: per-pixel standard deviation across samples."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor


class SampleStd(NamedTuple):
    """``per_image``: Tensor[B], mean over C, H, W of ``std_map`` [B, C, H, W]."""

    per_image: Tensor
    std_map: Tensor


def sample_std(samples: Tensor, correction: int = 1) -> SampleStd:
    """Per-pixel standard deviation over samples.

    samples: float [S, B, C, H, W] in [0, 1], S >= 2 restorations of each of B inputs.
    ``correction=1`` is the unbiased (S - 1) estimator, 0 the population one. Values are in
    the input's units; multiply by 255 for gray levels. Computed in float32.
    """
    if samples.dim() != 5:
        raise ValueError(f"sample_std expects [S, B, C, H, W], got shape {tuple(samples.shape)}")
    if samples.shape[0] <= correction:
        raise ValueError(f"sample_std needs more than {correction} samples, got S={samples.shape[0]}")
    std_map = samples.float().std(dim=0, correction=correction)
    return SampleStd(std_map.mean(dim=(1, 2, 3)), std_map)
