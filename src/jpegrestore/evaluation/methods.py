"""Restoration methods behind one interface, so every method reports through the same evaluation.

A method is any callable ``restore(coeffs: jpeg.Coefficients, jpeg_image: Tensor) -> Tensor`` that
returns the restored image [B, C, H, W] in [0, 1] (C as in ``jpeg_image``: 3, or 1 for grayscale), with
a ``name`` attribute for tables. ``coeffs`` are the exact quantized coefficients of the JPEG and
``jpeg_image`` its libjpeg decoding. Sampler-based methods (DDRM-JPEG, CODiff, ...) plug in as a
class with that call signature, named by ``_target_`` in a ``conf/method/*.yaml``.

Optional parts of the protocol, read by the evaluation and ``jpegrestore restore`` when present:

- ``extras``: ``{column: Tensor[B]}`` set by each call, per-image values the evaluation reports beside the
  metrics (e.g. ``{"nfe": ...}`` network evaluations per image). Names must be in ``metrics.METRICS``.
- ``last_samples``: Tensor [S, B, C, H, W] in [0, 1] set by each call of a stochastic method, the S draws
  of the call (the returned image is one of them or the mean of the first ones). The evaluation reports their
  per-pixel standard deviation (``sample_std``, when S >= 2).
- ``fid_repeats``: K >= 1 (default 1). FID is computed on the images the table scores (the returned ones); with
  K > 1 the evaluation reports the mean (``fid``) and standard deviation (``fid_std``) of K FIDs, FID k over
  draw k of ``last_samples`` for every image (the paper's protocol for stochastic methods: one restoration per
  image, repeated); ``last_samples`` then holds at least K draws and the returned image is draw 0.
- ``keyed_noise = True``: the evaluation calls the method as ``method(coeffs, jpeg_image, keys=[...])`` with one
  str per image (``"<image name>@q<quality>"``) that the method keys each image's noise with, so that an
  image's draws do not depend on its batch.
- ``sample(coeffs, jpeg_image, num_samples, generator=None) -> Tensor [S, B, C, H, W]`` in [0, 1]: S
  independent draws; ``jpegrestore restore --samples N`` writes each one.
- ``compression``: None, or ``compression(images, quality) -> (coeffs, jpeg_image)`` with a ``description``
  and a ``subsampling``: the evaluation compresses the clean images with it instead of libjpeg (a method
  evaluated under its authors' simulated JPEG, e.g. DDRM-JPEG's ``operator=authors``); the JPEG row uses it too.

A checkpoint whose task names an ``evaluation_method`` (``"module.Class"``) in its metadata is evaluated by
that class, built as ``Class(ckpt=..., name=..., device=..., tile=..., tile_overlap=..., **options)``; others
by :class:`CheckpointMethod`.
"""

from __future__ import annotations

import logging
import warnings
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from jpegrestore import jpeg
from jpegrestore.checkpoints import Checkpoint, CheckpointSource, load_network
from jpegrestore.evaluation.precision import network_autocast, precision_dtype
from jpegrestore.tiling import restore_tiled

log = logging.getLogger(__name__)


@runtime_checkable
class RestorationMethod(Protocol):
    """``method(coeffs, jpeg_image) -> restored [B, C, H, W] in [0, 1]``; ``method.name`` labels it."""

    name: str

    def __call__(self, coeffs: jpeg.Coefficients, jpeg_image: Tensor) -> Tensor: ...


def method_extras(method: object) -> dict[str, Tensor]:
    """The per-image ``extras`` columns of a method's last call ({} when it reports none)."""
    extras = getattr(method, "extras", None)
    return dict(extras) if extras else {}


def method_fid_repeats(method: object) -> int:
    """K of a method's ``fid_repeats`` (1 when it declares none)."""
    return int(getattr(method, "fid_repeats", None) or 1)


def method_samples(method: object) -> Tensor | None:
    """The draws [S, B, C, H, W] behind a stochastic method's last call, or None for a deterministic one."""
    samples = getattr(method, "last_samples", None)
    if samples is None:
        return None
    if samples.dim() != 5:
        raise ValueError(f"{getattr(method, 'name', method)}.last_samples must be [S, B, C, H, W], "
                         f"got {tuple(samples.shape)}")
    return samples


class JPEGDecode:
    """The baseline: plain libjpeg decoding (returns ``jpeg_image`` unchanged)."""

    name = "jpeg"

    def __init__(self, **_: object) -> None:
        pass

    def __call__(self, coeffs: jpeg.Coefficients, jpeg_image: Tensor) -> Tensor:
        return jpeg_image


def supported_subsamplings(network: nn.Module) -> tuple[str, ...]:
    """Chroma layouts a network restores: its ``supported_subsampling`` attribute, else QGAC's
    ("4:4:4", "4:2:0"), else all three."""
    declared = getattr(network, "supported_subsampling", None)
    if declared is not None:
        return tuple(declared)
    from jpegrestore.nn.qgac import QGAC

    if isinstance(network, QGAC):
        return ("4:4:4", "4:2:0")
    return tuple(jpeg.SUBSAMPLING_FACTORS)


def as_supported_layout(coeffs: jpeg.Coefficients, jpeg_image: Tensor, supported: tuple[str, ...]) -> jpeg.Coefficients:
    """Coefficients a network can take: unchanged when their layout is supported (or grayscale); otherwise
    the decoded image re-encoded exactly at 4:4:4 (or 4:2:0) with the file's own tables.

    Re-encoding quantizes the upsampled chroma once more with the file's chroma table, so the network
    sees a JPEG of the same quality in a layout it knows. Projection with the original coefficients
    (``--project``) still makes the result consistent with the real file.
    """
    if coeffs.cb is None or coeffs.subsampling in supported:
        return coeffs
    target = "4:4:4" if "4:4:4" in supported else supported[0]
    warnings.warn(
        f"this network does not restore {coeffs.subsampling} colour; restoring the decoded image re-encoded "
        f"as {target} with the file's quantization tables",
        stacklevel=2,
    )
    return jpeg.encode(jpeg_image.float(), tables=coeffs.qt, subsampling=target, rounding="exact")


class NetworkMethod:
    """A trained restoration network (``forward(coeffs) -> image`` on a 0..1 scale), tiled for large images.

    Args:
        network: the module (moved to ``device``, put in eval mode).
        name: label in tables.
        device: where to run ("cpu", "cuda", "cuda:1", or "auto").
        tile: tile size in pixels (multiple of 16) above which images are tiled; None/0: never tile.
        tile_overlap: overlap of neighbouring tiles in pixels (a multiple of 16 recommended).
        precision: "32" (default), "bf16" or "16": the network under autocast (``evaluation.precision``).
    """

    def __init__(self, network: nn.Module, name: str = "model", device: str | torch.device = "cpu",
                 tile: int | None = 512, tile_overlap: int = 32, precision: str = "32") -> None:
        self.device = resolve_device(device)
        self.dtype = precision_dtype(precision)
        self.network = network.to(self.device).eval()
        self.name = name
        self.tile = tile
        self.tile_overlap = tile_overlap
        self.supported = supported_subsamplings(network)

    def _restore_tile(self, coeffs: jpeg.Coefficients) -> Tensor:
        with network_autocast(self.device, self.dtype):
            restored = self.network(coeffs)
        return restored.float()

    @torch.no_grad()
    def __call__(self, coeffs: jpeg.Coefficients, jpeg_image: Tensor) -> Tensor:
        """[B, C, H, W] in [0, 1] on the network's device."""
        coeffs = as_supported_layout(coeffs.to(self.device), jpeg_image.to(self.device), self.supported)
        restored = restore_tiled(self._restore_tile, coeffs, self.tile, self.tile_overlap)
        if restored.shape[1] != jpeg_image.shape[1]:
            raise ValueError(
                f"{self.name} returned {restored.shape[1]} channels for a {jpeg_image.shape[1]}-channel JPEG"
            )
        return restored.clamp(0, 1)


class CheckpointMethod(NetworkMethod):
    """The network stored in a jpegrestore checkpoint, rebuilt from the checkpoint alone (``load_network``)."""

    def __init__(self, ckpt: CheckpointSource | None = None, name: str | None = None,
                 device: str | torch.device = "cpu", tile: int | None = 512, tile_overlap: int = 32,
                 precision: str = "32") -> None:
        if not ckpt:
            raise ValueError("method=checkpoint needs a checkpoint: pass ckpt=PATH")
        checkpoint = Checkpoint.of(ckpt)
        network = load_network(checkpoint, map_location="cpu")
        label = name or checkpoint.recipe
        log.info("loaded %s (%s) from %s", type(network).__name__, label, ckpt)
        super().__init__(network, label, device, tile, tile_overlap, precision)
        self.ckpt = str(ckpt)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """"auto"/None -> cuda when available else cpu; other values as torch.device (ValueError if unusable)."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device must be cpu, cuda, cuda:N or auto, got {device!r}") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available (use device=cpu)")
    return resolved


def checkpoint_method(
    ckpt: CheckpointSource | None = None, name: str | None = None, device: str | torch.device = "auto",
    tile: int | None = 512, tile_overlap: int = 32, outside_range: str | None = None, precision: str | None = None,
    **options: object,
) -> RestorationMethod:
    """The method that restores with ``ckpt``: the class its metadata names (``evaluation_method``, e.g. CODiff's,
    which rebuilds its Stable Diffusion base), else :class:`CheckpointMethod`. The file is read once: that class
    gets the read :class:`~jpegrestore.checkpoints.Checkpoint` as ``ckpt`` (``str(ckpt)`` is its path).
    ``options`` (e.g. ``samples=8, seed=0``, ``pretrained=DIR``; None values dropped) go to that class; a plain network checkpoint accepts none
    (ValueError naming them). ``precision`` ("32" | "bf16" | "16") applies to every method; None leaves each method at
    its default ("32"), and is not passed to a named class.

    When the checkpoint recorded the qualities and layouts it was trained on, JPEGs outside them are handled by
    ``outside_range`` ("warn" | "skip" | "run", see :mod:`jpegrestore.evaluation.domain`; None: what the checkpoint
    recorded, else "warn").
    """
    from jpegrestore.evaluation.domain import guard
    from jpegrestore.utils.instantiate import instantiate_object

    if not ckpt:
        raise ValueError("method=checkpoint needs a checkpoint: pass ckpt=PATH")
    options = {k: v for k, v in options.items() if v is not None}
    ckpt = Checkpoint.of(ckpt)  # read once; the method's class gets the object
    meta = ckpt.meta
    if meta.get("not_a_restorer"):
        raise ValueError(f"{ckpt} is a {meta.get('recipe', 'unknown')} checkpoint, not a JPEG restorer: "
                         f"{meta['not_a_restorer']}")
    target = meta.get("evaluation_method")
    if not target:
        if options:
            raise ValueError(
                f"{ckpt} holds a deterministic network ({meta.get('recipe', 'unknown')}); it takes no method "
                f"options {sorted(options)}"
            )
        method = CheckpointMethod(ckpt, name=name, device=device, tile=tile, tile_overlap=tile_overlap,
                                  precision=precision or "32")
    else:
        method = instantiate_object(
            {"_target_": target, "ckpt": ckpt, "name": name, "device": device, "tile": tile,
             "tile_overlap": tile_overlap, **({"precision": precision} if precision else {}), **options}
        )
    return guard(method, meta.get("trained_on"), outside_range)


def build_method(
    config: object | None, ckpt: CheckpointSource | None = None, device: str | torch.device = "auto",
    tile: int | None = 512, tile_overlap: int = 32, outside_range: str | None = None, pretrained: str | None = None,
) -> RestorationMethod:
    """A method from its config (``{_target_: ..., **kwargs}``); ``None``, ``{}`` or ``{name: auto}`` picks
    the checkpoint's method (:func:`checkpoint_method`, with the config's non-null keys other than ``name`` and
    ``pretrained`` (a CODiff base) as options) when ``ckpt`` is given and plain JPEG decoding otherwise.

    ValueError when the built object lacks the ``restore(coeffs, jpeg_image)`` call or a ``name``.
    """
    from jpegrestore.utils.instantiate import instantiate_object, to_plain

    spec = to_plain(config) if config is not None else {}
    if not isinstance(spec, dict):
        raise ValueError(f"method config must be a mapping with _target_, got {spec!r}")
    if not spec.get("_target_"):
        if spec.get("name", "auto") != "auto":
            raise ValueError(f"method config {spec!r} needs a _target_ (or name: auto)")
        options = {k: v for k, v in spec.items() if k != "name" and v is not None}
        if ckpt:
            return checkpoint_method(ckpt, device=device, tile=tile, tile_overlap=tile_overlap,
                                     outside_range=outside_range, pretrained=pretrained, **options)
        if options:
            raise ValueError(f"method options {sorted(options)} need a checkpoint (ckpt=PATH)")
        return JPEGDecode()
    method = instantiate_object(spec)
    if not callable(method) or not isinstance(getattr(method, "name", None), str):
        raise ValueError(
            f"method {spec['_target_']!r} must be callable as restore(coeffs, jpeg_image) and have a str name"
        )
    return method
