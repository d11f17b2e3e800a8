"""CODiff as a restoration method: checkpoint + recorded Stable Diffusion base -> restored images.

    python evaluate.py ckpt=<codiff last.ckpt>                               # picked automatically
    python evaluate.py method=codiff ckpt=... pretrained=/models/sd21 method.color_fix=false
    jpegrestore restore photo.jpg -o out.png --ckpt codiff.ckpt [--pretrained DIR] [--no-color-fix]

Per image: CaVE tokens of the whole JPEG image condition the UNet; the image (replicate-padded to a multiple
of 8) is VAE-encoded, denoised in one step and decoded, each stage in Gaussian-blended tiles when larger
than its tile (:mod:`jpegrestore.nn.codiff.tiling`); the padding is cropped and, by default, the colours
are matched to the JPEG image (:func:`jpegrestore.nn.codiff.colorfix.adain_color_fix`), on the float output
or, with ``quantization="authors"`` (the default for checkpoints of ``jpegrestore convert codiff``), between two
8-bit truncations as the authors' test script. Grayscale JPEGs are restored as three equal channels and
averaged back to one.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jpegrestore import jpeg
from jpegrestore.checkpoints import Checkpoint, CheckpointSource, load_network
from jpegrestore.evaluation.precision import network_autocast, precision_dtype
from jpegrestore.nn.codiff.colorfix import adain_color_fix, authors_8bit_output
from jpegrestore.nn.codiff.tiling import TileConfig, tiled_one_step

log = logging.getLogger(__name__)

#: how the output meets 8 bits: "float" (colour fix on the float output, rounded once where it is written or
#: measured) or "authors" (truncated to 8 bits, colour fix on the levels, truncated again: their test script).
QUANTIZATIONS = ("float", "authors")
#: checkpoint metadata entry with method options recorded at conversion (read when an option is None).
METHOD_OPTIONS_KEY = "method_options"


class CODiffMethod:
    """Restore JPEGs with a CODiff checkpoint (``restore(coeffs, jpeg_image) -> [B, C, H, W]`` in [0, 1]).

    Args:
        ckpt: a CODiff checkpoint (``train.py experiment=codiff_stage2`` or ``jpegrestore convert codiff``).
        pretrained: Stable Diffusion base to load instead of the one the checkpoint records (a folder or a
            cached repo id); None: the recorded one.
        name: label in tables; None: "codiff".
        device: cpu | cuda | cuda:N | auto.
        latent: "mode" (default) or "sample" of the VAE posterior of the JPEG image. The paper does not say;
            the authors' test script samples. The mode is the default because the result is then a function
            of the image alone (repeatable, independent of tiling and batching) and SD's VAE posterior is
            narrow, so a sample moves the latent by little. With tiled encoding each tile draws its own noise.
        seed: seed of the posterior sample (``latent="sample"``); every call starts from it.
        color_fix: match each output channel's mean and std to the JPEG image (AdaIN). On by default, as the
            authors' test script, with which the paper's numbers were made; the paper does not mention it.
        quantization: "float" or "authors" (:data:`QUANTIZATIONS`); None: the one the checkpoint records
            (``method_options``; "authors" in checkpoints of ``jpegrestore convert codiff``), else "float".
            "authors" returns 8-bit levels (``level / 255``) made as their test script makes them: the
            output truncated to 8 bits, the colour fix applied to those levels, the result truncated again
            (:func:`jpegrestore.nn.codiff.colorfix.authors_8bit_output`); "float" applies the colour fix to
            the float output, which is rounded once where it is written or measured (half a gray level
            brighter on average than truncating).
        tile / tile_overlap: the evaluation's coefficient-tiling options; only ``tile=0`` / None matters here
            (it turns CODiff's own tiling off); CODiff tiles in its latent space with the sizes below.
        latent_tile, latent_overlap: UNet tiles in latent pixels (paper: 96, 32).
        encoder_tile, encoder_overlap: VAE-encoder tiles in image pixels (authors: 1024).
        decoder_tile, decoder_overlap: VAE-decoder tiles in latent pixels (authors: 224).
        precision: "32", "16" or "bf16": the generator under autocast (the authors run fp16 on GPU), its frozen
            CaVE and the colour fix in float32 (``evaluation.precision``); "32" is exact.
        network: an already built CODiff to use instead of ``ckpt`` (then ``pretrained`` is ignored); its
            ``latent`` / ``latent_seed`` are set to this method's ``latent`` / ``seed``.
    """

    def __init__(
        self,
        ckpt: CheckpointSource | None = None,
        pretrained: str | None = None,
        name: str | None = None,
        device: str | torch.device = "auto",
        latent: str = "mode",
        seed: int = 0,
        color_fix: bool = True,
        quantization: str | None = None,
        tile: int | None = 512,
        tile_overlap: int = 32,
        latent_tile: int = 96,
        latent_overlap: int = 32,
        encoder_tile: int = 1024,
        encoder_overlap: int = 128,
        decoder_tile: int = 224,
        decoder_overlap: int = 32,
        precision: str = "32",
        network: nn.Module | None = None,
    ) -> None:
        from jpegrestore.evaluation.methods import resolve_device

        if latent not in ("mode", "sample"):
            raise ValueError(f"latent must be 'mode' or 'sample', got {latent!r}")
        if quantization is not None and quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization must be one of {list(QUANTIZATIONS)} or None, got {quantization!r}")
        self.device = resolve_device(device)
        self.dtype = precision_dtype(precision)
        if ckpt and (network is None or quantization is None):
            ckpt = Checkpoint.of(ckpt)  # read once: the network and the recorded options come from it
        if network is None:
            if not ckpt:
                raise ValueError("method=codiff needs a checkpoint: pass ckpt=PATH")
            network = load_codiff(ckpt, pretrained)
            log.info("loaded CODiff from %s (base %s)", ckpt, network.pretrained)
        self.network = network.to(self.device).eval()
        self.network.latent, self.network.latent_seed = latent, int(seed)
        self.name = name or "codiff"
        self.ckpt = str(ckpt) if ckpt else None
        self.color_fix = bool(color_fix)
        if quantization is None:
            quantization = recorded_method_options(ckpt).get("quantization", "float") if ckpt else "float"
            if quantization not in QUANTIZATIONS:
                raise ValueError(f"{ckpt} records quantization {quantization!r}, not one of {list(QUANTIZATIONS)}")
        self.quantization = quantization
        self.tiles = TileConfig(latent_tile, latent_overlap, encoder_tile, encoder_overlap, decoder_tile,
                                decoder_overlap, enabled=bool(tile))

    @torch.no_grad()
    def restore_rgb(self, image: Tensor) -> Tensor:
        """JPEG-decoded RGB [B, 3, H, W] in [0, 1] -> restored [B, 3, H, W] in [0, 1] (before the colour fix)."""
        net = self.network
        height, width = image.shape[-2:]
        padded = F.pad(image, (0, -width % 8, 0, -height % 8), mode="replicate")
        with network_autocast(self.device, self.dtype):
            cond = net.condition(image)
            restored = tiled_one_step(
                padded, net.encode_latent, lambda z: net.denoise_latent(z, cond), net.decode_latent, self.tiles
            )
        return restored.float()[..., :height, :width]

    @torch.no_grad()
    def __call__(self, coeffs: jpeg.Coefficients, jpeg_image: Tensor) -> Tensor:
        """[B, C, H, W] in [0, 1] on this method's device (C = 3, or 1 for grayscale JPEGs)."""
        image = jpeg_image.to(self.device, torch.float32)
        if image.shape[1] not in (1, 3):
            raise ValueError(f"CODiff restores RGB or grayscale images, got {image.shape[1]} channels")
        rgb = image.expand(-1, 3, -1, -1) if image.shape[1] == 1 else image
        restored = self.restore_rgb(rgb)
        if self.quantization == "authors":
            restored = authors_8bit_output(restored, rgb, self.color_fix)
        elif self.color_fix:
            restored = adain_color_fix(restored, rgb)
        if image.shape[1] == 1:
            restored = restored.mean(dim=1, keepdim=True)
        return restored.clamp(0, 1)


def load_codiff(ckpt: CheckpointSource, pretrained: str | None = None) -> nn.Module:
    """The CODiff network of ``ckpt`` (a path or a read checkpoint), built on its recorded base model or on
    ``pretrained``. ValueError when the checkpoint holds another network."""
    ckpt = Checkpoint.of(ckpt)
    meta = ckpt.meta
    target = str(meta["network"].get("_target_", ""))
    if not target.endswith(".CODiff"):
        raise ValueError(f"{ckpt} holds a {target or 'unknown network'} (recipe {meta.get('recipe')!r}), "
                         "not a CODiff generator: method=codiff needs a codiff_stage2 checkpoint")
    overrides = {"pretrained": str(pretrained)} if pretrained else None
    return load_network(ckpt, network_overrides=overrides)


def recorded_method_options(ckpt: CheckpointSource) -> dict[str, Any]:
    """The method options a checkpoint records (``checkpoint["jpegrestore"]["method_options"]``), {} if none."""
    options = Checkpoint.of(ckpt).meta.get(METHOD_OPTIONS_KEY) or {}
    if not isinstance(options, dict):
        raise ValueError(f"{ckpt}: '{METHOD_OPTIONS_KEY}' should be a mapping of method options, got {options!r}")
    return dict(options)
