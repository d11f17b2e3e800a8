"""Mixed precision: the parts of a computation that stay in float32 when the rest runs under autocast.

Under ``trainer.precision=bf16-mixed`` (or ``16-mixed``) Lightning runs every training and validation step inside
``torch.autocast``. The networks' forward passes are meant to run there; the JPEG operator, the losses, the
metrics and the frozen networks the authors keep in full precision are not. They go through :func:`float32_region`
(a block) or :func:`in_float32` (a function), which turn autocast off on every device type and compute on float32
copies of half-precision inputs. Outside autocast both are no-ops apart from that cast, so a float32 run is
unchanged.

    restored = self.net(batch["coeffs"])          # autocast: bf16 activations
    loss = self.loss(restored, batch["target"])   # self.loss.forward is decorated with @in_float32
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch

F = TypeVar("F", bound=Callable[..., Any])

_HALF = (torch.float16, torch.bfloat16)


def _autocast_device_types() -> list[str]:
    types = ["cpu"]
    if torch.cuda.is_available():
        types.append("cuda")
    return types


@contextlib.contextmanager
def float32_region() -> Iterator[None]:
    """A block where autocast is off on every device type (CPU, and CUDA when present): float32 tensors are
    computed in float32. Tensors made in half precision before the block keep their dtype: cast them with
    :func:`to_float32` (or use :func:`in_float32`)."""
    with contextlib.ExitStack() as stack:
        for device_type in _autocast_device_types():
            stack.enter_context(torch.autocast(device_type, enabled=False))
        yield


def to_float32(value: Any) -> Any:
    """``value`` with every float16 / bfloat16 tensor cast to float32, through lists, tuples and dicts (other
    objects, float32/float64 and integer tensors are returned as they are)."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.dtype in _HALF else value
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(to_float32(v) for v in value)
    if isinstance(value, dict):
        return {k: to_float32(v) for k, v in value.items()}
    return value


def in_float32(fn: F) -> F:
    """Decorator: ``fn`` runs in a :func:`float32_region` on :func:`to_float32` copies of its arguments (a method's
    ``self`` passes through unchanged)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with float32_region():
            return fn(*to_float32(args), **to_float32(kwargs))

    return wrapper  # type: ignore[return-value]
