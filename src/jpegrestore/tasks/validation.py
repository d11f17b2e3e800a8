"""Per-quality accumulation of per-image validation metrics, synchronised across DDP ranks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric

from jpegrestore.metrics.protocol import PSNR_CEILING_DB

MAX_QUALITY = 100


class QualityBinnedMean(Metric):
    """Sums per-image values into one bin per JPEG quality (1..100) and reports means.

    update(quality Long[B], values [B, K]) with the K columns named by ``names``.
    compute() -> {"name_q10": mean over images of quality 10, ..., "name": mean over all images}.
    States are summed over DDP ranks by torchmetrics before compute.
    """

    full_state_update = False

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__()
        self.names = list(names)
        k = len(self.names)
        self.add_state("sums", torch.zeros(MAX_QUALITY + 1, k, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("counts", torch.zeros(MAX_QUALITY + 1, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, quality: torch.Tensor, values: torch.Tensor) -> None:
        quality = quality.reshape(-1).long().to(self.counts.device)
        if values.dim() != 2 or values.shape != (quality.numel(), len(self.names)):
            raise ValueError(f"values must be [B={quality.numel()}, K={len(self.names)}], got {tuple(values.shape)}")
        if ((quality < 1) | (quality > MAX_QUALITY)).any():
            raise ValueError(f"qualities must lie in 1..{MAX_QUALITY}, got {quality.tolist()}")
        values = values.to(self.sums).nan_to_num(posinf=PSNR_CEILING_DB)  # callers cap already
        self.sums.index_add_(0, quality, values)
        self.counts.index_add_(0, quality, torch.ones_like(quality, dtype=self.counts.dtype))

    def compute(self) -> dict[str, torch.Tensor]:
        present = (self.counts > 0).nonzero().flatten().tolist()
        result: dict[str, torch.Tensor] = {}
        for q in present:
            means = self.sums[q] / self.counts[q]
            result.update({f"{name}_q{q}": means[i].float() for i, name in enumerate(self.names)})
        total = self.counts.sum().clamp(min=1)
        result.update({name: (self.sums[:, i].sum() / total).float() for i, name in enumerate(self.names)})
        return result
