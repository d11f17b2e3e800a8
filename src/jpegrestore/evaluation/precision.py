"""The ``precision`` option of every restoration method (``evaluate.py method.precision=...``,
``jpegrestore restore --precision ...``): which dtype the network runs in.

``"32"`` (default): everything in float32, exact. ``"bf16"`` / ``"16"``: the network's forward pass runs under
``torch.autocast`` in bfloat16 / float16; its output is cast back to float32, and the JPEG operator (decoding,
projection), tiling and the metrics stay in float32 outside autocast. Each method wraps only its network calls
in :func:`network_autocast`.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor, nn

#: option value -> autocast dtype (float32: no autocast).
PRECISIONS: dict[str, torch.dtype] = {"32": torch.float32, "bf16": torch.bfloat16, "16": torch.float16}


def precision_dtype(precision: str | int | None) -> torch.dtype:
    """``"32"`` (also 32 or None), ``"bf16"`` or ``"16"`` (also 16) -> the network's dtype. ValueError otherwise."""
    key = "32" if precision is None else str(precision)
    if key not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    return PRECISIONS[key]


def network_autocast(device: torch.device | str, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """The context a method runs its network in: autocast to ``dtype`` on ``device``'s type, or nothing for
    float32. ValueError when the device type cannot autocast to ``dtype``."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    device_type = torch.device(device).type
    if not torch.amp.is_autocast_available(device_type):
        raise ValueError(f"precision {dtype} needs autocast, which is not available on {device_type}")
    return torch.autocast(device_type, dtype=dtype)


class AutocastModule(nn.Module):
    """``module`` whose forward runs in :func:`network_autocast` and returns float32 tensors (for callers that
    take a network rather than a block, e.g. the DDRM-JPEG sampler's ``eps_model(x, t)``)."""

    def __init__(self, module: nn.Module, device: torch.device | str, dtype: torch.dtype) -> None:
        super().__init__()
        self.module = module
        self.device_type = torch.device(device).type
        self.dtype = dtype

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with network_autocast(self.device_type, self.dtype):
            out = self.module(*args, **kwargs)
        return out.float() if isinstance(out, Tensor) and out.is_floating_point() else out
