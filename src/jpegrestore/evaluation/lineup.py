"""The methods and data sets of a comparison run, read from ``methods:`` and ``datasets:`` in conf/evaluate.yaml.

``methods`` maps a label (the row of the tables) to an entry:

- ``{ckpt: PATH, <options>}``: a checkpoint of any recipe, evaluated by its recipe's method (options such as
  ``samples``, ``seed`` go to it, as ``method.samples=...`` does for ``ckpt=...``);
- ``{method: NAME, <options>}``: the config ``conf/method/NAME.yaml`` with the entry's keys on top (e.g.
  ``{method: ddrm_jpeg, prior: PATH, samples: 8}``, ``{method: jpeg}``); every key is passed through to the
  method's class, so a key any method config gains (``precision``, ...) works here too;
- ``{_target_: module.Class, <kwargs>}``: any class following the method protocol (``evaluation.methods``);
- a string: a checkpoint path (``*.ckpt``) or a method name.

``datasets`` maps a name (a column group of the tables) to a source (``sample``, ``sample:<split>``, a folder,
or a ``{_target_: jpegrestore.data.HFSource, ...}`` config) or to ``{source: ..., <preprocessing>}`` with the
keys of :class:`Preprocess`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from jpegrestore.evaluation import tables
from jpegrestore.evaluation.methods import JPEGDecode, RestorationMethod, build_method

log = logging.getLogger(__name__)

#: Entry keys naming files, quoted in a load error.
FILE_KEYS = ("ckpt", "prior", "weights", "pretrained")
#: Keys the top level of conf/evaluate.yaml gives every method unless its entry sets them.
SHARED_KEYS = ("device", "tile", "tile_overlap", "outside_range", "pretrained")


class MethodLoadError(ValueError):
    """A listed method cannot be built; the message names its label and files."""


def config_dir() -> Path:
    """conf/ next to the source tree (editable install), else ./conf."""
    candidate = Path(__file__).resolve().parents[3] / "conf"
    return candidate if (candidate / "evaluate.yaml").is_file() else Path.cwd() / "conf"


def _method_yaml(name: str) -> Any:
    from omegaconf import OmegaConf

    path = config_dir() / "method" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ValueError(f"unknown method {name!r}: no {path} (known: {known})")
    return OmegaConf.load(path)


def _entry(label: str, entry: Any) -> dict[str, Any]:
    from jpegrestore.utils.instantiate import to_plain

    entry = to_plain(entry)
    if entry is None:
        entry = {}
    if isinstance(entry, str):
        entry = {"ckpt": entry} if entry.endswith(".ckpt") else {"method": entry}
    if not isinstance(entry, dict):
        raise ValueError(f"methods.{label} must be a mapping (ckpt: PATH, method: NAME or _target_: ...) or a "
                         f"string, got {entry!r}")
    return dict(entry)


def method_spec(label: str, entry: Any, root: Mapping[str, Any]) -> dict[str, Any]:
    """The resolved config of one ``methods`` entry: ``conf/method/<method>.yaml`` (default ``auto``) with the
    entry's keys on top and its interpolations (``${ckpt}``, ``${device}``, ...) resolved against ``root`` (the
    evaluation config) with the entry's own ``ckpt`` and shared keys. An entry with ``_target_`` is taken as is."""
    from omegaconf import OmegaConf

    entry = _entry(label, entry)
    if "_target_" in entry:
        if "method" in entry:
            raise ValueError(f"methods.{label}: give either method or _target_, not both")
        return entry
    base = _method_yaml(str(entry.pop("method", None) or "auto"))
    scope = OmegaConf.create({k: v for k, v in OmegaConf.to_container(root, resolve=False).items()
                              if k not in ("methods", "datasets", "method")} if root is not None else {})
    scope.ckpt = entry.get("ckpt")
    for key in SHARED_KEYS:
        if key in entry:
            scope[key] = entry[key]
    scope.method = OmegaConf.merge(base, entry)
    return OmegaConf.to_container(scope.method, resolve=True)


def build_entry(label: str, spec: Mapping[str, Any], root: Mapping[str, Any]) -> RestorationMethod:
    """The method of one resolved entry; :class:`MethodLoadError` naming the label and files when it cannot load."""
    spec = dict(spec)

    def shared(key: str, default: Any) -> Any:
        value = spec.pop(key, None) if not spec.get("_target_") else spec.get(key)
        if value is None:
            value = root.get(key, default) if root is not None else default
        return default if value is None else value

    auto = not spec.get("_target_")
    ckpt = spec.pop("ckpt", None) if auto else spec.get("ckpt")
    try:
        kwargs = dict(device=shared("device", "auto"), tile=shared("tile", 512),
                      tile_overlap=int(shared("tile_overlap", 32)), outside_range=shared("outside_range", None),
                      pretrained=shared("pretrained", None))
        method = build_method(spec, ckpt, **kwargs)
    except Exception as error:  # noqa: BLE001 - re-raised with the label and files
        files = ", ".join(f"{k}={v}" for k, v in [("ckpt", ckpt), *spec.items()] if k in FILE_KEYS and v)
        where = f" ({files})" if files else ""
        raise MethodLoadError(f"method {label!r}{where} cannot be loaded: {type(error).__name__}: {error}") from error
    return method


def build_methods(methods: Mapping[str, Any], root: Mapping[str, Any]) -> dict[str, RestorationMethod]:
    """{label: method} for every entry of ``methods`` (in order), all built before any image is evaluated.

    Plain JPEG decoding is the baseline every run reports (label ``jpeg``), so an entry that builds it adds no
    row; the label ``jpeg`` is reserved for it.
    """
    built: dict[str, RestorationMethod] = {}
    for label, entry in methods.items():
        label = str(label)
        spec = method_spec(label, entry, root)
        method = build_entry(label, spec, root)
        if isinstance(method, JPEGDecode):
            log.info("methods.%s is plain JPEG decoding: reported as the jpeg baseline row", label)
            continue
        if label == tables.JPEG:
            raise ValueError(f"methods.{label}: the label {tables.JPEG!r} is the plain JPEG baseline; pick another")
        built[label] = method
    return built


# ---------------------------------------------------------------------------------------------------- data sets


@dataclass(frozen=True)
class Preprocess:
    """Fixed preprocessing of a data set's images before compression, in this order (all on 8-bit images):

    Args:
        border_crop: pixels cut from every side.
        resize: the shorter side resized to this many pixels (bicubic, Pillow), the aspect ratio kept.
        center_crop: central crop, ``N`` (square) or ``[H, W]``.
        grayscale: Pillow's luma ("L": ITU-R 601-2), evaluated as 1-channel images (e.g. Classic5).
    """

    border_crop: int = 0
    resize: int | None = None
    center_crop: int | list[int] | None = None
    grayscale: bool = False

    def __post_init__(self) -> None:
        if int(self.border_crop) < 0:
            raise ValueError(f"border_crop must be >= 0, got {self.border_crop}")
        if self.resize is not None and int(self.resize) < 1:
            raise ValueError(f"resize must be a positive size, got {self.resize}")

    @property
    def identity(self) -> bool:
        return not (self.border_crop or self.resize or self.center_crop or self.grayscale)

    def crop_size(self) -> tuple[int, int] | None:
        if self.center_crop is None:
            return None
        size = self.center_crop if isinstance(self.center_crop, (list, tuple)) else [self.center_crop] * 2
        return int(size[0]), int(size[1])

    def describe(self) -> str:
        parts = [f"border crop {self.border_crop} px"] if self.border_crop else []
        parts += [f"shorter side resized to {self.resize} (bicubic)"] if self.resize else []
        parts += ["centre crop {}x{}".format(*self.crop_size())] if self.center_crop else []
        parts += ["grayscale (luma)"] if self.grayscale else []
        return ", ".join(parts) or "none"

    def __call__(self, image: Tensor) -> Tensor:
        """float [1, 3, H, W] on the 8-bit grid -> float [1, C, h, w] (C = 1 when grayscale) on the 8-bit grid."""
        if self.identity:
            return image
        array = (image[0].permute(1, 2, 0) * 255).round().clamp(0, 255).to(torch.uint8).numpy()
        picture = Image.fromarray(array)
        b = int(self.border_crop)
        if b:
            if 2 * b >= min(picture.size):
                raise ValueError(f"border_crop {b} leaves nothing of a {picture.size[0]}x{picture.size[1]} image")
            picture = picture.crop((b, b, picture.width - b, picture.height - b))
        if self.resize:
            scale = int(self.resize) / min(picture.size)
            size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
            picture = picture.resize(size, Image.BICUBIC)
        if self.center_crop is not None:
            height, width = self.crop_size()
            if height > picture.height or width > picture.width:
                raise ValueError(f"center_crop {height}x{width} is larger than the image "
                                 f"({picture.height}x{picture.width})")
            top, left = (picture.height - height) // 2, (picture.width - width) // 2
            picture = picture.crop((left, top, left + width, top + height))
        if self.grayscale:
            picture = picture.convert("L")
        out = torch.from_numpy(np.asarray(picture).copy()).float() / 255
        return (out[None, None] if out.dim() == 2 else out.permute(2, 0, 1)[None]).contiguous()


@dataclass
class Dataset:
    """A named image source with its preprocessing and image limit."""

    name: str
    source: Any
    preprocess: Preprocess
    max_images: int | None = None

    @property
    def count(self) -> int:
        return len(self.source) if self.max_images is None else min(len(self.source), int(self.max_images))

    def describe(self) -> str:
        where = getattr(self.source, "where", self.source)
        return f"{self.name}: {where} ({self.count} images; preprocessing: {self.preprocess.describe()})"


def build_datasets(datasets: Mapping[str, Any] | None, data: Any, max_images: int | None = None) -> list[Dataset]:
    """The data sets of a run: every entry of ``datasets`` ({name: source or {source, max_images, <Preprocess
    keys>}}), or, when empty, the evaluation's ``data`` config as one set named after its folder."""
    from jpegrestore.evaluation.runner import eval_source
    from jpegrestore.utils.instantiate import to_plain

    if not datasets:
        source = eval_source(data)
        where = str(getattr(source, "where", "images"))
        name = Path(where).name if where and not where.startswith(("sample", "hf:")) else where.split(" ")[0]
        return [Dataset(name or "images", source, Preprocess(), max_images)]
    known = {f.name for f in fields(Preprocess)}
    out = []
    for name, entry in to_plain(datasets).items():
        if isinstance(entry, str) or (isinstance(entry, dict) and "_target_" in entry):
            entry = {"source": entry}
        if not isinstance(entry, dict) or not entry.get("source"):
            raise ValueError(f"datasets.{name} needs a source (a folder, sample, or an HFSource config), got {entry!r}")
        unknown = set(entry) - known - {"source", "max_images"}
        if unknown:
            raise ValueError(f"datasets.{name}: unknown key(s) {sorted(unknown)}; known: source, max_images, "
                             f"{', '.join(sorted(known))}")
        source = eval_source(entry["source"] if isinstance(entry["source"], str) else {"source": entry["source"]})
        limit = entry.get("max_images", max_images)
        out.append(Dataset(str(name), source, Preprocess(**{k: entry[k] for k in known if entry.get(k) is not None}),
                           limit))
    return out
