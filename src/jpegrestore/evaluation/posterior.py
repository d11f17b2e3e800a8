"""Evaluation method of posterior-sampling checkpoints (``recipe: posterior_gan``): S seeded draws per JPEG.

``samples=1`` reports one draw ("Ours"); ``project=True`` projects every draw onto the JPEG's quantization bins
(``jpeg.project``, Eq. 11: "Ours-P"); ``samples=S > 1`` returns the mean of the S draws ("Ours-A"; the paper
averages 64) and exposes the draws as ``last_samples``, so the evaluation reports their per-pixel standard
deviation and computes FID on the first draw. With ``project`` and S > 1 the draws are projected before
averaging; their mean lies in the same quantization bins (the bins are convex), so it stays consistent up to the
8-bit rounding of the output.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from jpegrestore import jpeg
from jpegrestore.checkpoints import CheckpointSource, load_network
from jpegrestore.evaluation.methods import resolve_device
from jpegrestore.evaluation.precision import network_autocast, precision_dtype
from jpegrestore.tiling import restore_tiled

log = logging.getLogger(__name__)

class PosteriorMethod:
    """S draws of a posterior generator per JPEG, each from a seeded ``torch.Generator`` (reproducible).

    Args:
        ckpt: a ``posterior_gan`` checkpoint (the generator is rebuilt from it alone).
        device: "cpu", "cuda", "cuda:N" or "auto".
        tile, tile_overlap: images larger than ``tile`` are restored in tiles (each tile draws its own noise;
            overlaps blend two draws).
        samples: draws per JPEG (1: one sample; > 1: their mean is returned, ``last_samples`` holds them).
        project: apply ``jpeg.project`` to every draw.
        seed: seed of the first call's generator; every call restarts from it, so an image's draws do not depend
            on which images came before it.
        name: label in tables (default ``posterior`` with ``-P`` / ``-A<S>`` suffixes).
        precision: "32" (default), "bf16" or "16": the generator under autocast (``evaluation.precision``);
            the projection stays in float32.
    """

    def __init__(self, ckpt: CheckpointSource | None = None, device: str | torch.device = "auto", tile: int | None = 512,
                 tile_overlap: int = 32, samples: int | None = None, project: bool | None = None,
                 seed: int | None = None, name: str | None = None, precision: str = "32") -> None:
        if not ckpt:
            raise ValueError("PosteriorMethod needs a posterior_gan checkpoint: pass ckpt=PATH")
        self.samples = 1 if samples is None else int(samples)
        if self.samples < 1:
            raise ValueError(f"method.samples must be >= 1, got {samples}")
        self.project = bool(project)
        self.seed = 0 if seed is None else int(seed)
        self.device = resolve_device(device)
        self.dtype = precision_dtype(precision)
        self.network = load_network(ckpt, map_location="cpu").to(self.device).eval()
        if not hasattr(self.network, "generate"):
            raise ValueError(f"{ckpt} does not hold a posterior generator ({type(self.network).__name__})")
        self.tile, self.tile_overlap = tile, tile_overlap
        self.ckpt = str(ckpt)
        suffix = ("-P" if self.project else "") + (f"-A{self.samples}" if self.samples > 1 else "")
        self.name = name or f"posterior{suffix}"
        self.extras: dict[str, Tensor] = {}
        self.last_samples: Tensor | None = None
        log.info("posterior sampler from %s: %d draw(s) per image, project=%s, seed=%d", ckpt, self.samples,
                 self.project, self.seed)

    @torch.no_grad()
    def sample(self, coeffs: jpeg.Coefficients, jpeg_image: Tensor, num_samples: int,
               generator: torch.Generator | None = None) -> Tensor:
        """``num_samples`` independent draws [S, B, C, H, W] in [0, 1] (projected when ``project``). The generator
        decodes the coefficients itself, so every chroma layout is restored as it is."""
        coeffs = coeffs.to(self.device)
        if generator is not None and generator.device != self.device:
            raise ValueError(f"the generator lives on {generator.device}, the network on {self.device}")

        def one_draw(part: jpeg.Coefficients) -> Tensor:
            with network_autocast(self.device, self.dtype):
                draw = self.network(part, noise=True, generator=generator)
            return draw.float()

        draws = []
        for _ in range(int(num_samples)):
            draw = restore_tiled(one_draw, coeffs, self.tile, self.tile_overlap).clamp(0, 1)
            if draw.shape[1] != jpeg_image.shape[1]:
                raise ValueError(f"{self.name} returned {draw.shape[1]} channels for a "
                                 f"{jpeg_image.shape[1]}-channel JPEG")
            draws.append(jpeg.project(draw, coeffs) if self.project else draw)
        return torch.stack(draws)

    def __call__(self, coeffs: jpeg.Coefficients, jpeg_image: Tensor) -> Tensor:
        """One draw (``samples=1``) or the mean of ``samples`` draws: [B, C, H, W] in [0, 1]."""
        generator = torch.Generator(device=self.device).manual_seed(self.seed)
        draws = self.sample(coeffs, jpeg_image, self.samples, generator)
        self.last_samples = draws
        return draws.mean(0)
