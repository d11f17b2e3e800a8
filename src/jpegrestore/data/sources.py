"""Image sources: the bundled scikit-image photos, a folder tree, or a Hugging Face dataset.

A source is an indexable list of images. ``open(i)`` returns a binary file object or an already decoded PIL
image; decoding and validation live in ``scan.py``. All constructors take plain kwargs, so Hydra can build them:
``{_target_: jpegrestore.data.FolderSource, root: /data/DIV2K_train_HR}``.
"""

from __future__ import annotations

import io
import os
from abc import ABC, abstractmethod
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class ImageSource(ABC):
    """An indexable collection of images; ``where`` names it in messages."""

    where: str = "?"

    @abstractmethod
    def __len__(self) -> int:
        """Number of candidate items (usable or not)."""

    @abstractmethod
    def open(self, index: int) -> Any:
        """Item ``index`` as a binary file object (caller closes it), a PIL image or a uint8 [H, W, 3] array."""

    @abstractmethod
    def name(self, index: int) -> str:
        """A short unique name for item ``index`` (used as the "name" batch key)."""

    def describe(self, index: int) -> str:
        """Where item ``index`` comes from, for error messages."""
        return f"{self.where}: {self.name(index)}"


# ----------------------------------------------------------------------------------------------- sample
# The colour photos and natural grayscale textures that ship inside the scikit-image wheel (no download).
# motorcycle_right is left out (near-duplicate of motorcycle_left), so are `cat` (= chelsea) and the
# small document scans `page` and `text`. Split chosen so that no image or near-duplicate crosses splits.
SAMPLE_SPLITS: dict[str, tuple[str, ...]] = {
    "train": (
        "rocket", "immunohistochemistry", "retina", "motorcycle_left", "hubble_deep_field",
        "moon", "coins", "clock", "grass", "gravel", "brick",
    ),
    "val": ("chelsea", "coffee"),
    "test": ("astronaut", "camera"),
}
SAMPLE_GRAYSCALE = frozenset({"camera", "moon", "coins", "clock", "grass", "gravel", "brick"})


@lru_cache(maxsize=None)
def _sample_array(name: str) -> np.ndarray:
    import skimage.data

    if name == "motorcycle_left":
        array = skimage.data.stereo_motorcycle()[0]
    else:
        array = getattr(skimage.data, name)()
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    array = np.ascontiguousarray(array[:, :, :3], dtype=np.uint8)
    array.setflags(write=False)
    return array


class SampleSource(ImageSource):
    """The photos bundled with scikit-image, split into fixed train / val / test sets.

    Args:
        split: "train" (5 colour + 6 grayscale), "val" (chelsea, coffee), "test" (astronaut, camera) or "all".
        include_grayscale: keep the grayscale images (returned as RGB with equal channels).
    """

    def __init__(self, split: str = "train", include_grayscale: bool = True) -> None:
        if split == "all":
            names = tuple(n for s in ("train", "val", "test") for n in SAMPLE_SPLITS[s])
        elif split in SAMPLE_SPLITS:
            names = SAMPLE_SPLITS[split]
        else:
            raise ValueError(f"SampleSource.split must be one of {sorted(SAMPLE_SPLITS) + ['all']}, got {split!r}")
        self.split = split
        self.names = [n for n in names if include_grayscale or n not in SAMPLE_GRAYSCALE]
        self.where = f"sample images ({split})"

    def __len__(self) -> int:
        return len(self.names)

    def open(self, index: int) -> np.ndarray:
        """The cached, read-only uint8 [H, W, 3] array."""
        return _sample_array(self.names[index])

    def name(self, index: int) -> str:
        return self.names[index]


# ----------------------------------------------------------------------------------------------- folder
class FolderSource(ImageSource):
    """Every image file below ``root`` (recursive; extensions matched case-insensitively; sorted paths).

    Files with other extensions are ignored (not counted as skipped); ``num_ignored`` says how many.
    """

    def __init__(
        self, root: str | os.PathLike, extensions: Sequence[str] = IMAGE_EXTENSIONS, recursive: bool = True
    ) -> None:
        self.root = Path(os.path.expanduser(str(root)))
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {str(self.root)!r} does not exist or is not a directory")
        suffixes = {("." + e.lower().lstrip(".")) for e in extensions}
        walk = self.root.rglob("*") if recursive else self.root.glob("*")
        files = [p for p in walk if p.is_file()]
        self.paths = sorted((p for p in files if p.suffix.lower() in suffixes), key=lambda p: p.as_posix())
        self.num_ignored = len(files) - len(self.paths)
        self.where = str(self.root)

    def __len__(self) -> int:
        return len(self.paths)

    def open(self, index: int) -> io.BufferedReader:
        return open(self.paths[index], "rb")

    def name(self, index: int) -> str:
        return self.paths[index].relative_to(self.root).as_posix()

    def describe(self, index: int) -> str:
        return str(self.paths[index])


# ----------------------------------------------------------------------------------------------- hf
@contextmanager
def _hf_offline() -> Iterator[None]:
    """Make ``datasets`` use only local files and caches while loading (restored afterwards)."""
    import datasets.config as config

    previous = config.HF_HUB_OFFLINE
    config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        config.HF_HUB_OFFLINE = previous


class HFSource(ImageSource):
    """A Hugging Face ``datasets`` dataset, from local files or the local cache only (never the network).

    Args:
        name: a dataset name already in the local cache (e.g. "user/div2k"), a packaged builder such as
            "imagefolder" (with ``data_dir``), or a directory written by ``Dataset.save_to_disk``.
        split: split to use.
        image_column: column holding the images (an ``Image`` feature, or file paths).
        data_dir, data_files, config_name, cache_dir: passed to ``datasets.load_dataset``.
    """

    def __init__(
        self,
        name: str,
        split: str = "train",
        image_column: str = "image",
        data_dir: Optional[str] = None,
        data_files: Any = None,
        config_name: Optional[str] = None,
        cache_dir: Optional[str] = None,
    ) -> None:
        import datasets

        if data_dir is not None and not Path(os.path.expanduser(data_dir)).is_dir():
            raise FileNotFoundError(f"HFSource: data_dir {data_dir!r} does not exist")
        self.where = f"hf:{name}" + (f" {data_dir}" if data_dir else "") + f" [{split}]"
        with _hf_offline():
            saved = Path(os.path.expanduser(name))
            if (saved / "state.json").is_file() or (saved / "dataset_dict.json").is_file():
                loaded = datasets.load_from_disk(str(saved))
                if isinstance(loaded, datasets.DatasetDict):
                    loaded = self._pick_split(loaded, split, name)
            else:
                kwargs = dict(split=split, cache_dir=cache_dir)
                if data_dir is not None:
                    kwargs["data_dir"] = os.path.expanduser(data_dir)
                if data_files is not None:
                    kwargs["data_files"] = data_files
                try:
                    loaded = datasets.load_dataset(name, config_name, **kwargs)
                except (ConnectionError, FileNotFoundError, datasets.exceptions.DatasetNotFoundError) as error:
                    raise FileNotFoundError(
                        f"HFSource: dataset {name!r} is not available offline ({error}). Download it once "
                        "with `datasets.load_dataset` on a machine with network and reuse its cache "
                        "(HF_DATASETS_CACHE), or save it with `save_to_disk` and pass that directory as name."
                    ) from error
        if image_column not in loaded.column_names:
            raise ValueError(
                f"HFSource: image_column {image_column!r} not in {self.where}; columns: {loaded.column_names}"
            )
        if isinstance(loaded.features[image_column], datasets.Image):
            loaded = loaded.cast_column(image_column, datasets.Image(decode=False))
        self.dataset = loaded
        self.image_column = image_column

    @staticmethod
    def _pick_split(loaded, split: str, name: str):
        if split not in loaded:
            raise ValueError(f"HFSource: split {split!r} not in {name!r}; splits: {list(loaded)}")
        return loaded[split]

    def __len__(self) -> int:
        return len(self.dataset)

    def _cell(self, index: int) -> Any:
        return self.dataset[int(index)][self.image_column]

    def open(self, index: int) -> Any:
        cell = self._cell(index)
        if isinstance(cell, Image.Image):
            return cell
        if isinstance(cell, dict):
            if cell.get("bytes") is not None:
                return io.BytesIO(cell["bytes"])
            if cell.get("path"):
                return open(cell["path"], "rb")
        if isinstance(cell, (bytes, bytearray)):
            return io.BytesIO(cell)
        if isinstance(cell, str):
            return open(cell, "rb")
        raise ValueError(f"{self.where}[{index}]: cannot read an image from a {type(cell).__name__} cell")

    def name(self, index: int) -> str:
        cell = self._cell(index)
        path = cell.get("path") if isinstance(cell, dict) else (cell if isinstance(cell, str) else None)
        return f"{index:06d}_{Path(path).name}" if path else f"{index:06d}"
