"""The ``Coefficients`` value: quantized DCT coefficients of a batch of JPEG images."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Sequence

import torch

from .sampling import check_subsampling


@dataclass
class Coefficients:
    """Quantized DCT coefficients, their tables and the image geometry.

    Attributes:
        y, cb, cr: integer-valued [B, Hb, Wb, 8, 8] in block layout, natural row-major order inside a
            block. Grids cover whole MCUs: for 4:2:0, ``y`` has exactly twice the chroma blocks in each
            direction. ``cb``/``cr`` are None for grayscale. From ``encode`` they are float (and carry
            gradients); from ``read`` they are int32.
        qt: [B, C, 8, 8] quantization table of each component (C = 1 or 3), integer values 1..65535.
        subsampling: "4:4:4", "4:2:2" or "4:2:0" (grayscale is stored as "4:4:4").
        size: the original (H, W).
    """

    y: torch.Tensor
    cb: Optional[torch.Tensor]
    cr: Optional[torch.Tensor]
    qt: torch.Tensor
    subsampling: str
    size: tuple[int, int]

    def __post_init__(self) -> None:
        check_subsampling(self.subsampling)
        if self.y.dim() != 5 or self.y.shape[-2:] != (8, 8):
            raise ValueError(f"Coefficients.y must be [B, Hb, Wb, 8, 8], got {tuple(self.y.shape)}")
        if (self.cb is None) != (self.cr is None):
            raise ValueError("Coefficients.cb and .cr must both be set or both be None")
        if self.qt.dim() != 4 or self.qt.shape[1] != self.num_components or self.qt.shape[-2:] != (8, 8):
            raise ValueError(
                f"Coefficients.qt must be [B, {self.num_components}, 8, 8], got {tuple(self.qt.shape)}"
            )
        self.size = (int(self.size[0]), int(self.size[1]))

    @property
    def num_components(self) -> int:
        return 1 if self.cb is None else 3

    @property
    def batch_size(self) -> int:
        return self.y.shape[0]

    @property
    def device(self) -> torch.device:
        return self.y.device

    def components(self) -> list[torch.Tensor]:
        """[y] or [y, cb, cr]."""
        return [self.y] if self.cb is None else [self.y, self.cb, self.cr]

    def _map(self, fn) -> "Coefficients":
        return replace(
            self,
            y=fn(self.y),
            cb=None if self.cb is None else fn(self.cb),
            cr=None if self.cr is None else fn(self.cr),
            qt=fn(self.qt),
        )

    def to(self, *args, **kwargs) -> "Coefficients":
        """Like ``Tensor.to`` for every tensor (device and/or dtype)."""
        return self._map(lambda t: t.to(*args, **kwargs))

    def detach(self) -> "Coefficients":
        return self._map(torch.Tensor.detach)

    def __getitem__(self, index) -> "Coefficients":
        """Batch indexing; an int keeps the batch dimension."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return self._map(lambda t: t[index])

    def __len__(self) -> int:
        return self.batch_size

    @staticmethod
    def cat(items: Sequence["Coefficients"]) -> "Coefficients":
        """Concatenate along the batch; all items need the same size, subsampling and components."""
        items = list(items)
        if not items:
            raise ValueError("Coefficients.cat needs at least one item")
        first = items[0]
        for other in items[1:]:
            if (other.size, other.subsampling, other.num_components) != (
                first.size, first.subsampling, first.num_components,
            ):
                raise ValueError(
                    "Coefficients.cat: items differ in size, subsampling or components: "
                    f"{first.size, first.subsampling, first.num_components} vs "
                    f"{other.size, other.subsampling, other.num_components}"
                )
        def cat(name):
            parts = [getattr(c, name) for c in items]
            return None if parts[0] is None else torch.cat(parts)
        return Coefficients(cat("y"), cat("cb"), cat("cr"), cat("qt"), first.subsampling, first.size)
