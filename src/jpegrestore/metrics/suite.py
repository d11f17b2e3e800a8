"""A set of metrics built by name that degrades gracefully when weights are missing.

>>> suite = MetricSuite(["psnr", "psnr_y", "ssim", "psnrb_y", "lpips_alex", "fid"])
>>> suite.status                         # {"lpips_alex": "unavailable (missing alexnet-owt-7be5be79.pth)", ...}
>>> suite.update(restored, original)     # per-image values, accumulated; FID fed
>>> suite.compute()                      # {"psnr": 31.2, ..., "lpips_alex": "unavailable (missing ...)"}

Metrics whose pretrained files cannot be found are never dropped: they stay in every
result as ``"unavailable (missing FILE)"`` while all the others are computed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn

from jpegrestore.metrics.bpp import bits_per_pixel
from jpegrestore.metrics.colour import channel_label
from jpegrestore.metrics.protocol import cap_psnr
from jpegrestore.metrics.psnr import psnr
from jpegrestore.metrics.psnrb import psnrb
from jpegrestore.metrics.ssim import ssim
from jpegrestore.weights import MissingWeightsError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MetricInfo:
    """Display name, direction and kind of a metric: "pixel", "model", "set", "jpeg", or "method" (reported by a
    stochastic or iterative method itself, see ``evaluation.methods``)."""

    title: str
    higher_is_better: bool
    kind: str


METRICS: dict[str, MetricInfo] = {
    "psnr": MetricInfo("PSNR", True, "pixel"),
    "ssim": MetricInfo("SSIM", True, "pixel"),
    "psnrb": MetricInfo("PSNR-B", True, "pixel"),
    "psnr_y": MetricInfo("PSNR", True, "pixel"),
    "ssim_y": MetricInfo("SSIM", True, "pixel"),
    "psnrb_y": MetricInfo("PSNR-B", True, "pixel"),
    "lpips_alex": MetricInfo("LPIPS (Alex)", False, "model"),
    "lpips_vgg": MetricInfo("LPIPS (VGG)", False, "model"),
    "dists": MetricInfo("DISTS", False, "model"),
    "musiq": MetricInfo("MUSIQ", True, "model"),
    "maniqa": MetricInfo("MANIQA", True, "model"),
    "clipiqa": MetricInfo("CLIPIQA", True, "model"),
    "fid": MetricInfo("FID", False, "set"),
    "fid_std": MetricInfo("FID std over repeats", False, "set"),
    "consistency": MetricInfo("Consistency RMSE (gray levels)", False, "jpeg"),
    "bpp": MetricInfo("JPEG bpp", False, "jpeg"),
    "sample_std": MetricInfo("Per-pixel std over samples (0..1)", True, "method"),
    "nfe": MetricInfo("Network evaluations per image", False, "method"),
}


def metric_label(name: str, y_convention: str = "jfif") -> str:
    """Table header of a metric, naming the channel for the pixel metrics, e.g. ``"PSNR [Y (JFIF full range)]"``."""
    info = METRICS[name]
    if info.kind != "pixel":
        return info.title
    return f"{info.title} [{channel_label(name.endswith('_y'), y_convention)}]"


def _build_model_metric(name: str, path: str | os.PathLike[str] | None, fid_repeats: int = 1) -> nn.Module:
    from jpegrestore.metrics.fid import build_fid
    from jpegrestore.metrics.iqa import NoReferenceMetric
    from jpegrestore.metrics.perceptual import DISTSMetric, LPIPSMetric

    builders: dict[str, Callable[[], nn.Module]] = {
        "lpips_alex": lambda: LPIPSMetric("alex", path),
        "lpips_vgg": lambda: LPIPSMetric("vgg", path),
        "dists": lambda: DISTSMetric(path, full_resolution=True),  # the papers' (pyiqa's) DISTS
        "fid": lambda: build_fid(path, repeats=fid_repeats),
        "musiq": lambda: NoReferenceMetric("musiq", path),
        "maniqa": lambda: NoReferenceMetric("maniqa", path),
        "clipiqa": lambda: NoReferenceMetric("clipiqa", path),
    }
    return builders[name]()


class MetricSuite:
    """Build metrics by name; compute per-image values and running means.

    Args:
        names: metric names, see :data:`METRICS`.
        y_convention: "jfif" or "bt601" for the ``*_y`` metrics.
        crop_border: pixels cropped on each side for the pixel metrics.
        subsampling: chroma subsampling for "consistency" and "bpp".
        weight_paths: optional explicit weights path per metric name.
        fid_repeats: K sets of restorations FID is computed on (:meth:`update_fid`); with K > 1 ``compute`` gives
            their mean FID as "fid" and its standard deviation (K - 1 in the denominator) as "fid_std".
    """

    def __init__(
        self,
        names: Sequence[str],
        y_convention: str = "jfif",
        crop_border: int = 0,
        subsampling: str = "4:2:0",
        weight_paths: Mapping[str, str | os.PathLike[str]] | None = None,
        fid_repeats: int = 1,
    ) -> None:
        unknown = [n for n in names if n not in METRICS]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; known: {', '.join(METRICS)}")
        reported = [n for n in names if METRICS[n].kind == "method"]
        if reported:
            raise ValueError(f"metric(s) {reported} are reported by the method itself, not computed by a suite")
        if not names:
            raise ValueError("MetricSuite needs at least one metric name")
        if "fid_std" in names:
            raise ValueError("fid_std is not a metric of its own: it comes with fid when FID is repeated "
                             "(method.fid_repeats=K)")
        self.fid_repeats = int(fid_repeats)
        self.names = list(dict.fromkeys(names))
        self.y_convention = y_convention
        self.subsampling = subsampling
        self.status: dict[str, str] = {}
        self.models: dict[str, nn.Module] = {}
        self._pixel: dict[str, Callable[[Tensor, Tensor], Tensor]] = {}
        paths = dict(weight_paths or {})
        for name in self.names:
            self.status[name] = "ok"
            kind = METRICS[name].kind
            if kind == "pixel":
                function = {"psnr": psnr, "ssim": ssim, "psnrb": psnrb}[name.removesuffix("_y")]
                self._pixel[name] = partial(
                    function, y_channel=name.endswith("_y"), y_convention=y_convention, crop_border=crop_border
                )
            elif kind in ("model", "set"):
                self._build(name, paths.get(name))
        self.reset()

    def _build(self, name: str, path: str | os.PathLike[str] | None) -> None:
        try:
            self.models[name] = _build_model_metric(name, path, self.fid_repeats)
        except MissingWeightsError as error:
            self.status[name] = f"unavailable (missing {', '.join(error.missing)})"
            log.warning("metric %s is unavailable:\n%s", name, error)
        except (ValueError, OSError, ImportError, RuntimeError) as error:
            first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
            self.status[name] = f"unavailable (error: {first_line})"
            log.warning("metric %s could not be built: %s", name, error)

    @property
    def available(self) -> list[str]:
        """Names of the metrics that will be computed."""
        return [n for n in self.names if self.status[n] == "ok"]

    def to(self, device: torch.device | str) -> MetricSuite:
        """Move the network-based metrics to ``device``."""
        for model in self.models.values():
            model.to(device)
        return self

    def reset(self) -> None:
        """Forget accumulated values (and FID statistics)."""
        self._values: dict[str, list[Tensor]] = {n: [] for n in self.names}
        for name, model in self.models.items():
            if METRICS[name].kind == "set":
                model.reset()

    @torch.no_grad()
    def per_image(
        self, pred: Tensor, target: Tensor, quality: int | Sequence[int] | Tensor | None = None,
        tables: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Tensor[B] for every available per-image metric (not FID); nothing is accumulated.

        pred, target: float [B, C, H, W] in [0, 1]. "consistency" needs ``quality`` or
        ``tables``; "bpp" (size of the JPEG of ``target``) needs ``quality``. PSNR and PSNR-B are
        capped at :data:`~jpegrestore.metrics.protocol.PSNR_CEILING_DB` so means stay finite.
        Callers that report to users pass ``quantize_8bit(pred)`` (see :mod:`.protocol`).
        """
        values: dict[str, Tensor] = {}
        for name in self.available:
            kind = METRICS[name].kind
            if kind == "pixel":
                value = self._pixel[name](pred, target)
                values[name] = value if name.startswith("ssim") else cap_psnr(value)
            elif kind == "model":
                values[name] = self.models[name](pred, target).float()
            elif name == "consistency":
                values[name] = self._consistency(pred, target, quality, tables)
            elif name == "bpp":
                if quality is None:
                    raise ValueError("metric 'bpp' needs the JPEG quality (argument quality)")
                values[name] = bits_per_pixel(target, quality, self.subsampling).to(pred.device)
        return values

    def _consistency(self, pred: Tensor, target: Tensor, quality, tables) -> Tensor:
        from jpegrestore.metrics.consistency import jpeg_consistency

        if quality is None and tables is None:
            raise ValueError("metric 'consistency' needs the JPEG quality or tables (argument quality or tables)")
        return jpeg_consistency(pred, target, quality=None if tables is not None else quality, tables=tables,
                                subsampling=self.subsampling)

    @torch.no_grad()
    def update(
        self, pred: Tensor, target: Tensor, quality: int | Sequence[int] | Tensor | None = None,
        tables: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Like :meth:`per_image`, and also accumulate the values and feed FID (target = real)."""
        values = self.per_image(pred, target, quality, tables)
        for name, value in values.items():
            self._values[name].append(value.detach())
        if "fid" in self.available:
            self.update_fid(target, pred[None])
        return values

    @torch.no_grad()
    def update_fid(self, target: Tensor, restored: Tensor) -> None:
        """Feed FID (when available) the real images ``target`` [B, C, H, W] and ``restored`` [K, B, C, H, W]: K
        restorations of each image, restoration k to repeat k (K = ``fid_repeats``)."""
        if "fid" not in self.available:
            return
        if restored.dim() != 5 or restored.shape[0] != self.fid_repeats:
            raise ValueError(f"FID with {self.fid_repeats} repeat(s) takes [{self.fid_repeats}, B, C, H, W] "
                             f"restorations, got {tuple(restored.shape)}")
        fid = self.models["fid"]
        fid.update(target, real=True)
        for repeat, images in enumerate(restored):
            fid.update(images, real=False, repeat=repeat)

    def values(self) -> dict[str, Tensor]:
        """All accumulated per-image values, Tensor[N] per available per-image metric."""
        return {n: torch.cat(v) for n, v in self._values.items() if v}

    def compute(self) -> dict[str, float | str]:
        """Mean over all images seen (FID over the whole set); every requested name is present.

        Unavailable metrics map to ``"unavailable (missing FILE)"``; metrics with nothing to
        average yet to ``"no data"``.
        """
        results: dict[str, float | str] = {}
        for name in self.names:
            if self.status[name] != "ok":
                results[name] = self.status[name]
            elif METRICS[name].kind == "set":
                fid = self.models[name]
                if fid.real_count < 2 or min(fid.fake_counts) < 2:
                    results[name] = "no data (FID needs at least 2 images)"
                else:
                    values = fid.compute()
                    results[name] = float(values.mean())
                    if self.fid_repeats > 1:
                        results["fid_std"] = float(values.std())
            elif self._values[name]:
                results[name] = float(torch.cat(self._values[name]).double().mean())
            else:
                results[name] = "no data"
        return results
