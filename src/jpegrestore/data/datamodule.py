"""``RestorationDataModule``: sources -> scanned datasets -> loaders -> JPEG-degraded batches on device.

Batches (train, val and test alike, after ``on_after_batch_transfer``):
    "target"  float [B, C, H, W] in [0, 1] (C = 3, or 1 with ``grayscale``)
    "quality" LongTensor[B] in 1..100
    "input"   float [B, C, H, W] in [0, 1], the decoded JPEG of "target"
    "coeffs"  jpeg.Coefficients of that JPEG
    "name"    list of str (val and test only)
"""

from __future__ import annotations

import logging
from typing import Any, Optional, Sequence

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader

from jpegrestore.checkpoints import OUTSIDE_RANGE_POLICIES

from .datasets import EpochSampler, EvalDataset, RandomCropDataset
from .degrade import check_compression, collate, compress_batch
from .quality import ChoiceQuality, QualitySampler, UniformQuality, check_quality
from .scan import ScanReport, scan_source
from .shards import ShardedSource, StreamCounts, StreamingCropDataset
from .resolve import resolve_source
from .sources import ImageSource

log = logging.getLogger(__name__)


def _as_quality_sampler(quality: Any) -> QualitySampler:
    """A sampler from a sampler, an int (fixed), a list (choice) or a Hydra config; None = uniform 10..100."""
    if quality is None:
        return UniformQuality(10, 100)
    if isinstance(quality, QualitySampler):
        return quality
    if isinstance(quality, int) and not isinstance(quality, bool):
        return ChoiceQuality([quality])
    if hasattr(quality, "keys") and "_target_" in quality:
        from hydra.utils import instantiate

        built = instantiate(quality)
        if isinstance(built, QualitySampler):
            return built
        raise ValueError(f"quality _target_ {quality['_target_']!r} did not build a QualitySampler")
    if isinstance(quality, Sequence) and not isinstance(quality, str):
        return ChoiceQuality(list(quality))
    raise ValueError(f"quality must be a QualitySampler, an int, a list or a Hydra config, got {quality!r}")


def _world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


class RestorationDataModule(pl.LightningDataModule):
    """Random crops for training and fixed (image, quality) pairs for val/test, compressed on the fly.

    Args:
        train_source, val_source, test_source: ImageSource objects, Hydra configs, "sample" (the bundled
            photos, split by stage), "sample:<split>", a folder path, or None (stage not available).
        crop_size: training crop side (multiple of 8); smaller images are skipped.
        val_crop_size, test_crop_size: centre crop side for val/test; None = full images (batch size 1).
        misalign_prob: probability that a training crop's offset is not a multiple of 8. The crop is compressed
            afresh with its grid at the crop's origin, so this matters only for sources that are JPEGs
            themselves; CODiff's shifted grid is ``data.shift.shifted_crop`` (after compression).
        flips, rotations: random flips and 90-degree rotations of training crops.
        quality: training quality sampler (see ``quality.py``), an int, a list, or None (uniform 10..100).
        val_qualities, test_qualities: qualities evaluated for every image (test defaults to val's).
        subsampling: "4:2:0", "4:2:2" or "4:4:4".
        grayscale: targets are the JFIF luma [B, 1, H, W] (QGAC stage 1).
        compression: "device" (``jpegrestore.jpeg`` after transfer) or "pillow" (libjpeg in the workers).
        rounding: rounding of the device codec: "exact" (libjpeg-identical), "ste" or "cubic".
        batch_size, val_batch_size, test_batch_size: loader batch sizes (eval default: batch_size).
        num_workers, pin_memory, persistent_workers: DataLoader options (persistent default: workers > 0).
        samples_per_epoch: training crops per epoch, images drawn with replacement; None = each image once.
        seed: base seed; every random choice is a pure function of (seed, epoch, sample index).
        scan: "full" (decode every file at setup) or "header" (open only; failures counted at load time).
        scan_workers: threads used by the scan.
        outside_range: recorded in checkpoints as what restore / evaluate do by default with JPEGs outside the
            training qualities and layouts ("warn", "skip": pass through as plain JPEG, "run"); None: their own
            default (warn).
    """

    def __init__(
        self,
        train_source: Any = "sample",
        val_source: Any = "sample",
        test_source: Any = "sample",
        crop_size: int = 256,
        val_crop_size: Optional[int] = 256,
        test_crop_size: Optional[int] = None,
        misalign_prob: float = 0.0,
        flips: bool = True,
        rotations: bool = True,
        quality: Any = None,
        val_qualities: Sequence[int] = (10, 20, 40),
        test_qualities: Optional[Sequence[int]] = None,
        subsampling: str = "4:2:0",
        grayscale: bool = False,
        compression: str = "device",
        rounding: str = "exact",
        batch_size: int = 32,
        val_batch_size: Optional[int] = None,
        test_batch_size: Optional[int] = None,
        num_workers: int = 0,
        samples_per_epoch: Optional[int] = None,
        seed: int = 0,
        pin_memory: bool = False,
        persistent_workers: Optional[bool] = None,
        scan: str = "full",
        scan_workers: int = 4,
        outside_range: Optional[str] = None,
    ) -> None:
        super().__init__()
        check_compression(compression, subsampling)
        if outside_range not in (None, *OUTSIDE_RANGE_POLICIES):
            raise ValueError(
                f"outside_range must be null or one of {list(OUTSIDE_RANGE_POLICIES)}, got {outside_range!r}")
        self.outside_range = outside_range
        for key, value in (("batch_size", batch_size), ("val_batch_size", val_batch_size),
                           ("test_batch_size", test_batch_size)):
            if value is not None and int(value) <= 0:
                raise ValueError(f"{key} must be positive, got {value}")
        if int(num_workers) < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if scan not in ("full", "header"):
            raise ValueError(f"scan must be 'full' or 'header', got {scan!r}")
        self.source_specs = {"train": train_source, "val": val_source, "test": test_source}
        self.crop_size = int(crop_size)
        self.eval_crop_sizes = {
            "val": None if val_crop_size is None else int(val_crop_size),
            "test": None if test_crop_size is None else int(test_crop_size),
        }
        self.misalign_prob, self.flips, self.rotations = float(misalign_prob), bool(flips), bool(rotations)
        self.quality = _as_quality_sampler(quality)
        val_qualities = [check_quality(q, "val_qualities[i]") for q in val_qualities]
        if test_qualities is not None:
            test_qualities = [check_quality(q, "test_qualities[i]") for q in test_qualities]
        self.eval_qualities = {"val": val_qualities, "test": test_qualities or val_qualities}
        self.subsampling, self.grayscale = subsampling, bool(grayscale)
        self.compression, self.rounding = compression, rounding
        self.batch_size = int(batch_size)
        self.eval_batch_sizes = {"val": val_batch_size or batch_size, "test": test_batch_size or batch_size}
        self.num_workers, self.pin_memory = int(num_workers), bool(pin_memory)
        self.persistent_workers = self.num_workers > 0 if persistent_workers is None else bool(persistent_workers)
        self.samples_per_epoch = None if samples_per_epoch is None else int(samples_per_epoch)
        self.seed = int(seed)
        self.scan_mode, self.scan_workers = scan, int(scan_workers)
        self.sources: dict[str, Optional[ImageSource]] = {}
        self.scan_reports: dict[str, ScanReport] = {}
        self.datasets: dict[str, Any] = {}
        self.stream_counts: dict[str, StreamCounts] = {}

    def training_domain(self) -> dict[str, list]:
        """What a model trained on this data has seen: ``{"qualities": [lowest, highest], "subsamplings": [...]}``
        ("gray" for grayscale targets), plus ``outside_range`` when set. Checkpoints record it; restore and evaluate
        warn outside it, or do what ``outside_range`` says."""
        support = self.quality.support()
        domain = {"qualities": [support[0], support[-1]],
                  "subsamplings": ["gray"] if self.grayscale else [self.subsampling]}
        if self.outside_range is not None:
            domain["outside_range"] = self.outside_range
        return domain

    # ------------------------------------------------------------------------------------------- setup
    def _source(self, split: str) -> Optional[ImageSource]:
        if split not in self.sources:
            self.sources[split] = resolve_source(self.source_specs[split], split)
        return self.sources[split]

    def _scan(self, split: str, min_size: int) -> ScanReport:
        if split not in self.scan_reports:
            source = self._source(split)
            report = scan_source(source, min_size=min_size, mode=self.scan_mode, workers=self.scan_workers)
            self.scan_reports[split] = report
            if self.trainer is None or self.trainer.is_global_zero:  # every rank scans; one of them tells
                (log.warning if report.num_skipped else log.info)("%s data: %s", split, report.summary())
        return self.scan_reports[split]

    def _streaming(self) -> bool:
        return isinstance(self._source("train"), ShardedSource)

    def _streaming_dataset(self, rank: int, world: int, epoch: int, grayscale: Optional[bool] = None
                           ) -> StreamingCropDataset:
        """The train split of a sharded source for one rank and epoch (shared read/skip counters); ``grayscale``
        overrides the datamodule's."""
        source = self._source("train")
        if "train" not in self.stream_counts:
            self.stream_counts["train"] = StreamCounts(source.where, self.crop_size)
        return StreamingCropDataset(
            source, self.samples_per_epoch, rank=rank, world_size=world, epoch=epoch,
            counts=self.stream_counts["train"], crop_size=self.crop_size, quality=self.quality,
            misalign_prob=self.misalign_prob, flips=self.flips, rotations=self.rotations,
            grayscale=self.grayscale if grayscale is None else grayscale, compression=self.compression,
            subsampling=self.subsampling, seed=self.seed,
        )

    def _build(self, split: str) -> None:
        if split in self.datasets or self._source(split) is None:
            return
        if split == "train" and self._streaming():
            if self.samples_per_epoch is None:
                raise ValueError("data.samples_per_epoch is required with a sharded source (crops per epoch)")
            if self.trainer is not None and not self.trainer.reload_dataloaders_every_n_epochs:
                # one streaming dataset per epoch (its epoch seeds the crops and the shard order)
                self.trainer.reload_dataloaders_every_n_epochs = 1
            return
        if split == "train":
            self.datasets[split] = RandomCropDataset(
                self._source(split), self._scan(split, self.crop_size), self.crop_size, self.quality,
                samples_per_epoch=self.samples_per_epoch, misalign_prob=self.misalign_prob, flips=self.flips,
                rotations=self.rotations, grayscale=self.grayscale, compression=self.compression,
                subsampling=self.subsampling, seed=self.seed,
            )
        else:
            crop_size = self.eval_crop_sizes[split]
            self.datasets[split] = EvalDataset(
                self._source(split), self._scan(split, crop_size or 1), crop_size, self.eval_qualities[split],
                grayscale=self.grayscale, compression=self.compression, subsampling=self.subsampling,
            )

    def setup(self, stage: Optional[str] = None) -> None:
        """Resolve and scan the sources the stage needs ("fit": train + val, "validate", "test", "predict")."""
        if stage in (None, "fit"):
            if self._source("train") is None:
                raise ValueError("RestorationDataModule: train_source is required for fitting")
            self._build("train")
        if stage in (None, "fit", "validate"):
            self._build("val")
        if stage in (None, "test", "predict"):
            self._build("test")

    # ------------------------------------------------------------------------------------------- loaders
    def _loader(self, dataset, batch_size: int, sampler=None) -> DataLoader:
        # The training loader is stateful (torchdata): Lightning saves its position in every checkpoint, so a run
        # resumed from a mid-epoch checkpoint continues with the very next batch.
        loader_class = StatefulDataLoader if sampler is not None else DataLoader
        return loader_class(
            dataset, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=self.num_workers,
            collate_fn=collate, pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            drop_last=sampler is not None and len(sampler) >= batch_size,
        )

    def train_dataloader(self) -> DataLoader:
        self._build("train")
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else _world()
        epoch = trainer.current_epoch if trainer is not None else 0
        if self._source("train") is not None and self._streaming():
            return StatefulDataLoader(
                self._streaming_dataset(rank, world, epoch), batch_size=self.batch_size, num_workers=self.num_workers,
                collate_fn=collate, pin_memory=self.pin_memory, drop_last=True,
            )
        if "train" not in self.datasets:
            raise ValueError("RestorationDataModule: no train_source configured")
        sampler = EpochSampler(self.datasets["train"], num_replicas=world, rank=rank, epoch=epoch,
                               epoch_of=None if trainer is None else self._current_epoch)
        return self._loader(self.datasets["train"], self.batch_size, sampler)

    def _current_epoch(self) -> int:
        return self.trainer.current_epoch

    def statistics_dataloader(self) -> DataLoader:
        """The whole first-epoch training stream in colour, on one process (no DDP sharding).

        Same crops, qualities and subsampling as ``train_dataloader`` at epoch 0 on a single process, but
        always RGB (also with ``grayscale=True``), so every component's DCT statistics can be measured.
        """
        source = self._source("train")
        if source is None:
            raise ValueError("RestorationDataModule: no train_source configured")
        if self._streaming():
            return StatefulDataLoader(self._streaming_dataset(0, 1, 0, grayscale=False), batch_size=self.batch_size,
                                      num_workers=self.num_workers, collate_fn=collate, drop_last=True)
        dataset = RandomCropDataset(
            source, self._scan("train", self.crop_size), self.crop_size, self.quality,
            samples_per_epoch=self.samples_per_epoch, misalign_prob=self.misalign_prob, flips=self.flips,
            rotations=self.rotations, grayscale=False, compression=self.compression,
            subsampling=self.subsampling, seed=self.seed,
        )
        return self._loader(dataset, self.batch_size, EpochSampler(dataset, num_replicas=1, rank=0, epoch=0))

    def _eval_loader(self, split: str):
        self._build(split)
        if split not in self.datasets:
            return []
        batch_size = 1 if self.eval_crop_sizes[split] is None else self.eval_batch_sizes[split]
        return self._loader(self.datasets[split], batch_size)

    def val_dataloader(self):
        return self._eval_loader("val")

    def test_dataloader(self):
        return self._eval_loader("test")

    def predict_dataloader(self):
        return self._eval_loader("test")

    # ------------------------------------------------------------------------------------------- batches
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """On the device: add "coeffs" and "input" (``compression="device"``; pillow batches have them)."""
        if isinstance(batch, dict) and "target" in batch and "coeffs" not in batch:
            batch = compress_batch(batch, subsampling=self.subsampling, rounding=self.rounding)
        return batch

    # ------------------------------------------------------------------------------------------- skip report
    @property
    def skipped_files(self) -> dict[str, dict[str, int]]:
        """Skipped files (or streamed records) per split and reason, e.g. {"train": {"corrupt": 2}, "val": {}}."""
        reports = {**self.scan_reports, **self.stream_counts}
        return {split: report.counts() for split, report in reports.items()}

    def skip_summary(self) -> str:
        """One line, e.g. "train: skipped 3 of 12 files in /data: 2 corrupt, 1 cmyk; val: skipped 0 of 2 ..."."""
        reports = {**self.scan_reports, **self.stream_counts}
        return "; ".join(f"{split}: {report.summary()}" for split, report in reports.items())
