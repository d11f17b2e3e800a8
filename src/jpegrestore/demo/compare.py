"""The demo's restore logic, without any web framework: methods built once from the command line, an input read
(a real JPEG, restored with its own tables) or compressed (a clean image, with the exact JPEG operator), every
chosen method run through ``jpegrestore restore``'s own :func:`jpegrestore.evaluation.files.restore_file`, and the 8-bit
PNGs it writes scored against the clean image as the evaluation scores them.

Methods are named by a :class:`MethodSpec` (``kind``, ``source``) and built by ``BUILDERS[kind]``, the same
builders ``jpegrestore restore`` uses (``checkpoint_method``, ``DDRMJPEGMethod``). Another family of networks
plugs in as one more entry of :data:`BUILDERS` plus a command-line option that makes its specs.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from jpegrestore import jpeg

#: Chroma layouts a clean image can be compressed with ("gray": its JFIF luma, one component).
LAYOUTS = ("4:2:0", "4:2:2", "4:4:4", "gray")
#: Metrics reported when a clean image is known: RGB and Y (JFIF) PSNR, SSIM, PSNR-B, as ``evaluate.py``.
METRIC_NAMES = ("psnr", "ssim", "psnrb", "psnr_y", "ssim_y", "psnrb_y")
#: A progress callback: ``progress(fraction in [0, 1], what is running)``.
Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class MethodSpec:
    """A method given on the command line: ``kind`` (a key of :data:`BUILDERS`) and its ``source`` (path)."""

    kind: str
    source: str


@dataclass(frozen=True)
class BuildOptions:
    """Options shared by every method, as ``jpegrestore restore``'s ``--device``, ``--tile``, ... ."""

    device: str = "auto"
    tile: int = 512
    tile_overlap: int = 32
    outside_range: str | None = None  # None: what the checkpoint records, else warn


def build_checkpoint(spec: MethodSpec, options: BuildOptions, seed: int, cache: dict[str, Any]) -> Any:
    """``jpegrestore restore --ckpt SOURCE [--seed SEED]``'s method (the seed only for checkpoints that name their own
    evaluation method; plain networks take none). The file is read once and reused for every build."""
    from jpegrestore.checkpoints import Checkpoint
    from jpegrestore.evaluation.methods import checkpoint_method

    if "checkpoint" not in cache:
        cache["checkpoint"] = Checkpoint.read(spec.source)
    checkpoint = cache["checkpoint"]
    seeded = bool(checkpoint.meta.get("evaluation_method"))
    return checkpoint_method(checkpoint, device=options.device, tile=options.tile or None,
                             tile_overlap=options.tile_overlap, outside_range=options.outside_range,
                             seed=seed if seeded else None)


def build_ddrm(spec: MethodSpec, options: BuildOptions, seed: int, cache: dict[str, Any]) -> Any:
    """``jpegrestore restore --method ddrm_jpeg --prior SOURCE --seed SEED``'s method; the prior is loaded once."""
    from jpegrestore.evaluation.ddrm import DDRMJPEGMethod
    from jpegrestore.evaluation.methods import resolve_device
    from jpegrestore.sampling.priors import load_prior

    if "prior" not in cache:
        cache["prior"] = load_prior(spec.source, device=resolve_device(options.device))
    return DDRMJPEGMethod(prior=cache["prior"], device=options.device, tile=options.tile or None,
                          tile_overlap=options.tile_overlap, seed=seed)


#: ``kind -> builder(spec, options, seed, cache)``; ``cache`` is a dict kept per method between builds.
BUILDERS: dict[str, Callable[[MethodSpec, BuildOptions, int, dict[str, Any]], Any]] = {
    "checkpoint": build_checkpoint,
    "ddrm_jpeg": build_ddrm,
}


def is_stochastic(method: Any) -> bool:
    """True for a method that draws samples (``method.sample``), as ``jpegrestore restore --samples`` checks."""
    return callable(getattr(method, "sample", None))


class MethodBank:
    """The methods of the page, built once (ValueError/OSError naming a bad source), rebuilt only when a
    stochastic method is asked for another seed.

    ``labels``: unique page labels ("<method name> · <file name>"), in command-line order.
    """

    def __init__(self, specs: Sequence[MethodSpec], options: BuildOptions = BuildOptions()) -> None:
        from jpegrestore.tiling import check_tiling

        if not specs:
            raise ValueError("no method given: pass --ckpt PATH (repeatable) and/or --prior PATH")
        unknown = [s.kind for s in specs if s.kind not in BUILDERS]
        if unknown:
            raise ValueError(f"unknown method kind(s) {unknown}; known: {sorted(BUILDERS)}")
        if options.tile:
            check_tiling(options.tile, options.tile_overlap)
        self.options = options
        self.specs: dict[str, MethodSpec] = {}
        self.stochastic: dict[str, bool] = {}
        self._caches: dict[str, dict[str, Any]] = {}
        self._built: dict[str, tuple[int, Any]] = {}
        for spec in specs:
            cache: dict[str, Any] = {}
            method = BUILDERS[spec.kind](spec, options, 0, cache)
            label = self._unique(f"{method.name} · {Path(spec.source).name}")
            self.specs[label], self._caches[label], self._built[label] = spec, cache, (0, method)
            self.stochastic[label] = is_stochastic(method)

    def _unique(self, label: str) -> str:
        candidate, n = label, 1
        while candidate in self.specs:
            n += 1
            candidate = f"{label} #{n}"
        return candidate

    @property
    def labels(self) -> list[str]:
        return list(self.specs)

    def method(self, label: str, seed: int) -> Any:
        """The method ``label`` as ``jpegrestore restore --seed SEED`` builds it."""
        if label not in self.specs:
            raise ValueError(f"unknown method {label!r}; known: {self.labels}")
        built_seed, method = self._built[label]
        if self.stochastic[label] and built_seed != seed:
            method = BUILDERS[self.specs[label].kind](self.specs[label], self.options, seed, self._caches[label])
            self._built[label] = (seed, method)
        return method


@dataclass
class PreparedInput:
    """The JPEG to restore and what is known about it.

    ``jpeg_path``: the file restored (the upload itself, or the clean image compressed); ``jpeg_png``: its libjpeg
    decoding as PNG; ``reference``: the clean image float [C, H, W] in [0, 1] (None when unknown);
    ``quality``: the estimated IJG quality (exact tables: the quality used); ``layout``: "gray" or the subsampling.
    """

    name: str
    jpeg_path: Path
    jpeg_png: Path
    reference: Tensor | None
    quality: int
    exact_tables: bool
    layout: str
    size: tuple[int, int]
    compressed_here: bool

    def describe(self) -> str:
        """One line for the page, e.g. "photo.jpg: JPEG 4:2:0, 96x128, estimated quality 75 (IJG tables)"."""
        height, width = self.size
        if self.compressed_here:
            how = f"compressed here at quality {self.quality}, {self.layout} (exact libjpeg-turbo operator)"
        else:
            tables = "IJG tables" if self.exact_tables else "custom tables: nearest IJG quality"
            how = f"JPEG {self.layout}, estimated quality {self.quality} ({tables})"
        clean = "clean image known: metrics below" if self.reference is not None else "no clean image: no metrics"
        return f"{self.name}: {width}x{height}, {how}; {clean}"


def _renamed(error: Exception, path: Path, name: str) -> Exception:
    """The same error type with the upload's temporary path replaced by its file name."""
    text = str(error).replace(str(path), name)
    return type(error)(text if name in text else f"{name}: {text}")


def _load_clean(path: Path, name: str, gray: bool) -> Tensor:
    """A clean image file -> float [3 or 1, H, W] in [0, 1] (ValueError naming ``name`` when unreadable)."""
    from jpegrestore.data.scan import decode_rgb
    from jpegrestore.data.transforms import rgb_to_luma, to_tensor_image

    pixels = decode_rgb(path.read_bytes(), name)
    return to_tensor_image(rgb_to_luma(pixels) if gray else pixels)


def _read_upload(path: str | Path | None, what: str) -> tuple[Path, str, bytes]:
    if not path:
        raise ValueError(f"no {what} given: upload a file")
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path.name}: the uploaded {what} is not a readable file")
    data = path.read_bytes()
    if not data:
        raise ValueError(f"{path.name}: empty file")
    return path, path.name, data


def prepare_input(upload: str | Path, workdir: Path, quality: int = 75, layout: str = "4:2:0",
                  reference: str | Path | None = None) -> PreparedInput:
    """Read a JPEG (kept as it is, with its own tables) or compress a clean image at ``quality`` and ``layout`` with
    ``jpeg.encode(..., rounding="exact")``, written to ``workdir`` as a JPEG file. ``reference``: the clean image
    of a JPEG upload, for metrics. ValueError/OSError naming the uploaded file when it cannot be used.
    """
    path, name, data = _read_upload(upload, "image")
    workdir.mkdir(parents=True, exist_ok=True)
    is_jpeg = data[:2] == b"\xff\xd8"
    if is_jpeg:
        jpeg_path = path
    else:
        if layout not in LAYOUTS:
            raise ValueError(f"chroma layout must be one of {list(LAYOUTS)}, got {layout!r}")
        if isinstance(quality, bool) or int(quality) != quality or not 1 <= int(quality) <= 100:
            raise ValueError(f"quality must be an integer in 1..100, got {quality!r}")
        clean = _load_clean(path, name, layout == "gray")
        coeffs = jpeg.encode(clean[None], quality=int(quality), subsampling="4:2:0" if layout == "gray" else layout,
                             rounding="exact")
        jpeg_path = workdir / f"{Path(name).stem}_q{int(quality)}_{layout.replace(':', '')}.jpg"
        jpeg.write(jpeg_path, coeffs)
    try:
        coeffs = jpeg.read(jpeg_path)
    except (OSError, ValueError) as error:
        raise _renamed(error, jpeg_path, name) from None
    from jpegrestore.evaluation.domain import file_layout
    from jpegrestore.evaluation.grids import save_png

    estimate = jpeg.estimate_quality(coeffs.qt)
    jpeg_image = jpeg.decode(coeffs, rounding="exact")[0]
    jpeg_png = workdir / f"{Path(name).stem}_jpeg.png"
    save_png(jpeg_image, jpeg_png)
    height, width = coeffs.size
    if is_jpeg and reference:
        ref_path, ref_name, _ = _read_upload(reference, "clean reference")
        clean = _load_clean(ref_path, ref_name, coeffs.cb is None)
        if tuple(clean.shape[-2:]) != (height, width):
            raise ValueError(f"{ref_name} is {clean.shape[-1]}x{clean.shape[-2]} but the JPEG {name} is "
                             f"{width}x{height}: the clean reference must be the image the JPEG was made from")
    elif is_jpeg:
        clean = None
    return PreparedInput(name=name, jpeg_path=jpeg_path, jpeg_png=jpeg_png, reference=clean,
                         quality=int(estimate.quality[0]), exact_tables=bool(estimate.exact[0]),
                         layout=file_layout(coeffs), size=(height, width), compressed_here=not is_jpeg)


@dataclass
class MethodResult:
    """One column of the page: ``images`` the PNGs ``jpegrestore restore`` wrote (one per draw), ``std_map`` its
    ``<stem>_std.png`` (>= 2 draws), ``metrics`` of the first draw against the clean image ({} when unknown),
    ``mean_std`` the mean per-pixel std over the 8-bit draws (0..1, as evaluate.py's ``sample_std``),
    ``seconds`` the wall time of ``restore_file`` (restoration and PNG writing); ``error``: why the method could not
    restore this input (then ``images`` is empty)."""

    label: str
    images: list[Path]
    seconds: float
    stochastic: bool = False
    std_map: Path | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    mean_std: float | None = None
    messages: list[str] = field(default_factory=list)
    error: str | None = None


def load_png(path: str | Path) -> Tensor:
    """An 8-bit PNG -> float [C, H, W] holding level / 255 (C = 1 for gray)."""
    with Image.open(path) as image:
        pixels = np.array(image)
    pixels = pixels[:, :, None] if pixels.ndim == 2 else pixels
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))).float() / 255


def score(image: Tensor, reference: Tensor) -> dict[str, float]:
    """:data:`METRIC_NAMES` of an 8-bit image [C, H, W] against the clean one, as the evaluation's MetricSuite
    (PSNR and PSNR-B capped at 100 dB)."""
    from jpegrestore.metrics import MetricSuite

    values = MetricSuite(list(METRIC_NAMES)).per_image(image[None].float(), reference[None].float())
    return {name: float(value[0]) for name, value in values.items()}


def _slug(label: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)
    return "_".join(part for part in keep.split("_") if part)


def run_method(bank: MethodBank, label: str, prepared: PreparedInput, workdir: Path, samples: int = 1,
               seed: int = 0, project: bool = False) -> MethodResult:
    """Restore ``prepared`` with the method ``label`` exactly as ``jpegrestore restore IN -o OUT [--project]
    [--samples N --std-map --seed SEED]`` does (``samples``/``seed`` apply to stochastic methods only)."""
    from jpegrestore.evaluation.files import restore_file, sample_paths
    from jpegrestore.evaluation.methods import resolve_device
    from jpegrestore.metrics import quantize_8bit, sample_std

    if isinstance(samples, bool) or int(samples) != samples or samples < 1:
        raise ValueError(f"draws must be a positive integer, got {samples!r}")
    stochastic = bank.stochastic[label]
    draws = int(samples) if stochastic else 1
    method = bank.method(label, int(seed))
    target = workdir / f"{Path(prepared.name).stem}_{_slug(label)}.png"
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        restore_file(method, prepared.jpeg_path, target, project, resolve_device(bank.options.device), draws,
                     std_map=draws >= 2, seed=int(seed))
    seconds = time.perf_counter() - start
    result = MethodResult(label, sample_paths(target, draws), seconds, stochastic,
                          messages=[str(w.message) for w in caught])
    first = load_png(result.images[0])
    if prepared.reference is not None:
        result.metrics = score(first, prepared.reference)
    if draws >= 2:
        result.std_map = target.with_name(f"{target.stem}_std.png")
        stacked = torch.stack([load_png(p) for p in result.images])[:, None]
        result.mean_std = float(sample_std(quantize_8bit(stacked)).per_image[0])
    return result


def compare(bank: MethodBank, labels: Sequence[str], prepared: PreparedInput, workdir: Path, samples: int = 1,
            seed: int = 0, project: bool = False, progress: Progress | None = None) -> list[MethodResult]:
    """The JPEG itself (label "JPEG", its libjpeg decoding) and then every method of ``labels``, in order. A method
    that cannot restore this input (e.g. a colour-only network and a gray JPEG) gets a result with its ``error``."""
    if not labels:
        raise ValueError("no method chosen: tick at least one")
    baseline = MethodResult("JPEG", [prepared.jpeg_png], 0.0)
    if prepared.reference is not None:
        baseline.metrics = score(load_png(prepared.jpeg_png), prepared.reference)
    results = [baseline]
    for index, label in enumerate(labels):
        if progress is not None:
            progress(index / len(labels), f"restoring with {label}")
        try:
            results.append(run_method(bank, label, prepared, workdir, samples, seed, project))
        except (OSError, ValueError, RuntimeError) as error:
            text = str(error).replace(str(prepared.jpeg_path), prepared.name)
            results.append(MethodResult(label, [], 0.0, bank.stochastic[label], error=text))
    if progress is not None:
        progress(1.0, "done")
    return results


def zoom(path: str | Path, x: int, y: int, size: int, display: int = 256) -> np.ndarray:
    """The ``size`` x ``size`` region at column ``x``, row ``y`` of an image (clipped to it), magnified with
    nearest neighbour to about ``display`` pixels: uint8 [h, w, 3] (gray repeated)."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        width, height = image.size
        size = max(1, min(int(size), width, height))
        left, top = min(max(0, int(x)), width - size), min(max(0, int(y)), height - size)
        crop = image.crop((left, top, left + size, top + size))
        scale = max(1, round(display / size))
        return np.asarray(crop.resize((size * scale, size * scale), Image.Resampling.NEAREST))
