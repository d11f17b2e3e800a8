"""Quality-factor samplers and the seeded random streams the data pipeline draws from.

Every random choice for sample ``index`` of epoch ``epoch`` comes from ``stream_rng(seed, epoch, index, stream)``,
a pure function of its arguments. A resumed run therefore continues the same stream, and DataLoader workers or
DDP ranks need no shared state.

Samplers are Hydra-instantiable, e.g. ``{_target_: jpegrestore.data.quality.UniformQuality, low: 10, high: 100}``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

import numpy as np

# Stream ids keep the draws of different purposes independent of each other and of option changes.
STREAMS = {"image": 1, "crop": 2, "flip": 3, "quality": 4, "replace": 5, "permutation": 6, "shards": 7}

MIN_QUALITY, MAX_QUALITY = 1, 100


def stream_rng(seed: int, epoch: int, index: int, stream: str) -> np.random.Generator:
    """A numpy Generator that depends only on (seed, epoch, index, stream); all ints must be >= 0."""
    if stream not in STREAMS:
        raise ValueError(f"unknown random stream {stream!r}; known: {sorted(STREAMS)}")
    for key, value in (("seed", seed), ("epoch", epoch), ("index", index)):
        if int(value) < 0:
            raise ValueError(f"stream_rng: {key} must be >= 0, got {value}")
    return np.random.default_rng([int(seed), int(epoch), int(index), STREAMS[stream]])


def check_quality(value: int, what: str = "quality") -> int:
    """Return ``value`` as int, or raise ValueError when it is not an integer in 1..100."""
    if isinstance(value, bool) or int(value) != value or not MIN_QUALITY <= int(value) <= MAX_QUALITY:
        raise ValueError(f"{what} must be an integer in {MIN_QUALITY}..{MAX_QUALITY}, got {value!r}")
    return int(value)


class QualitySampler(ABC):
    """Draws one JPEG quality factor (int in 1..100) from a numpy Generator."""

    @abstractmethod
    def sample(self, rng: np.random.Generator) -> int:
        """One quality factor drawn with ``rng``."""

    def __call__(self, seed: int, epoch: int, index: int) -> int:
        """The quality of sample ``index`` in ``epoch``: a pure function of (seed, epoch, index)."""
        return self.sample(stream_rng(seed, epoch, index, "quality"))

    @abstractmethod
    def support(self) -> list[int]:
        """Every quality this sampler can draw, ascending."""


class UniformQuality(QualitySampler):
    """Uniform over the integers ``low..high`` (both inclusive)."""

    def __init__(self, low: int = 10, high: int = 100) -> None:
        self.low = check_quality(low, "UniformQuality.low")
        self.high = check_quality(high, "UniformQuality.high")
        if self.low > self.high:
            raise ValueError(f"UniformQuality: low ({low}) must not exceed high ({high})")

    def sample(self, rng: np.random.Generator) -> int:
        return int(rng.integers(self.low, self.high + 1))

    def support(self) -> list[int]:
        return list(range(self.low, self.high + 1))

    def __repr__(self) -> str:
        return f"UniformQuality(low={self.low}, high={self.high})"


class ChoiceQuality(QualitySampler):
    """Uniform over a list of values (repeat a value to weight it); one value gives a fixed quality."""

    def __init__(self, values: Sequence[int] = (10, 20, 30, 40, 50, 60)) -> None:
        if isinstance(values, (int, str)) or len(values) == 0:
            raise ValueError(f"ChoiceQuality.values must be a non-empty list of qualities, got {values!r}")
        self.values = [check_quality(v, "ChoiceQuality.values[i]") for v in values]

    def sample(self, rng: np.random.Generator) -> int:
        return self.values[int(rng.integers(len(self.values)))]

    def support(self) -> list[int]:
        return sorted(set(self.values))

    def __repr__(self) -> str:
        return f"ChoiceQuality(values={self.values})"


class MixtureQuality(QualitySampler):
    """Picks one of ``components`` with probabilities ``weights`` (normalised), then samples from it."""

    def __init__(self, components: Sequence[QualitySampler], weights: Sequence[float]) -> None:
        components = list(components)
        weights = [float(w) for w in weights]
        if not components or len(components) != len(weights):
            raise ValueError(
                f"MixtureQuality needs as many weights as components, got {len(components)} and {len(weights)}"
            )
        if any(not isinstance(c, QualitySampler) for c in components):
            raise ValueError("MixtureQuality.components must be QualitySampler objects")
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"MixtureQuality.weights must be >= 0 with a positive sum, got {weights}")
        self.components = components
        total = sum(weights)
        self.weights = [w / total for w in weights]

    def sample(self, rng: np.random.Generator) -> int:
        which = int(rng.choice(len(self.components), p=self.weights))
        return self.components[which].sample(rng)

    def support(self) -> list[int]:
        return sorted({q for c, w in zip(self.components, self.weights) if w > 0 for q in c.support()})

    def __repr__(self) -> str:
        return f"MixtureQuality(components={self.components}, weights={self.weights})"


class CODiffQuality(MixtureQuality):
    """CODiff's training mixture: uniform 8..96 with probability 1/4, else one of {10, 20, 30, 40, 50, 60}."""

    def __init__(
        self,
        low: int = 8,
        high: int = 96,
        values: Sequence[int] = (10, 20, 30, 40, 50, 60),
        uniform_prob: float = 0.25,
    ) -> None:
        if not 0.0 <= uniform_prob <= 1.0:
            raise ValueError(f"CODiffQuality.uniform_prob must be in [0, 1], got {uniform_prob}")
        super().__init__([UniformQuality(low, high), ChoiceQuality(values)], [uniform_prob, 1.0 - uniform_prob])
