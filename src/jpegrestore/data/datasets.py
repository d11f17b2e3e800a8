"""Map-style datasets of random training crops and of (image, quality) evaluation pairs.

Training items are keyed by ``(epoch, index)`` (``EpochSampler`` yields such keys; a bare int means epoch 0).
Everything about item ``index`` of ``epoch`` (image, crop, flips, quality, replacement of a file that fails
to load) is a pure function of (seed, epoch, index).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from .degrade import check_compression, pillow_jpeg
from .quality import QualitySampler, check_quality, stream_rng
from .scan import BadImageError, ScanReport, load_rgb
from .sources import ImageSource
from .transforms import (
    center_crop_offset, crop, random_crop_offset, random_flip_rotate, rgb_to_luma, to_tensor_image,
)

log = logging.getLogger(__name__)

MAX_REPLACEMENTS = 64
Key = Union[int, tuple[int, int]]


class _ReportedImages:
    """Loads usable images of a source; failures are counted in the report and raise BadImageError."""

    def __init__(self, source: ImageSource, report: ScanReport, min_size: int) -> None:
        self.source, self.report, self.min_size = source, report, min_size

    def __len__(self) -> int:
        return len(self.report.usable)

    def load(self, position: int) -> np.ndarray:
        if self.report.has_failed(position):
            raise BadImageError("corrupt", self.source.describe(self.report.usable[position]), "failed before")
        try:
            return load_rgb(self.source, self.report.usable[position], self.min_size)
        except BadImageError as error:
            log.warning("skipping %s at load time", error)
            self.report.record_load_failure(position, error.reason)
            raise

    def name(self, position: int) -> str:
        return self.source.name(self.report.usable[position])


def _finish_sample(
    image: np.ndarray, quality: int, grayscale: bool, compression: str, subsampling: str
) -> dict[str, Any]:
    """uint8 [H, W, 3] crop -> sample dict ("target", "quality", and for pillow "input", "coeffs")."""
    if grayscale:
        image = rgb_to_luma(image)
    sample: dict[str, Any] = {"target": to_tensor_image(image), "quality": torch.tensor(quality, dtype=torch.long)}
    if compression == "pillow":
        decoded, coeffs = pillow_jpeg(image, quality, subsampling)
        sample["input"] = to_tensor_image(decoded)
        sample["coeffs"] = coeffs
    return sample


class RandomCropDataset(Dataset):
    """Random ``crop_size`` crops of a source's usable images, with a quality factor each.

    Args:
        source, report: the images and their scan report (``scan.scan_source``).
        crop_size: crop side, a multiple of 8 (so flips and rotations keep the block grid).
        quality: sampler of the quality factor.
        samples_per_epoch: crops per epoch, images drawn with replacement; None = each image once per epoch
            (in a per-epoch random order).
        misalign_prob: probability that the crop offset is not a multiple of 8.
        flips, rotations: random flips / 90-degree rotations.
        grayscale: target is the JFIF luma [1, S, S] instead of RGB [3, S, S].
        compression: "device" (the datamodule compresses after transfer) or "pillow" (done here).
        subsampling: chroma subsampling for "pillow".
        seed: base seed of every random stream.

    Item: {"target": float [C, S, S] in [0, 1], "quality": long scalar} (+ "input", "coeffs" for "pillow").
    """

    def __init__(
        self,
        source: ImageSource,
        report: ScanReport,
        crop_size: int,
        quality: QualitySampler,
        samples_per_epoch: Optional[int] = None,
        misalign_prob: float = 0.0,
        flips: bool = True,
        rotations: bool = True,
        grayscale: bool = False,
        compression: str = "device",
        subsampling: str = "4:2:0",
        seed: int = 0,
    ) -> None:
        if int(crop_size) <= 0 or int(crop_size) % 8:
            raise ValueError(f"crop_size must be a positive multiple of 8, got {crop_size}")
        if not 0.0 <= float(misalign_prob) <= 1.0:
            raise ValueError(f"misalign_prob must be in [0, 1], got {misalign_prob}")
        if samples_per_epoch is not None and int(samples_per_epoch) <= 0:
            raise ValueError(f"samples_per_epoch must be positive or None, got {samples_per_epoch}")
        if not isinstance(quality, QualitySampler):
            raise ValueError(f"quality must be a QualitySampler, got {type(quality).__name__}")
        if int(seed) < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        check_compression(compression, subsampling)
        self.images = _ReportedImages(source, report, int(crop_size))
        self.crop_size = int(crop_size)
        self.quality = quality
        self.samples_per_epoch = None if samples_per_epoch is None else int(samples_per_epoch)
        self.misalign_prob = float(misalign_prob)
        self.flips, self.rotations, self.grayscale = bool(flips), bool(rotations), bool(grayscale)
        self.compression, self.subsampling = compression, subsampling
        self.seed = int(seed)
        self._permutation: Optional[tuple[int, np.ndarray]] = None

    def __len__(self) -> int:
        return self.samples_per_epoch if self.samples_per_epoch is not None else len(self.images)

    def _first_choice(self, epoch: int, index: int) -> int:
        if self.samples_per_epoch is not None:
            return int(stream_rng(self.seed, epoch, index, "image").integers(len(self.images)))
        if self._permutation is None or self._permutation[0] != epoch:
            order = stream_rng(self.seed, epoch, 0, "permutation").permutation(len(self.images))
            self._permutation = (epoch, order)
        return int(self._permutation[1][index % len(self.images)])

    def _load(self, epoch: int, index: int) -> np.ndarray:
        position = self._first_choice(epoch, index)
        replacements = stream_rng(self.seed, epoch, index, "replace")
        for _ in range(MAX_REPLACEMENTS):
            try:
                return self.images.load(position)
            except BadImageError:
                position = int(replacements.integers(len(self.images)))
        raise RuntimeError(
            f"{MAX_REPLACEMENTS} images in a row failed to load from {self.images.report.where}: "
            f"{self.images.report.summary()}"
        )

    def __getitem__(self, key: Key) -> dict[str, Any]:
        epoch, index = (0, key) if isinstance(key, (int, np.integer)) else (int(key[0]), int(key[1]))
        return random_crop_sample(self, self._load(epoch, index), epoch, index)


def random_crop_sample(options: Any, image: np.ndarray, epoch: int, index: int) -> dict[str, Any]:
    """The training sample ``index`` of ``epoch`` cut from ``image`` (uint8 [H, W, 3]): crop offset (aligned or
    not), flips, rotation and quality all drawn from streams of (``options.seed``, epoch, index).

    ``options`` carries crop_size, quality, misalign_prob, flips, rotations, grayscale, compression, subsampling
    and seed (a :class:`RandomCropDataset` or a streaming dataset).
    """
    rng = stream_rng(options.seed, epoch, index, "crop")
    misalign = bool(rng.random() < options.misalign_prob)
    top, left = random_crop_offset(rng, image.shape[0], image.shape[1], options.crop_size, misalign)
    patch = crop(image, top, left, options.crop_size)
    patch = random_flip_rotate(patch, stream_rng(options.seed, epoch, index, "flip"), options.flips,
                               options.rotations)
    quality = check_quality(options.quality(options.seed, epoch, index))
    return _finish_sample(patch, quality, options.grayscale, options.compression, options.subsampling)


class EvalDataset(Dataset):
    """Every (image, quality) pair: item ``k`` is image ``k // len(qualities)`` at ``qualities[k % len]``.

    Args:
        crop_size: deterministic centre crop (offsets rounded down to multiples of 8); None = full image.
        qualities: quality factors to evaluate.
        grayscale, compression, subsampling: as for ``RandomCropDataset``.

    Item: {"target": float [C, H, W], "quality": long scalar, "name": str} (+ "input", "coeffs" for "pillow").
    An image that fails to load is counted and replaced by the next usable one (its name is reported).
    """

    def __init__(
        self,
        source: ImageSource,
        report: ScanReport,
        crop_size: Optional[int],
        qualities: Sequence[int],
        grayscale: bool = False,
        compression: str = "device",
        subsampling: str = "4:2:0",
    ) -> None:
        if crop_size is not None and int(crop_size) <= 0:
            raise ValueError(f"evaluation crop size must be positive or None, got {crop_size}")
        if isinstance(qualities, (int, str)) or len(qualities) == 0:
            raise ValueError(f"evaluation qualities must be a non-empty list, got {qualities!r}")
        check_compression(compression, subsampling)
        self.crop_size = None if crop_size is None else int(crop_size)
        self.images = _ReportedImages(source, report, self.crop_size or 1)
        self.qualities = [check_quality(q, "evaluation quality") for q in qualities]
        self.grayscale, self.compression, self.subsampling = bool(grayscale), compression, subsampling
        self._cached: Optional[tuple[int, np.ndarray]] = None

    def __len__(self) -> int:
        return len(self.images) * len(self.qualities)

    def _load(self, position: int) -> tuple[int, np.ndarray]:
        for step in range(len(self.images)):
            candidate = (position + step) % len(self.images)
            if self._cached is not None and self._cached[0] == candidate:
                return self._cached
            try:
                self._cached = (candidate, self.images.load(candidate))
                return self._cached
            except BadImageError:
                continue
        report = self.images.report
        raise RuntimeError(f"no image of {report.where} could be loaded: {report.summary()}")

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= int(index) < len(self):
            raise IndexError(f"EvalDataset index {index} out of range 0..{len(self) - 1}")
        position, image = self._load(int(index) // len(self.qualities))
        if self.crop_size is not None:
            top, left = center_crop_offset(image.shape[0], image.shape[1], self.crop_size)
            image = crop(image, top, left, self.crop_size)
        quality = self.qualities[int(index) % len(self.qualities)]
        sample = _finish_sample(image, quality, self.grayscale, self.compression, self.subsampling)
        sample["name"] = self.images.name(position)
        return sample


class EpochSampler(DistributedSampler):
    """Yields ``(epoch, index)`` keys; rank ``r`` of ``W`` gets indices r, r + W, r + 2W, ...

    Being a DistributedSampler, Lightning leaves it in place under DDP. The union over ranks is the
    single-process stream (padded to a multiple of W, the padding indices being further samples).
    Lightning calls ``set_epoch`` at each epoch start; ``epoch`` sets the first epoch (for resumed runs).
    ``epoch_of`` (e.g. the trainer's ``current_epoch``), when given, is read at every ``iter`` instead: after
    a resume from an epoch-end checkpoint Lightning passes ``set_epoch`` one more than the epoch it runs.
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, epoch: int = 0,
                 epoch_of: Callable[[], int] | None = None) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.epoch = int(epoch)
        self.epoch_of = epoch_of

    def __iter__(self):
        epoch = self.epoch if self.epoch_of is None else int(self.epoch_of())
        return iter([(epoch, i) for i in range(self.rank, self.total_size, self.num_replicas)])

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.num_replicas)
