"""Published restoration networks as evaluation methods, through spandrel (which detects the architecture from
the weight file): ``python evaluate.py method=spandrel method.weights=fbcnn_color`` or a ``methods`` entry
``{method: spandrel, weights: FILE}``.

What each network needs is handled here: FBCNN's quality input (its own prediction by default, the file's
quality, or a fixed override), networks published per quality (SwinIR's JPEG models: ``weights`` maps QF to a file,
each JPEG goes to the network of the nearest QF), grayscale networks on the luma of colour JPEGs (the JPEG's chroma
put back),
colour networks on grayscale JPEGs (the luma of their output), symmetric padding of the input to the network's
window or stride multiple, and tiling of large images in the coefficient domain (``evaluation.tiling``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from jpegrestore import jpeg
from jpegrestore.evaluation.methods import resolve_device
from jpegrestore.evaluation.tiling import restore_tiled, needs_tiling
from jpegrestore.metrics import quantize_8bit

log = logging.getLogger(__name__)

#: FBCNN's quality input: None = the network's own prediction, "file" = the quality estimated from the JPEG's tables.
QUALITY_FROM_FILE = "file"


def pad_symmetric(image: Tensor, multiple: int, minimum: int = 0) -> Tensor:
    """[B, C, H, W] extended at the bottom and right by mirroring (edge pixel repeated, as SwinIR's test script
    does) to sides that are multiples of ``multiple`` and at least ``minimum``."""
    height, width = image.shape[-2:]
    target_h = max(-(-height // multiple) * multiple, -(-minimum // multiple) * multiple)
    target_w = max(-(-width // multiple) * multiple, -(-minimum // multiple) * multiple)
    while image.shape[-2] < target_h:
        image = torch.cat([image, image.flip(-2)], -2)
    while image.shape[-1] < target_w:
        image = torch.cat([image, image.flip(-1)], -1)
    return image[..., :target_h, :target_w]


def size_multiple(descriptor) -> int:
    """The side multiple a network's input is padded to: SwinIR's window (its JPEG test script pads to it), else
    spandrel's size requirement (networks such as SCUNet or FBCNN pad themselves as their authors do)."""
    window = getattr(descriptor.model, "window_size", None)
    multiple = int(descriptor.size_requirements.multiple_of)
    if descriptor.architecture.id == "SwinIR" and isinstance(window, int) and window > 1:
        return int(window) * multiple
    return multiple


@dataclass
class Network:
    """One loaded network: spandrel's descriptor, its input channels and the side multiple and minimum it needs."""

    descriptor: Any
    architecture: str
    channels: int
    multiple: int
    minimum: int
    weights: str


def load_network(weights: str | Path, device: torch.device) -> Network:
    """A 1x restoration network from a weight file (registry name, path or bare file name) through spandrel."""
    try:
        import spandrel
    except ImportError as error:  # pragma: no cover - spandrel is a pinned dependency
        raise ImportError("method=spandrel needs the spandrel package: pip install spandrel") from error
    from jpegrestore.weights import locate

    path = str(locate(weights))
    descriptor = spandrel.ModelLoader(device="cpu").load_from_file(path)
    if not isinstance(descriptor, spandrel.ImageModelDescriptor) or descriptor.scale != 1:
        raise ValueError(f"{path}: a {descriptor.architecture.name} model with scale "
                         f"{getattr(descriptor, 'scale', '?')} is not a 1x image restorer")
    descriptor.to(device).eval()
    return Network(descriptor, descriptor.architecture.id, descriptor.input_channels, size_multiple(descriptor),
                   descriptor.size_requirements.minimum, path)


class SpandrelMethod:
    """A pixel-domain restoration network loaded by spandrel from a published weight file.

    Args:
        weights: a registry name (``jpegrestore weights`` lists fbcnn_color, swinir_color_car_q10, ...), a file
            path, or a bare file name searched in $JPEGRESTORE_WEIGHTS and the torch hub cache; or {QF: file} for
            networks published per quality (each JPEG is restored by the network of the QF nearest to the quality
            estimated from its tables).
        quality: FBCNN only: None (the network predicts the quality, the authors' default), "file" (the quality
            estimated from each JPEG's tables) or an int 1..100 (a fixed override, e.g. higher for smoother output).
        name: label in tables (None: the architecture, e.g. "FBCNN").
        device: "cpu", "cuda", "cuda:N" or "auto".
        tile, tile_overlap: images larger than ``tile`` pixels are restored in MCU-aligned tiles (None/0: never).
    """

    def __init__(self, weights: str | Path | None = None, quality: int | str | None = None, name: str | None = None,
                 device: str | torch.device = "auto", tile: int | None = 512, tile_overlap: int = 32) -> None:
        if not weights:
            raise ValueError("method=spandrel needs a weight file: method.weights=FILE (or a name listed by "
                             "`jpegrestore weights`)")
        self.device = resolve_device(device)
        per_quality = ({int(q) if str(q).isdigit() else q: file for q, file in weights.items()}
                       if isinstance(weights, Mapping) else {None: weights})
        if None not in per_quality and not all(isinstance(q, int) and 1 <= q <= 100 for q in per_quality):
            raise ValueError(f"method.weights as a mapping takes JPEG qualities 1..100 as keys, got {list(per_quality)}")
        self.networks = {q: load_network(file, self.device) for q, file in per_quality.items()}
        first = next(iter(self.networks.values()))
        self.weights = first.weights if len(self.networks) == 1 else {q: n.weights for q, n in self.networks.items()}
        self.architecture = first.architecture
        if quality is not None and any(n.architecture != "FBCNN" for n in self.networks.values()):
            raise ValueError(f"method.quality is FBCNN's quality input; {first.weights} holds a {self.architecture}")
        if quality is not None and quality != QUALITY_FROM_FILE and not (
                isinstance(quality, int) and not isinstance(quality, bool) and 1 <= quality <= 100):
            raise ValueError(f"method.quality must be null, {QUALITY_FROM_FILE!r} or an int in 1..100, got {quality!r}")
        self.quality = quality
        self.network = first
        self.name = name or self.architecture
        self.tile, self.tile_overlap = tile, tile_overlap
        self.extras: dict[str, Tensor] = {}
        self._calls = 0
        for net in self.networks.values():
            log.info("%s (%d-channel input, padded to multiples of %d) from %s", net.architecture, net.channels,
                     net.multiple, net.weights)

    @property
    def channels(self) -> int:
        return self.network.channels

    @property
    def multiple(self) -> int:
        return self.network.multiple

    def network_for(self, coeffs: jpeg.Coefficients) -> Network:
        """The network of the QF nearest to the estimated quality of the batch's first JPEG (the only one, unless
        ``weights`` maps qualities to files)."""
        if None in self.networks:
            return self.networks[None]
        estimated = int(jpeg.estimate_quality(coeffs.qt[:1]).quality[0])
        return self.networks[min(self.networks, key=lambda q: (abs(q - estimated), q))]

    def _network(self, image: Tensor, coeffs: jpeg.Coefficients) -> Tensor:
        """The network on [B, C, H, W] in [0, 1] with C its input channels, padded and cropped back; FBCNN gets
        its quality input."""
        height, width = image.shape[-2:]
        net = self.network
        padded = pad_symmetric(image, net.multiple, net.minimum)
        self._calls += 1
        with torch.inference_mode():
            if net.architecture == "FBCNN" and self.quality is not None:
                if self.quality == QUALITY_FROM_FILE:
                    quality = jpeg.estimate_quality(coeffs.qt).quality.to(padded)
                else:
                    quality = torch.full((padded.shape[0],), float(self.quality), device=padded.device)
                out = net.descriptor.model(padded, (1 - quality / 100)[:, None])[0].clamp(0, 1)
            else:
                out = net.descriptor(padded)
        return out[..., :height, :width].clone()

    def _restore(self, coeffs: jpeg.Coefficients, jpeg_image: Tensor) -> Tensor:
        """One image batch (or tile) [B, C, H, W] -> restored, C as in ``jpeg_image``."""
        image = jpeg_image.to(self.device, torch.float32)
        if image.shape[1] == self.channels:
            return self._network(image, coeffs)
        if self.channels == 1 and image.shape[1] == 3:  # grayscale network: restore the luma, keep the chroma
            ycc = jpeg.rgb_to_ycbcr(image * 255)
            luma = self._network(ycc[:, :1] / 255, coeffs)
            return (jpeg.ycbcr_to_rgb(torch.cat([luma * 255, ycc[:, 1:]], 1)) / 255).clamp(0, 1)
        if self.channels == 3 and image.shape[1] == 1:  # colour network on a grayscale JPEG: its output's luma
            out = self._network(image.expand(-1, 3, -1, -1), coeffs)
            return (jpeg.rgb_to_ycbcr(out * 255)[:, :1] / 255).clamp(0, 1)
        raise ValueError(f"{self.name} takes {self.channels}-channel images, got {image.shape[1]} channels")

    def __call__(self, coeffs: jpeg.Coefficients, jpeg_image: Tensor) -> Tensor:
        """[B, C, H, W] in [0, 1]; ``extras["nfe"]``: network calls per image (tiles)."""
        coeffs = coeffs.to(self.device)
        self._calls = 0
        self.network = self.network_for(coeffs)
        if needs_tiling(coeffs.size, self.tile):
            def tile(part: jpeg.Coefficients) -> Tensor:
                return self._restore(part, quantize_8bit(jpeg.decode(part, rounding="exact")))

            restored = restore_tiled(tile, coeffs, self.tile, self.tile_overlap)
        else:
            restored = self._restore(coeffs, jpeg_image)
        self.extras = {"nfe": torch.full((jpeg_image.shape[0],), float(self._calls))}
        return restored
