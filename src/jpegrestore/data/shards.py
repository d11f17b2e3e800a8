"""Sharded, streaming training data for sets too large to scan at start-up (10^5 to 10^6 images).

The shards are Parquet files of encoded images (the original PNG/JPEG bytes, never re-encoded) in the layout
Hugging Face ``datasets`` writes (``name`` and an ``Image`` column), so the same files also load with
``datasets.load_dataset("parquet", ...)``, DuckDB or Spark. Training reads them with pyarrow, row group by row
group, and keeps its own position (pass, shard, row): that position is exact, so torchdata's
``StatefulDataLoader`` (our training loader, saved in every Lightning checkpoint) resumes with the very next record.
``datasets``' own streaming state was not used for that: it drops shuffle buffers on resume and its state does not
survive the per-worker shard split.

    python -m jpegrestore.data.shards /data/DF2K /data/df2k_shards --per-shard 1000    # write
    python train.py ... data=shards data.train_source.data_files='/data/df2k_shards/*.parquet'

Each pass over the data deals the shards, in an order drawn from (seed, epoch, pass), to the ranks and then to
the DataLoader workers; records within a shard keep the order they were written in (the writer shuffles the files
once). Every rank yields exactly ``ceil(samples_per_epoch / world_size)`` crops per epoch, cycling through its
shards as often as needed, so ranks never disagree on the epoch length. Records that do not decode to a usable
image (corrupt, truncated, CMYK, 16-bit, smaller than the crop, not an image) are skipped and counted by reason.
"""

from __future__ import annotations

import argparse
import glob
import logging
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from .datasets import random_crop_sample
from .quality import QualitySampler, stream_rng
from .scan import REASONS, BadImageError, decode_rgb
from .sources import IMAGE_EXTENSIONS, ImageSource

log = logging.getLogger(__name__)


class ShardedSource:
    """Parquet shards of encoded images (``data_files``: a glob, a directory or a list of files).

    Columns: ``image_column`` holds the encoded bytes (a ``datasets.Image`` struct of bytes and path, or plain
    bytes), ``name_column`` (optional) a name for messages.
    """

    def __init__(self, data_files: str | Sequence[str], image_column: str = "image", name_column: str = "name") -> None:
        self.files = _expand(data_files)
        self.image_column, self.name_column = image_column, name_column
        self.where = f"shards:{data_files if isinstance(data_files, str) else self.files[0] + ', ...'}"

    def rows(self, path: str) -> int:
        """Number of records in shard ``path``."""
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows

    def read(self, path: str, start: int = 0) -> Iterator[tuple[int, dict]]:
        """(row, record) pairs of shard ``path`` from row ``start`` on, reading only the row groups needed."""
        import pyarrow.parquet as pq

        shard = pq.ParquetFile(path)
        names = shard.schema_arrow.names
        if self.image_column not in names:
            raise ValueError(f"{path}: no column {self.image_column!r}; columns: {names}")
        columns = [c for c in (self.image_column, self.name_column) if c in names]
        first = 0
        for group in range(shard.num_row_groups):
            count = shard.metadata.row_group(group).num_rows
            if first + count > start:
                table = shard.read_row_group(group, columns=columns).to_pylist()
                for offset in range(max(0, start - first), count):
                    yield first + offset, table[offset]
            first += count


def _expand(data_files: str | Sequence[str]) -> list[str]:
    """Shard paths from a glob, a directory (its *.parquet) or a list; FileNotFoundError naming the pattern."""
    patterns = [data_files] if isinstance(data_files, (str, os.PathLike)) else list(data_files)
    files: list[str] = []
    for pattern in patterns:
        pattern = os.path.expanduser(str(pattern))
        if os.path.isdir(pattern):
            pattern = os.path.join(pattern, "*.parquet")
        files += sorted(glob.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no shard files match {data_files!r} (write them with "
                                "`python -m jpegrestore.data.shards SRC OUT`)")
    return files


class StreamCounts:
    """Records read and skipped (per reason) by every DataLoader worker, in shared memory."""

    def __init__(self, where: str, min_size: int) -> None:
        self.where, self.min_size = where, min_size
        self.values = torch.zeros(len(REASONS) + 1, dtype=torch.long).share_memory_()  # [read, per reason...]

    def read(self) -> None:
        self.values[0] += 1

    def skip(self, reason: str) -> None:
        self.values[REASONS.index(reason) + 1] += 1

    def counts(self) -> dict[str, int]:
        return {reason: int(n) for reason, n in zip(REASONS, self.values[1:].tolist()) if n}

    def summary(self) -> str:
        """E.g. ``skipped 2 of 40 records read from shards:/data/*.parquet: 1 corrupt, 1 truncated``."""
        counts = self.counts()
        text = f"skipped {sum(counts.values())} of {int(self.values[0])} records read from {self.where}"
        if counts:
            text += ": " + ", ".join(
                f"{n} {reason}" + (f" {self.min_size}" if reason == "smaller than crop" else "")
                for reason, n in counts.items())
        return text


class StreamingCropDataset(IterableDataset):
    """Random crops from a :class:`ShardedSource`, for one rank and one epoch; resumable (``state_dict``).

    Args:
        source: the shards.
        samples_per_epoch: crops per epoch over all ranks (each rank yields ``ceil(n / world_size)``).
        rank, world_size: this process's share of the shards.
        epoch: the epoch (the datamodule builds one dataset per epoch).
        options: crop_size, quality (a QualitySampler), misalign_prob, flips, rotations, grayscale, compression,
            subsampling and seed, as :class:`RandomCropDataset` takes them.
        counts: shared read / skip counters (created here when None).

    Item: {"target": float [C, S, S] in [0, 1], "quality": long scalar} (+ "input", "coeffs" for pillow).
    """

    def __init__(self, source: ShardedSource, samples_per_epoch: int, rank: int = 0, world_size: int = 1,
                 epoch: int = 0, counts: Optional[StreamCounts] = None, *, crop_size: int, quality: QualitySampler,
                 misalign_prob: float = 0.0, flips: bool = True, rotations: bool = True, grayscale: bool = False,
                 compression: str = "device", subsampling: str = "4:2:0", seed: int = 0) -> None:
        if samples_per_epoch is None or int(samples_per_epoch) <= 0:
            raise ValueError("a sharded source needs data.samples_per_epoch (crops per epoch over all ranks)")
        self.source = source
        self.per_rank = math.ceil(int(samples_per_epoch) / int(world_size))
        self.rank, self.world_size, self.epoch = int(rank), int(world_size), int(epoch)
        self.crop_size, self.quality, self.misalign_prob = int(crop_size), quality, float(misalign_prob)
        self.flips, self.rotations, self.grayscale = bool(flips), bool(rotations), bool(grayscale)
        self.compression, self.subsampling, self.seed = compression, subsampling, int(seed)
        self.counts = counts or StreamCounts(source.where, self.crop_size)
        self._state: dict[str, int] = {"yielded": 0, "passes": 0, "shard": 0, "row": 0}
        self._resume: Optional[dict[str, Any]] = None

    def __len__(self) -> int:
        """Crops this rank yields per epoch (over all its workers). Knowing it, Lightning does not fetch ahead, so
        the saved stream position is exactly that of the last trained batch."""
        return self.per_rank

    # -------------------------------------------------------------- resumable position (torchdata protocol)
    def state_dict(self) -> dict[str, Any]:
        """This worker's position: crops yielded this epoch, the pass, and the next (shard, row) to read."""
        return {"epoch": self.epoch, **self._state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["epoch"]) != self.epoch:
            raise ValueError(f"streaming state is for epoch {state['epoch']}, this dataset serves epoch {self.epoch}")
        self._resume = {k: int(state[k]) for k in ("yielded", "passes", "shard", "row")}

    # -------------------------------------------------------------- iteration
    def _worker(self) -> tuple[int, int]:
        info = get_worker_info()
        return (0, 1) if info is None else (info.id, info.num_workers)

    def shards_for(self, passes: int, worker: int = 0, workers: int = 1) -> list[str]:
        """The shards this rank's ``worker`` reads in pass ``passes``: all shards in an order drawn from (seed,
        epoch, pass), dealt to the ranks, then to the workers."""
        files = self.source.files
        if len(files) < self.world_size * workers:
            raise ValueError(f"{self.source.where} has {len(files)} shard(s) for {self.world_size} rank(s) x "
                             f"{workers} worker(s); write more shards or use fewer data.num_workers")
        order = stream_rng(self.seed, self.epoch, passes, "shards").permutation(len(files))
        mine = [files[i] for i in order[self.rank::self.world_size]]
        return mine[worker::workers]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker, workers = self._worker()
        share = len(range(worker, self.per_rank, workers))  # this worker's part of the rank's crops
        state = self._resume or {"yielded": 0, "passes": 0, "shard": 0, "row": 0}
        self._resume = None
        yielded, passes, shard, row = state["yielded"], state["passes"], state["shard"], state["row"]
        partial = shard > 0 or row > 0  # resumed inside a pass
        while yielded < share:
            usable = 0
            files = self.shards_for(passes, worker, workers)
            for shard in range(shard, len(files)):
                for row, record in self.source.read(files[shard], row):
                    image = self._decode(record)
                    if image is None:
                        continue
                    usable += 1
                    index = (yielded * workers + worker) * self.world_size + self.rank  # unique per (epoch, crop)
                    sample = random_crop_sample(self, image, self.epoch, index)
                    yielded += 1
                    self._state = {"yielded": yielded, "passes": passes, "shard": shard, "row": row + 1}
                    yield sample
                    if yielded >= share:
                        return
                row = 0
            if usable == 0 and not partial:  # a whole pass without one usable record
                raise RuntimeError(f"no usable image in the shards of {self.source.where} read by rank {self.rank}, "
                                   f"worker {worker}: {self.counts.summary()}")
            passes, shard, row, partial = passes + 1, 0, 0, False

    def _decode(self, record: dict) -> Optional[np.ndarray]:
        cell = record[self.source.image_column]
        name = record.get(self.source.name_column) or (cell.get("path") if isinstance(cell, dict) else None)
        where = f"{self.source.where}: {name or '?'}"
        self.counts.read()
        data = cell.get("bytes") if isinstance(cell, dict) else cell
        try:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise BadImageError("not an image", where, f"a {type(data).__name__} cell")
            return decode_rgb(data, where, self.crop_size)
        except BadImageError as error:
            log.warning("skipping %s", error)
            self.counts.skip(error.reason)
            return None


# ------------------------------------------------------------------------------------------------ writing
def write_shards(source: ImageSource | str | Path, out_dir: str | Path, per_shard: int = 1000, seed: int = 0,
                 progress: bool = True) -> list[Path]:
    """Write the images of ``source`` (an ImageSource, or a folder) as Parquet shards in ``out_dir``.

    Files are stored as their original encoded bytes (nothing is decoded, so bad files are carried and skipped
    at training time, counted). The order is shuffled once with ``seed``. -> the shard paths.
    """
    import datasets
    from tqdm.auto import tqdm

    if not isinstance(source, ImageSource):
        from .sources import FolderSource

        source = FolderSource(str(source))
    if int(per_shard) < 1:
        raise ValueError(f"per_shard must be >= 1, got {per_shard}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng(seed).permutation(len(source))
    features = datasets.Features({"name": datasets.Value("string"), "image": datasets.Image()})
    paths = []
    count = math.ceil(len(order) / per_shard)
    for shard in tqdm(range(count), desc="write shards", unit="shard", disable=not progress):
        names, images = [], []
        for index in order[shard * per_shard:(shard + 1) * per_shard]:
            names.append(source.name(int(index)))
            images.append({"bytes": _read_bytes(source, int(index)), "path": names[-1]})
        path = out / f"shard-{shard:05d}-of-{count:05d}.parquet"
        datasets.disable_progress_bars()  # one bar for the whole job, not one per shard
        try:
            datasets.Dataset.from_dict({"name": names, "image": images}, features=features).to_parquet(str(path))
        finally:
            datasets.enable_progress_bars()
        paths.append(path)
    return paths


def _read_bytes(source: ImageSource, index: int) -> bytes:
    opened = source.open(index)
    if isinstance(opened, np.ndarray):
        import io

        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(opened).save(buffer, format="PNG")
        return buffer.getvalue()
    try:
        return opened.read()
    finally:
        opened.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jpegrestore.data.shards",
                                     description="Write a folder of images as Parquet shards for data=shards.")
    parser.add_argument("source", help=f"folder of images ({', '.join(IMAGE_EXTENSIONS)}), searched recursively")
    parser.add_argument("out", help="output directory of shard-*.parquet")
    parser.add_argument("--per-shard", type=int, default=1000, help="images per shard (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the one-time shuffle of the file order")
    args = parser.parse_args(argv)
    paths = write_shards(args.source, args.out, args.per_shard, args.seed)
    print(f"wrote {len(paths)} shards to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
