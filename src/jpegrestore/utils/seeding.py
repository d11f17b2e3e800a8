"""Random draws keyed by integers, so that a training step draws the same numbers when it runs again.

Lightning restores weights, optimizers, schedulers and the data loader's position on resume, but not the global
torch RNG. Draws inside a training step (noise, timesteps, crop offsets) therefore come from a generator seeded
by the step, the batch index and the rank: a resumed run repeats the uninterrupted run's draws exactly, DDP ranks
and the micro-batches of an accumulated step draw differently, and nothing depends on the order of other draws.
"""

from __future__ import annotations

import hashlib
import struct

import torch


def _as_int64(key: int | str) -> int:
    """An int key as it is; a str key (e.g. an image's name) as the signed 64-bit BLAKE2b digest of its UTF-8."""
    if isinstance(key, str):
        digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8, person=b"jpegrestore-key").digest()
        return int.from_bytes(digest, "little", signed=True)
    return int(key)


def keyed_seed(*keys: int | str) -> int:
    """A seed in [0, 2^63): BLAKE2b of the keys as signed 64-bit integers (str keys first hashed to one, see
    ``_as_int64``). Different key tuples give different seeds, also when one ends in zeros where the other stops
    (unlike NumPy's SeedSequence entropy)."""
    data = struct.pack(f"<{len(keys)}q", *(_as_int64(k) for k in keys))
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") >> 1


def keyed_generator(*keys: int | str, device: torch.device | str | None = None) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` (default CPU) seeded with :func:`keyed_seed` of ``keys``."""
    return torch.Generator(device=device or "cpu").manual_seed(keyed_seed(*keys))
