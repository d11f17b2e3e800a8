"""Per-frequency normalization of dequantized DCT coefficients (Y, Cb, Cr), as QGAC trains on.

Coefficients here are dequantized (quantized coefficient * table) orthonormal 8x8 DCT-II values of
level-shifted samples (0..255 minus 128), in [..., 8, 8] block layout.

`DCTStats.prior()` is a data-independent placeholder (what `QGAC(stats=None)` starts from before a
checkpoint or a training task fills the buffers with measured values): mean 0 for every frequency, DC std
8 * 255 / sqrt(12) ~ 589 (block means uniform over 0..255), AC std 70 * r**-1.45 with r = sqrt(u^2 + v^2)
(the power-law falloff of natural-image spectra, about 70 at (0, 1) and 2.5 at (7, 7)), the same for
all three components. It depends on no data set; measured Flickr2K stats give Y DC mean ~ -112 and std ~ 496,
and measured Cb/Cr spreads are only 0.1-0.4x the prior's, so training with it normalizes chroma 3-10x wrong.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

COMPONENTS = ("y", "cb", "cr")


def component_index(component: int | str) -> int:
    """Map "y" / "cb" / "cr" (or 0 / 1 / 2) to 0 / 1 / 2."""
    if isinstance(component, str):
        if component.lower() not in COMPONENTS:
            raise ValueError(f"unknown component {component!r}, expected one of {COMPONENTS}")
        return COMPONENTS.index(component.lower())
    if component not in (0, 1, 2):
        raise ValueError(f"component index must be 0, 1 or 2, got {component}")
    return int(component)


def normalize_blocks(blocks: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(blocks - mean) / std per frequency. blocks [..., 8, 8]; mean, std [8, 8] (broadcast)."""
    return (blocks - mean.to(blocks)) / std.to(blocks)


def denormalize_blocks(blocks: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Inverse of normalize_blocks: blocks * std + mean."""
    return blocks * std.to(blocks) + mean.to(blocks)


def _prior_std() -> torch.Tensor:
    u = torch.arange(8, dtype=torch.float64, device="cpu")
    radius = torch.sqrt(u[:, None] ** 2 + u[None, :] ** 2)
    std = 70.0 * radius.clamp(min=1.0) ** -1.45
    std[0, 0] = 8.0 * 255.0 / math.sqrt(12.0)
    return std


def _cpu_float64(value: Any) -> torch.Tensor:
    # explicit device: a surrounding `with torch.device(...)` context must not move the stats
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", torch.float64)
    return torch.as_tensor(value, dtype=torch.float64, device="cpu")


@dataclass
class DCTStats:
    """Per-frequency mean and std of dequantized DCT coefficients.

    mean, std: float64 [3, 8, 8] for (Y, Cb, Cr), natural row-major order inside the block.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __post_init__(self) -> None:
        self.mean = _cpu_float64(self.mean)
        self.std = _cpu_float64(self.std)
        for name, value in (("mean", self.mean), ("std", self.std)):
            if value.shape != (3, 8, 8):
                raise ValueError(f"DCTStats.{name} must have shape [3, 8, 8], got {list(value.shape)}")
            if not torch.isfinite(value).all():
                raise ValueError(f"DCTStats.{name} contains non-finite values")
        if (self.std <= 0).any():
            raise ValueError("DCTStats.std must be positive everywhere")

    @classmethod
    def prior(cls) -> "DCTStats":
        """Data-independent default (see module docstring)."""
        return cls(torch.zeros(3, 8, 8, dtype=torch.float64, device="cpu"), _prior_std().expand(3, 8, 8).clone())

    def is_prior(self) -> bool:
        """True when these are (numerically) the values of :meth:`prior`."""
        return self.allclose(DCTStats.prior())

    def allclose(self, other: "DCTStats", rtol: float = 1e-5) -> bool:
        """Same mean and std up to ``rtol`` (relative to each frequency's std)."""
        tolerance = rtol * other.std
        return bool(((self.mean - other.mean).abs() <= tolerance).all()
                    and ((self.std - other.std).abs() <= tolerance).all())

    def normalize(self, blocks: torch.Tensor, component: int | str) -> torch.Tensor:
        """[..., 8, 8] dequantized coefficients -> normalized, for component "y", "cb" or "cr"."""
        i = component_index(component)
        return normalize_blocks(blocks, self.mean[i], self.std[i])

    def denormalize(self, blocks: torch.Tensor, component: int | str) -> torch.Tensor:
        """Inverse of normalize."""
        i = component_index(component)
        return denormalize_blocks(blocks, self.mean[i], self.std[i])

    def to_dict(self) -> dict[str, Any]:
        return {"components": list(COMPONENTS), "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> "DCTStats":
        for key in ("mean", "std"):
            if key not in data:
                raise ValueError(f"{source}: missing key {key!r} (expected 'mean' and 'std', each [3, 8, 8])")
        try:
            return cls(_cpu_float64(data["mean"]), _cpu_float64(data["std"]))
        except (ValueError, TypeError, RuntimeError) as err:
            raise ValueError(f"{source}: {err}") from err

    def save(self, path: str | Path) -> None:
        """Write to .json (human readable) or .pt (torch.save of a dict of tensors)."""
        path = Path(path)
        if path.suffix == ".json":
            path.write_text(json.dumps(self.to_dict(), indent=1))
        elif path.suffix == ".pt":
            torch.save({"components": list(COMPONENTS), "mean": self.mean, "std": self.std}, path)
        else:
            raise ValueError(f"{path}: DCT stats file must end in .json or .pt")

    @classmethod
    def load(cls, path: str | Path) -> "DCTStats":
        """Read a file written by save (.json or .pt)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"DCT stats file not found: {path}")
        if path.suffix == ".json":
            try:
                data = json.loads(path.read_text())
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: not valid JSON ({err})") from err
        elif path.suffix == ".pt":
            data = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise ValueError(f"{path}: DCT stats file must end in .json or .pt")
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping with keys 'mean' and 'std'")
        return cls.from_dict(data, source=str(path))


class DCTStatsAccumulator:
    """Streaming per-frequency mean/std (Chan et al. parallel Welford update, float64).

    update("y", blocks) with blocks [..., 8, 8] dequantized coefficients of one component;
    update_coefficients(coeffs) takes a jpeg.Coefficients and dequantizes each component by its table.
    compute() -> DCTStats (population std, floored at min_std).
    """

    def __init__(self, min_std: float = 1e-2) -> None:
        self.min_std = min_std
        self.count = [0, 0, 0]
        self.mean = torch.zeros(3, 8, 8, dtype=torch.float64, device="cpu")
        self.m2 = torch.zeros(3, 8, 8, dtype=torch.float64, device="cpu")

    @torch.no_grad()
    def update(self, component: int | str, blocks: torch.Tensor) -> None:
        i = component_index(component)
        if blocks.shape[-2:] != (8, 8):
            raise ValueError(f"blocks must end in [8, 8], got {list(blocks.shape)}")
        flat = blocks.detach().reshape(-1, 8, 8).to("cpu", torch.float64)
        n_new = flat.shape[0]
        if n_new == 0:
            return
        mean_new = flat.mean(0)
        m2_new = ((flat - mean_new) ** 2).sum(0)
        n_old = self.count[i]
        total = n_old + n_new
        delta = mean_new - self.mean[i]
        self.mean[i] += delta * (n_new / total)
        self.m2[i] += m2_new + delta**2 * (n_old * n_new / total)
        self.count[i] = total

    @torch.no_grad()
    def update_coefficients(self, coeffs: Any) -> None:
        """Accumulate every component of a jpeg.Coefficients batch (dequantized with coeffs.qt)."""
        planes = [coeffs.y, coeffs.cb, coeffs.cr]
        for i, plane in enumerate(planes):
            if plane is None:
                continue
            table = coeffs.qt[:, i].to(torch.float64)[:, None, None]  # [B, 1, 1, 8, 8]
            self.update(i, plane.to(torch.float64) * table.to(plane.device))

    def compute(self, allow_missing: bool = False) -> DCTStats:
        """Finish. A component with no data raises ValueError, or takes the prior if allow_missing."""
        prior = DCTStats.prior()
        mean, std = prior.mean.clone(), prior.std.clone()
        for i, name in enumerate(COMPONENTS):
            if self.count[i] == 0:
                if not allow_missing:
                    raise ValueError(f"no coefficients were accumulated for component {name!r}")
                continue
            mean[i] = self.mean[i]
            std[i] = (self.m2[i] / self.count[i]).sqrt().clamp(min=self.min_std)
        return DCTStats(mean, std)
