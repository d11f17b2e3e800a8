"""Full precision for the JPEG op under any global precision setting.

Every public entry point of :mod:`jpegrestore.jpeg` runs inside :func:`exact_arithmetic` (the
:func:`full_precision` decorator):

* autocast is switched off for every device type, so float32 stays float32 even when the caller
  runs in ``torch.autocast(..., dtype=torch.bfloat16 / torch.float16)``;
* the float matrix products of the op (:func:`matmul`) are computed in float64 and returned in the
  input's dtype. float64 products are not affected by TF32 (``torch.backends.cuda.matmul.allow_tf32``,
  ``torch.set_float32_matmul_precision("medium" | "high")``) nor by oneDNN's bf16 float32 mode on
  CPU, so no global flag has to be touched (toggling them is not thread-safe and PyTorch refuses to
  mix its legacy and new precision APIs).

The integer parts of the codec use only element-wise float arithmetic on integers below 2**24 (or
float64 products), which no precision setting changes. Outside these regions (e.g. a network
calling :func:`jpegrestore.jpeg.block_dct` under autocast) the products follow the caller's settings.
"""

from __future__ import annotations

import functools
import threading
from contextlib import ExitStack, contextmanager
from typing import Callable, Iterator, TypeVar

import torch

_state = threading.local()
_AUTOCAST_DEVICES = ("cpu", "cuda")

F = TypeVar("F", bound=Callable)


def in_exact_region() -> bool:
    """Whether the current thread runs inside :func:`exact_arithmetic`."""
    return getattr(_state, "depth", 0) > 0


@contextmanager
def exact_arithmetic() -> Iterator[None]:
    """Autocast off on every device type, and :func:`matmul` in float64, until the block ends."""
    with ExitStack() as stack:
        for device_type in _AUTOCAST_DEVICES:
            if device_type == "cuda" and not torch.cuda.is_available():
                continue
            stack.enter_context(torch.autocast(device_type, enabled=False))
        _state.depth = getattr(_state, "depth", 0) + 1
        try:
            yield
        finally:
            _state.depth -= 1


def full_precision(fn: F) -> F:
    """Decorator: run ``fn`` inside :func:`exact_arithmetic`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with exact_arithmetic():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def matmul(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``x @ m`` in x's dtype; inside :func:`exact_arithmetic` computed in float64 (differentiable)."""
    if in_exact_region() and x.dtype != torch.float64:
        return (x.double() @ m.to(device=x.device, dtype=torch.float64)).to(x.dtype)
    return x @ m.to(device=x.device, dtype=x.dtype)
