"""The evaluation: same images, same compression (exact libjpeg-turbo via ``jpeg.encode/decode``), same
metrics and one table for every method.

For each quality and image: ``coeffs = jpeg.encode(x, q, rounding="exact")``, ``jpeg_image =
jpeg.decode(coeffs, rounding="exact")`` (or the method's own ``compression``, see ``evaluation.methods``),
``restored = quantize_8bit(method(coeffs, jpeg_image))``;
per-image metrics of both against the original go to metrics.csv / metrics.json, means per quality to
summary.md, and a few comparison panels to comparisons/*.png. Metrics are computed on the 8-bit rounded
images users get as PNGs, with PSNR and PSNR-B capped (see :mod:`jpegrestore.metrics.protocol`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from jpegrestore import jpeg
from jpegrestore.evaluation import tables
from jpegrestore.evaluation.grids import save_comparison
from jpegrestore.metrics import METRICS, PROTOCOL_NOTE, PSNR_CEILING_DB, metric_label, quantize_8bit
from jpegrestore.evaluation.methods import (
    JPEGDecode, RestorationMethod, build_method, method_extras, method_fid_repeats, method_samples, resolve_device,
)

log = logging.getLogger(__name__)

DEFAULT_METRICS = ("psnr", "ssim", "psnrb", "psnr_y", "ssim_y", "psnrb_y", "lpips_alex", "dists", "consistency", "bpp")
DEFAULT_QUALITIES = (5, 10, 20, 30, 40, 50)
#: Columns a method reports itself (``extras``, ``last_samples``), never computed by the metric suite.
METHOD_REPORTED = tuple(n for n, info in METRICS.items() if info.kind == "method")


@dataclass
class EvaluationResult:
    """Per-image rows, means {method: {quality: {metric: value}}}, metric status and written files."""

    rows: list[dict[str, Any]]
    means: dict[str, dict[int, dict[str, float]]]
    status: dict[str, str]
    method: str
    files: dict[str, Path] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def check_qualities(qualities: Sequence[int]) -> list[int]:
    """Sorted unique ints in 1..100; ValueError naming the key ``qf`` otherwise."""
    values = list(qualities) if isinstance(qualities, Sequence) and not isinstance(qualities, str) else [qualities]
    if not values:
        raise ValueError("qf must list at least one JPEG quality, e.g. qf=[10,20]")
    for q in values:
        if isinstance(q, bool) or not isinstance(q, int) or not 1 <= q <= 100:
            raise ValueError(f"qf entries must be ints in 1..100, got {q!r}")
    return sorted(set(values))


def eval_source(data: Mapping[str, Any] | str | None):
    """The image source of the evaluation: ``data.source``, else ``data.test_source``, else ``data.val_source``.

    Accepts "sample" (the sample test split: astronaut, camera), "sample:<split>", a folder path, or a
    ``{_target_: ...}`` source config (e.g. HFSource).
    """
    from jpegrestore.data import resolve_source

    if isinstance(data, str) or data is None:
        spec = data or "sample"
    else:
        spec = next((data.get(k) for k in ("source", "test_source", "val_source") if data.get(k)), None)
        if spec is None:
            raise ValueError("no evaluation images: set data.source=/path/to/folder (or data.test_source)")
    return resolve_source(spec, "test")


def iterate_images(source, max_images: int | None, skipped: list[str]) -> Iterator[tuple[str, Tensor]]:
    """(name, float [1, 3, H, W] in [0, 1]) for each usable image; unusable ones are logged and recorded."""
    from jpegrestore.data import BadImageError, load_rgb

    count = len(source) if max_images is None else min(len(source), int(max_images))
    for index in range(count):
        try:
            array = load_rgb(source, index)
        except BadImageError as error:
            log.warning("skipping %s", error)
            skipped.append(str(error))
            continue
        image = torch.from_numpy(array.copy()).permute(2, 0, 1)[None].float() / 255
        yield source.name(index), image


def _batches(items: Iterator[tuple[str, Tensor]], batch_size: int) -> Iterator[tuple[list[str], Tensor]]:
    """Group consecutive images of equal size into batches of at most ``batch_size``."""
    names: list[str] = []
    images: list[Tensor] = []
    for name, image in items:
        if images and (len(images) == batch_size or image.shape != images[0].shape):
            yield names, torch.cat(images)
            names, images = [], []
        names.append(name)
        images.append(image)
    if images:
        yield names, torch.cat(images)


def _safe_stem(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(name).with_suffix("").as_posix())


class Evaluator:
    """Runs one method and the JPEG baseline over a source at several qualities and writes the report.

    Args:
        method: a :class:`RestorationMethod` (``JPEGDecode`` alone reports the baseline only).
        metrics: metric names for :class:`jpegrestore.metrics.MetricSuite` ("fid" is computed per quality, on
            the images the table scores; over K repeats, mean and std, for a method with ``fid_repeats`` K > 1).
        qualities: JPEG qualities.
        subsampling: chroma subsampling of the compression.
        device: where images, coefficients and metrics live.
        comparisons: number of leading images that get comparison panels (at every quality).
    """

    def __init__(
        self, method: RestorationMethod, metrics: Sequence[str] = DEFAULT_METRICS,
        qualities: Sequence[int] = DEFAULT_QUALITIES, subsampling: str = "4:2:0", device: str = "auto",
        y_convention: str = "jfif", crop_border: int = 0, weight_paths: Mapping[str, str] | None = None,
        batch_size: int = 1, comparisons: int = 2, progress: bool = True,
    ) -> None:
        from jpegrestore.metrics import MetricSuite

        if subsampling not in jpeg.SUBSAMPLING_FACTORS:
            raise ValueError(f"subsampling must be one of {list(jpeg.SUBSAMPLING_FACTORS)}, got {subsampling!r}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.method = method
        self.baseline_only = isinstance(method, JPEGDecode)
        self.compression = getattr(method, "compression", None)
        if self.compression is not None and self.compression.subsampling != subsampling:
            raise ValueError(f"method {method.name} compresses as {self.compression.description}, in "
                             f"{self.compression.subsampling} only; got subsampling={subsampling}")
        self.method_name = tables.JPEG if self.baseline_only else (method.name if method.name != tables.JPEG else "model")
        self.qualities = check_qualities(qualities)
        self.subsampling = subsampling
        self.device = resolve_device(device)
        self.batch_size = int(batch_size)
        self.comparisons = int(comparisons)
        self.progress = progress
        self.y_convention = y_convention
        names = [n for n in dict.fromkeys(metrics) if n not in METHOD_REPORTED]
        per_image = [n for n in names if n != "fid"]
        kwargs = dict(y_convention=y_convention, crop_border=crop_border, subsampling=subsampling,
                      weight_paths=weight_paths)
        self.metric_names = names
        self.reported: set[str] = set()  # method-reported columns seen so far (extras, sample_std)
        self.suite = MetricSuite(per_image, **kwargs).to(self.device) if per_image else None
        #: label -> method run on every batch beside the JPEG baseline (in this order)
        self.methods: dict[str, RestorationMethod] = {} if self.baseline_only else {self.method_name: method}
        #: False: a method's exception stops the run; True: its rows for that batch are marked failed
        self.record_failures = False
        self.bar = None  # progress bar over methods x images x qualities, set by ``run``
        self._fid_kwargs = kwargs if "fid" in names else None
        self.fid_repeats = 1 if self.baseline_only else method_fid_repeats(method)
        self.fid = self._fid_suites()
        self.status = dict(self.suite.status if self.suite else {})
        if self.fid:
            self.status["fid"] = self.fid[tables.JPEG].status["fid"]

    # ------------------------------------------------------------------ one batch

    def _measure(self, side: str, pred: Tensor, target: Tensor, quality: int,
                 fid_repeats: Tensor | None = None) -> list[dict[str, float]]:
        """Per-image metric rows of ``pred``; FID is fed ``pred``, or ``fid_repeats`` [K, B, C, H, W] (restoration k
        of every image to repeat k) when the side repeats FID."""
        values = self.suite.per_image(pred, target, quality=quality) if self.suite else {}
        if side in self.fid and self.status.get("fid") == "ok":
            self.fid[side].update_fid(target, pred[None] if fid_repeats is None else fid_repeats)
        host = {k: v.detach().double().cpu().tolist() for k, v in values.items()}
        return [{k: host[k][i] for k in host} for i in range(pred.shape[0])]

    def compress(self, target: Tensor, quality: int) -> tuple[jpeg.Coefficients, Tensor]:
        """The JPEG of ``target`` [B, C, H, W] at ``quality`` (exact libjpeg-turbo, or the method's own
        ``compression``) and its 8-bit decoding (on ``self.device``)."""
        if self.compression is not None:  # the method's own (simulated) JPEG
            coeffs, decoded = self.compression(target, quality)
            return coeffs, quantize_8bit(decoded)
        coeffs = jpeg.encode(target, quality=quality, subsampling=self.subsampling, rounding="exact")
        return coeffs, quantize_8bit(jpeg.decode(coeffs, rounding="exact"))  # 8-bit already; kept explicit

    @torch.no_grad()
    def evaluate_batch(self, names: list[str], target: Tensor, quality: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Rows for one batch [B, C, H, W] at one quality (JPEG first, then every method), and the images for
        panels: ``jpeg``, ``target``, ``methods`` ({label: restored, or None where the method failed}) and, with
        one method, ``restored``."""
        target = target.to(self.device)
        try:
            coeffs, jpeg_image = self.compress(target, quality)
        except ValueError as error:
            raise ValueError(f"{', '.join(names)}: {error}") from error
        rows = []
        for name, values in zip(names, self._measure(tables.JPEG, jpeg_image, target, quality)):
            rows.append({"image": name, "quality": quality, "method": tables.JPEG, **values})
        self._advance(len(names))
        images: dict[str, Any] = {"jpeg": jpeg_image, "target": target, "methods": {}}
        for label, method in self.methods.items():
            try:
                method_rows, restored = self.restore_batch(label, method, names, coeffs, jpeg_image, target, quality)
            except Exception as error:  # noqa: BLE001 - reported per image, the other methods go on
                if not self.record_failures:
                    raise
                log.warning("method %s failed on %s at QF %d: %s", label, ", ".join(names), quality, error)
                message = f"{type(error).__name__}: {error}".replace("\n", " ")
                method_rows = [{"image": n, "quality": quality, "method": label, "error": message} for n in names]
                restored = None
            rows.extend(method_rows)
            images["methods"][label] = restored
            self._advance(len(names))
        if len(self.methods) == 1:
            images["restored"] = next(iter(images["methods"].values()))
        return rows, images

    def _advance(self, images: int) -> None:
        if self.bar is not None:
            self.bar.update(images)

    def restore_batch(self, label: str, method: RestorationMethod, names: list[str], coeffs: jpeg.Coefficients,
                      jpeg_image: Tensor, target: Tensor, quality: int) -> tuple[list[dict[str, Any]], Tensor]:
        """Rows of one method on one batch (metrics, its reported columns, seconds per image) and its 8-bit output."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        if getattr(method, "keyed_noise", False):  # each image's noise keyed by its name and quality
            output = method(coeffs, jpeg_image, keys=[f"{name}@q{quality}" for name in names])
        else:
            output = method(coeffs, jpeg_image)
        restored = quantize_8bit(output.to(self.device, torch.float32))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = (time.perf_counter() - start) / len(names)
        if restored.shape != target.shape:
            raise ValueError(f"method {label} returned {tuple(restored.shape)} for {tuple(target.shape)}")
        reported = self._method_reported(len(names), method, label)
        measured = self._measure(label, restored, target, quality, self._fid_draws(method, label))
        rows = []
        for i, (name, values) in enumerate(zip(names, measured)):
            extra = {k: v[i] for k, v in reported.items()}
            rows.append({"image": name, "quality": quality, "method": label, **values, **extra, "seconds": seconds})
        return rows, restored

    def _compression_description(self) -> str:
        if self.compression is not None:
            return self.compression.description
        return "jpeg.encode/decode, rounding=exact (identical to libjpeg-turbo)"

    def _fid_suites(self) -> dict[str, Any]:
        """One FID suite per side (JPEG, then every method), each over its method's ``fid_repeats``; {} without FID."""
        if self._fid_kwargs is None:
            return {}
        from jpegrestore.metrics import MetricSuite

        repeats = {tables.JPEG: 1, **{label: method_fid_repeats(m) for label, m in self.methods.items()}}
        return {side: MetricSuite(["fid"], fid_repeats=k, **self._fid_kwargs).to(self.device)
                for side, k in repeats.items()}

    def _fid_draws(self, method: RestorationMethod, label: str) -> Tensor | None:
        """The K restorations per image a method's FID repeats over (draws 0..K-1 of ``last_samples``, 8-bit), or
        None (K = 1: FID of the returned images)."""
        repeats = method_fid_repeats(method)
        if repeats == 1:
            return None
        samples = method_samples(method)
        if samples is None or samples.shape[0] < repeats:
            got = "no draws" if samples is None else f"{samples.shape[0]} draws"
            raise ValueError(f"method {label} asks for {repeats} FID repeats but its last call "
                             f"kept {got} per image (last_samples)")
        return quantize_8bit(samples[:repeats].to(self.device, torch.float32))

    def _method_reported(self, batch: int, method: RestorationMethod | None = None,
                         label: str | None = None) -> dict[str, list[float]]:
        """Columns a method (default: the evaluated one) reports for its last call: its ``extras`` and, from
        ``last_samples`` with S >= 2, the per-pixel standard deviation over draws (``sample_std``, 0..1 scale)."""
        from jpegrestore.metrics import sample_std

        method = self.method if method is None else method
        label = self.method_name if label is None else label
        columns = {}
        for key, value in method_extras(method).items():
            if key not in METRICS or METRICS[key].kind != "method":
                raise ValueError(f"method {label} reports unknown column {key!r}; known: {METHOD_REPORTED}")
            values = torch.as_tensor(value, dtype=torch.float64).flatten()
            if values.numel() == 1:
                values = values.expand(batch)
            if values.numel() != batch:
                raise ValueError(f"method {label} reported {values.numel()} {key!r} values for {batch} images")
            columns[key] = values.cpu().tolist()
        samples = method_samples(method)
        if samples is not None and samples.shape[0] >= 2:
            columns["sample_std"] = sample_std(quantize_8bit(samples.float())).per_image.double().cpu().tolist()
        self.reported.update(columns)
        return columns

    # ------------------------------------------------------------------ whole run

    def run(self, source, output_dir: str | Path, max_images: int | None = None,
            header: Sequence[str] = ()) -> EvaluationResult:
        """Evaluate every image of ``source`` at every quality and write the report into ``output_dir``."""
        from tqdm.auto import tqdm

        out = Path(output_dir)
        total = len(source) if max_images is None else min(len(source), int(max_images))
        self.bar = tqdm(total=total * len(self.qualities) * (1 + len(self.methods)), unit="img",
                        desc=f"evaluate {self.method_name} (methods x images x qualities)", disable=not self.progress)
        rows, set_metrics, skipped = self.collect(source, out / "comparisons", max_images)
        self.bar.close()
        if not rows:
            raise ValueError(f"no usable images in {getattr(source, 'where', source)} ({len(skipped)} skipped)")
        return self._report(out, rows, set_metrics, skipped, header)

    def collect(self, source, panel_dir: Path, max_images: int | None = None, transform: Any = None) -> tuple[list[dict[str, Any]], dict[str, dict[int, float | str]], list[str]]:
        """Rows of every image of ``source`` at every quality, set metrics {side: {quality: value}} and skipped
        images; panels of the leading images go to ``panel_dir``. ``transform`` maps each loaded image
        [1, 3, H, W] to the one evaluated. ``self.bar`` (when set) advances by one per image, quality and method
        (JPEG included)."""
        panel_dir.mkdir(parents=True, exist_ok=True)
        rows: list[dict[str, Any]] = []
        set_metrics: dict[str, dict[int, float | str]] = {}
        skipped: list[str] = []
        for qi, quality in enumerate(self.qualities):
            for suite in self.fid.values():
                suite.reset()
            seen = 0
            found = iterate_images(source, max_images, skipped if qi == 0 else [])
            if transform is not None:
                found = ((name, transform(image)) for name, image in found)
            for names, batch in _batches(found, self.batch_size):
                batch_rows, images = self.evaluate_batch(names, batch, quality)
                rows.extend(batch_rows)
                for i, name in enumerate(names):
                    if seen + i < self.comparisons:
                        self._save_panel(panel_dir, name, quality, images, i)
                seen += len(names)
            for side, suite in self.fid.items():
                set_metrics.setdefault(side, {})[quality] = suite.compute()
        return rows, set_metrics, skipped

    def _save_panel(self, panel_dir: Path, name: str, quality: int, images: dict[str, Any], i: int) -> None:
        """JPEG | every method (a gray column where it failed) | original, one PNG per image and quality."""
        restored = [None if r is None else r[i] for r in images["methods"].values()]
        labels = [f"JPEG q{quality}", *(l if r is not None else f"{l} (failed)"
                                         for l, r in zip(images["methods"], restored)), "original"]
        path = panel_dir / f"{_safe_stem(name)}_q{quality}.png"
        save_comparison(path, images["jpeg"][i], restored, images["target"][i], labels)

    def _report(self, out: Path, rows: list[dict[str, Any]], set_metrics: dict[str, dict[int, Any]],
                skipped: list[str], header: Sequence[str]) -> EvaluationResult:
        available = [n for n in self.metric_names if n != "fid" and self.status.get(n) == "ok"]
        available += [n for n in METHOD_REPORTED if n in self.reported]
        means = tables.means(rows, available)
        for side, per_quality in set_metrics.items():
            for quality, values in per_quality.items():
                for name in ("fid", "fid_std"):
                    if isinstance(values.get(name), float):
                        means.setdefault(side, {}).setdefault(quality, {})[name] = values[name]
        status = dict(self.status)
        fids = [values["fid"] for per_quality in set_metrics.values() for values in per_quality.values()]
        if "fid" in status and status["fid"] == "ok" and not any(isinstance(v, float) for v in fids):
            status["fid"] = next(str(v) for v in fids)
        table_metrics = list(self.metric_names)
        fid_note = []
        if "fid" in self.metric_names and self.fid_repeats > 1:
            table_metrics.insert(table_metrics.index("fid") + 1, "fid_std")
            status.setdefault("fid_std", status["fid"])
            fid_note = [f"FID of {self.method_name}: mean and std over {self.fid_repeats} repeats, each over one "
                        "restoration per image (draw k of every image in repeat k)"]
        header = [
            f"method: {self.method_name}", *header,
            f"compression: {self._compression_description()}, {self.subsampling}",
            f"qualities: {self.qualities}",
            PROTOCOL_NOTE,
            *([f"rows at the PSNR ceiling of {PSNR_CEILING_DB:g} dB: {capped}"] if (capped := _capped(rows)) else []),
            *([f"skipped images: {len(skipped)}"] if skipped else []),
            *fid_note,
        ]
        files = {"csv": out / "metrics.csv", "json": out / "metrics.json", "summary": out / "summary.md"}
        tables.write_csv(files["csv"], rows, available, self.y_convention)
        info = {
            "method": self.method_name, "qualities": self.qualities, "subsampling": self.subsampling,
            "y_convention": self.y_convention, "metric_status": status, "header": header, "skipped": skipped,
            "metric_labels": {n: metric_label(n, self.y_convention) for n in table_metrics},
            "fid_repeats": self.fid_repeats,
        }
        tables.write_json(files["json"], info, rows, means)
        files["summary"].write_text(
            tables.summary_markdown(means, table_metrics + [n for n in METHOD_REPORTED if n in self.reported],
                                    status, self.y_convention, self.method_name, header)
        )
        return EvaluationResult(rows, means, status, self.method_name, files, skipped)


def _capped(rows: Sequence[Mapping[str, Any]]) -> int:
    """Rows (image, quality, method) whose PSNR or PSNR-B sits at the ceiling: (practically) exact restorations."""
    names = ("psnr", "psnr_y", "psnrb", "psnrb_y")
    return sum(any(isinstance(r.get(n), float) and r[n] >= PSNR_CEILING_DB for n in names) for r in rows)


def evaluate_config(cfg: Mapping[str, Any], output_dir: str | Path) -> EvaluationResult:
    """Run the evaluation described by a composed ``conf/evaluate.yaml`` and write it to ``output_dir``.

    Only the keys used here are resolved, so a config composed outside a Hydra run works too. With ``methods``
    or ``datasets`` set, the run compares every listed method on every data set
    (:func:`jpegrestore.evaluation.compare.evaluate_comparison`).
    """
    from jpegrestore.utils.instantiate import to_plain

    if cfg.get("methods") or cfg.get("datasets"):
        from jpegrestore.evaluation.compare import evaluate_comparison

        return evaluate_comparison(cfg, output_dir)

    def get(key: str, default: Any = None) -> Any:
        value = cfg.get(key, default)
        return default if value is None and default is not None else to_plain(value)

    ckpt = get("ckpt")
    if ckpt:  # read once: the method, its network and the header all take this object
        from jpegrestore.checkpoints import Checkpoint

        ckpt = Checkpoint.read(ckpt)
    method = build_method(cfg.get("method"), ckpt, get("device", "auto"), get("tile"), int(get("tile_overlap", 32)),
                          get("outside_range"), pretrained=get("pretrained"))
    source = eval_source(cfg.get("data"))
    evaluator = Evaluator(
        method, metrics=get("metrics", list(DEFAULT_METRICS)), qualities=get("qf", list(DEFAULT_QUALITIES)),
        subsampling=get("subsampling", "4:2:0"), device=get("device", "auto"),
        y_convention=get("y_convention", "jfif"), crop_border=int(get("crop_border", 0)),
        weight_paths=get("weights") or None, batch_size=int(get("batch_size", 1)),
        comparisons=int(get("comparisons", 2)), progress=bool(get("progress", True)),
    )
    header = [f"data: {getattr(source, 'where', source)} ({len(source)} images)"]
    if ckpt:
        from jpegrestore.checkpoints import checkpoint_description

        header[:0] = [f"checkpoint: {ckpt}", *checkpoint_description(ckpt)]  # the path, then what it records
    domain = getattr(method, "domain", None)
    if domain is not None:
        from jpegrestore.evaluation.domain import qualities_outside

        outside = qualities_outside(domain, evaluator.qualities)
        note = f"; outside it: QF {outside} (outside_range={method.policy})" if outside else ""
        header.append(f"trained on: {domain.describe()}{note}")
    return evaluator.run(source, output_dir, get("max_images"), header)
