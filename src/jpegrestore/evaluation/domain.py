"""Keep a model to the JPEGs it was trained on: each file's quality is estimated from its tables and compared with
the qualities and chroma layouts its checkpoint recorded (``trained_on``).

A model trained at QF 10 only is about 0.9 dB worse than plain JPEG at QF 20 and up to 20 dB worse at QF 95, so a
file outside that range is never restored silently: ``warn`` restores it and says so, ``skip`` passes it through
as plain JPEG decoding, ``run`` restores it without a word.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from jpegrestore import jpeg
from jpegrestore.checkpoints import OUTSIDE_RANGE_POLICIES

POLICIES = OUTSIDE_RANGE_POLICIES


@dataclass(frozen=True)
class TrainingDomain:
    """Qualities ``low..high`` and chroma layouts ("4:2:0", ..., "gray") a model was trained on, and what its
    checkpoint asks done outside them by default (``policy``; None: warn)."""

    low: int
    high: int
    subsamplings: tuple[str, ...]
    policy: str | None = None

    @classmethod
    def from_metadata(cls, trained_on: Mapping[str, Any] | None) -> TrainingDomain | None:
        """From a checkpoint's ``trained_on`` entry; None when the checkpoint recorded none."""
        if not trained_on:
            return None
        low, high = (int(q) for q in trained_on["qualities"])
        return cls(low, high, tuple(trained_on.get("subsamplings", ())), trained_on.get("outside_range"))

    def describe(self) -> str:
        qualities = f"QF {self.low}" if self.low == self.high else f"QF {self.low}..{self.high}"
        return f"{qualities}, {'/'.join(self.subsamplings) or 'any layout'}"

    def outside(self, quality: int, layout: str) -> str | None:
        """Why a JPEG of (estimated) ``quality`` and ``layout`` lies outside the domain, or None."""
        reasons = []
        if not self.low <= quality <= self.high:
            reasons.append(f"quality about {quality}")
        if self.subsamplings and layout not in self.subsamplings:
            reasons.append(f"layout {layout}")
        return " and ".join(reasons) or None


def file_layout(coeffs: jpeg.Coefficients) -> str:
    """"gray" for a grayscale JPEG, else its chroma subsampling."""
    return "gray" if coeffs.cb is None else coeffs.subsampling


class DomainGuard:
    """Wraps a restoration method; JPEGs outside ``domain`` are warned about, passed through or run (``policy``).

    Call and ``sample`` follow the wrapped method's protocol (see ``evaluation.methods``); ``extras`` and
    ``last_samples`` are the wrapped method's, or empty when a batch was passed through.
    """

    def __init__(self, method: Any, domain: TrainingDomain, policy: str = "warn") -> None:
        if policy not in POLICIES:
            raise ValueError(f"outside_range must be one of {list(POLICIES)}, got {policy!r}")
        self.method, self.domain, self.policy = method, domain, policy
        self.name = method.name
        self.passed_through = 0
        self._skipped_last = False

    def __getattr__(self, key: str) -> Any:  # everything else (device, ckpt, ...) is the wrapped method's
        if key == "method":
            raise AttributeError(key)
        return getattr(self.method, key)

    @property
    def extras(self) -> dict[str, Tensor]:
        return {} if self._skipped_last else dict(getattr(self.method, "extras", None) or {})

    @property
    def last_samples(self) -> Tensor | None:
        return None if self._skipped_last else getattr(self.method, "last_samples", None)

    def outside(self, coeffs: jpeg.Coefficients) -> list[str | None]:
        """Per image of the batch: the reason it lies outside the domain, or None."""
        estimate = jpeg.estimate_quality(coeffs.qt)
        layout = file_layout(coeffs)
        return [self.domain.outside(int(q), layout) for q in estimate.quality.tolist()]

    def _check(self, coeffs: jpeg.Coefficients) -> list[bool]:
        reasons = self.outside(coeffs)
        if self.policy != "run":
            for reason in {r for r in reasons if r}:
                action = "passed through as plain JPEG" if self.policy == "skip" else "restored anyway"
                message = (f"JPEG with {reason} lies outside what {self.name} was trained on "
                           f"({self.domain.describe()}); {action} (outside_range={self.policy})")
                warnings.warn(message, stacklevel=3)
        return [r is not None and self.policy == "skip" for r in reasons]

    def __call__(self, coeffs: jpeg.Coefficients, jpeg_image: Tensor, **options: Any) -> Tensor:
        """The wrapped method's call (``options``, e.g. ``keys``, passed on) on the JPEGs the policy restores."""
        skip = self._check(coeffs)
        self._skipped_last = all(skip)
        if self._skipped_last:
            self.passed_through += len(skip)
            return jpeg_image
        restored = self.method(coeffs, jpeg_image, **options)
        if any(skip):
            self.passed_through += sum(skip)
            keep = torch.tensor(skip, device=restored.device)[:, None, None, None]
            restored = torch.where(keep, jpeg_image.to(restored), restored)
        return restored

    @property
    def sample(self):
        """The wrapped method's ``sample`` with the same check (AttributeError for a deterministic method)."""
        getattr(self.method, "sample")
        return self._sample

    def _sample(self, coeffs: jpeg.Coefficients, jpeg_image: Tensor, num_samples: int,
                generator: torch.Generator | None = None, **options: Any) -> Tensor:
        skip = self._check(coeffs)
        if all(skip):
            return jpeg_image[None].expand(num_samples, *jpeg_image.shape)
        draws = self.method.sample(coeffs, jpeg_image, num_samples, generator=generator, **options)
        if any(skip):
            keep = torch.tensor(skip, device=draws.device)[None, :, None, None, None]
            draws = torch.where(keep, jpeg_image[None].to(draws), draws)
        return draws


def guard(method: Any, trained_on: Mapping[str, Any] | None, policy: str | None = None) -> Any:
    """``method`` wrapped in a :class:`DomainGuard` when the checkpoint recorded its training domain. ``policy``
    None takes the checkpoint's recorded default (``trained_on["outside_range"]``), else "warn"."""
    if policy is not None and policy not in POLICIES:
        raise ValueError(f"outside_range must be one of {list(POLICIES)}, got {policy!r}")
    domain = TrainingDomain.from_metadata(trained_on)
    return method if domain is None else DomainGuard(method, domain, policy or domain.policy or "warn")


def qualities_outside(domain: TrainingDomain, qualities: Sequence[int]) -> list[int]:
    """The evaluation qualities outside a training domain."""
    return [q for q in qualities if not domain.low <= q <= domain.high]
