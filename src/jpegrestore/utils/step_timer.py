"""Training throughput of a run, measured by a callback: seconds per batch and peak device memory, per rank."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch


def batch_images(batch: Any) -> int:
    """Images in a training batch: the leading size of its first tensor (``batch["target"]`` for our datasets)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    values = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, Sequence) else ()
    if isinstance(batch, Mapping) and isinstance(batch.get("target"), torch.Tensor):
        return int(batch["target"].shape[0])
    for value in values:
        if isinstance(value, torch.Tensor) and value.ndim > 0:
            return int(value.shape[0])
    raise ValueError(f"cannot tell the number of images in a batch of type {type(batch).__name__}")


class StepTimer(pl.Callback):
    """Times every training batch (the wall time between the ends of consecutive batches: data loading, the
    device-side JPEG compression, forward, backward and the optimizer steps of that batch) and writes, at the end
    of fitting, ``dirpath/rank{r}.json`` on every rank::

        {"rank", "world_size", "device", "global_step", "images_per_batch", "warmup",
         "batch_seconds": [...],          # the batches after the first ``warmup`` ones
         "peak_memory_bytes": int | null}  # torch.cuda.max_memory_allocated during fitting (null off CUDA)

    Validation is not counted (it runs after a batch has ended and before the next one starts, and the time it
    takes is left out). Add it with ``+callbacks.step_timer._target_=jpegrestore.utils.step_timer.StepTimer
    +callbacks.step_timer.dirpath=<dir>``.
    """

    def __init__(self, dirpath: str | Path, warmup: int = 1) -> None:
        super().__init__()
        if warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {warmup}")
        self.dirpath = Path(dirpath)
        self.warmup = int(warmup)
        self.seconds: list[float] = []
        self.images = 0
        self._last: float | None = None
        self._batches = 0

    def _now(self, pl_module: pl.LightningModule) -> float:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        return time.perf_counter()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)
        self._last = self._now(pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        now = self._now(pl_module)
        self._batches += 1
        if self._batches > self.warmup and self._last is not None:
            self.seconds.append(now - self._last)
        self.images = batch_images(batch)
        self._last = now

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit":
            self._last = self._now(pl_module)  # the next batch is timed from here: validation is left out

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        on_cuda = pl_module.device.type == "cuda"
        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "device": str(pl_module.device),
            "global_step": trainer.global_step,
            "images_per_batch": self.images,
            "warmup": self.warmup,
            "batch_seconds": self.seconds,
            "peak_memory_bytes": torch.cuda.max_memory_allocated(pl_module.device) if on_cuda else None,
        }
        self.dirpath.mkdir(parents=True, exist_ok=True)
        (self.dirpath / f"rank{trainer.global_rank}.json").write_text(json.dumps(record, indent=1) + "\n")
