"""The data pipeline: image sources, validation, crops, quality sampling, JPEG degradation, datamodule.

>>> from jpegrestore.data import RestorationDataModule, CODiffQuality
>>> dm = RestorationDataModule("sample", "sample", crop_size=64, quality=CODiffQuality(), batch_size=4)
"""

from .datasets import EpochSampler, EvalDataset, RandomCropDataset
from .shards import ShardedSource, StreamingCropDataset, write_shards
from .degrade import collate, compress_batch, pillow_jpeg
from .quality import (
    ChoiceQuality, CODiffQuality, MixtureQuality, QualitySampler, UniformQuality, stream_rng,
)
from .scan import REASONS, BadImageError, ScanReport, decode_rgb, load_rgb, scan_source
from .sources import (
    IMAGE_EXTENSIONS, SAMPLE_SPLITS, FolderSource, HFSource, ImageSource, SampleSource,
)
from .resolve import resolve_source

__all__ = [
    "RestorationDataModule", "EpochSampler", "EvalDataset", "RandomCropDataset", "ShardedSource",
    "StreamingCropDataset", "write_shards",
    "collate", "compress_batch", "pillow_jpeg",
    "QualitySampler", "UniformQuality", "ChoiceQuality", "MixtureQuality", "CODiffQuality", "stream_rng",
    "REASONS", "BadImageError", "ScanReport", "decode_rgb", "load_rgb", "scan_source",
    "IMAGE_EXTENSIONS", "SAMPLE_SPLITS", "ImageSource", "SampleSource", "FolderSource", "HFSource",
    "resolve_source",
]


def __getattr__(name: str):
    # Lightning is slow to import: load the datamodule only when it is asked for.
    if name == "RestorationDataModule":
        from .datamodule import RestorationDataModule

        return RestorationDataModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
