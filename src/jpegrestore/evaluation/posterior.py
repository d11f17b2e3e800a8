"""Evaluation method of posterior-sampling checkpoints (``recipe: posterior_gan``): S seeded draws per JPEG.

``samples=1`` reports one draw ("Ours"); ``project=True`` projects every draw onto the JPEG's quantization bins
(``jpeg.project``, Eq. 11: "Ours-P"); ``samples=S > 1`` returns the mean of the S draws ("Ours-A"; the paper
averages 64). ``fid_repeats=K`` makes a one-draw method draw K restorations per image, so that the evaluation
reports FID as the paper does: mean and std of K FIDs, each over one restoration per image. The draws of the last
call stay in ``last_samples`` (the evaluation reports their per-pixel standard deviation). With ``project`` and
S > 1 the draws are projected before averaging; their mean lies in the same quantization bins (the bins are
convex), so it stays consistent up to the 8-bit rounding of the output.

Noise is keyed per image: draw s of an image, in tile t, comes from a generator seeded by (``seed``, the image's
key, s, t) (``utils.seeding.keyed_generator``). The evaluation keys an image by its file name and quality, so its
draws do not depend on the batch size, the batch's other images or their order.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from collections.abc import Sequence

import torch
from torch import Tensor

from jpegrestore import jpeg
from jpegrestore.checkpoints import CheckpointSource, load_network
from jpegrestore.evaluation.methods import resolve_device
from jpegrestore.evaluation.precision import network_autocast, precision_dtype
from jpegrestore.tiling import restore_tiled
from jpegrestore.utils.seeding import keyed_generator

log = logging.getLogger(__name__)


def coefficients_key(coeffs: jpeg.Coefficients, index: int) -> str:
    """A key naming image ``index`` of a batch by its content: BLAKE2b of its coefficients, tables, size and
    layout (the same JPEG gives the same key whether it was read from a file or encoded)."""
    digest = hashlib.blake2b(digest_size=16)
    for tensor in (*coeffs[index].components(), coeffs.qt[index]):
        digest.update(tensor.detach().to("cpu", torch.int32).contiguous().numpy().tobytes())
    digest.update(repr((coeffs.size, coeffs.subsampling)).encode())
    return digest.hexdigest()


class PosteriorMethod:
    """S draws of a posterior generator per JPEG, each image's noise keyed by its identity (reproducible).

    Args:
        ckpt: a ``posterior_gan`` checkpoint (the generator is rebuilt from it alone).
        device: "cpu", "cuda", "cuda:N" or "auto".
        tile, tile_overlap: images larger than ``tile`` are restored in tiles (each tile draws its own noise;
            overlaps blend two draws).
        samples: draws per JPEG (1: one sample; > 1: their mean is returned).
        project: apply ``jpeg.project`` to every draw.
        seed: seed of every image's draws (with the image's key).
        fid_repeats: K, FID repeats for the evaluation (the paper: 64); with K > 1 each call draws K restorations
            per image (the first is returned) and FID is reported as the mean and std over them. Needs
            ``samples=1``: the mean of S > 1 draws is one restoration, scored once.
        name: label in tables (default ``posterior`` with ``-P`` / ``-A<S>`` suffixes).
        precision: "32" (default), "bf16" or "16": the generator under autocast (``evaluation.precision``);
            the projection stays in float32.
    """

    #: The evaluation calls it with ``keys`` (one str per image) to key each image's noise.
    keyed_noise = True

    def __init__(self, ckpt: CheckpointSource | None = None, device: str | torch.device = "auto", tile: int | None = 512,
                 tile_overlap: int = 32, samples: int | None = None, project: bool | None = None,
                 seed: int | None = None, fid_repeats: int | None = None, name: str | None = None,
                 precision: str = "32") -> None:
        if not ckpt:
            raise ValueError("PosteriorMethod needs a posterior_gan checkpoint: pass ckpt=PATH")
        self.samples = 1 if samples is None else int(samples)
        if self.samples < 1:
            raise ValueError(f"method.samples must be >= 1, got {samples}")
        self.fid_repeats = 1 if fid_repeats is None else int(fid_repeats)
        if self.fid_repeats < 1:
            raise ValueError(f"method.fid_repeats must be >= 1, got {fid_repeats}")
        if self.fid_repeats > 1 and self.samples > 1:
            raise ValueError(f"method.fid_repeats={self.fid_repeats} repeats FID over single draws, but "
                             f"method.samples={self.samples} scores the mean of {self.samples} draws (scored once): "
                             "set one of them to 1")
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
        log.info("posterior sampler from %s: %d draw(s) per image, project=%s, seed=%d, FID repeats %d", ckpt,
                 self.samples, self.project, self.seed, self.fid_repeats)

    def _keyed_noise(self, keys: Sequence[str], draw: int, tile: int, height: int, width: int) -> list[Tensor]:
        """Z for one draw of one tile of every image: [B, noise_channels, h, w] per decoder level."""
        per_image = [self.network.draw_noise(1, height, width, self.device,
                                             keyed_generator(self.seed, key, draw, tile, device=self.device))
                     for key in keys]
        return [torch.cat(level) for level in zip(*per_image)]

    @torch.no_grad()
    def sample(self, coeffs: jpeg.Coefficients, jpeg_image: Tensor, num_samples: int,
               generator: torch.Generator | None = None, keys: Sequence[str] | None = None) -> Tensor:
        """``num_samples`` independent draws [S, B, C, H, W] in [0, 1] (projected when ``project``). The generator
        decodes the coefficients itself, so every chroma layout is restored as it is.

        Noise: from ``generator`` when given (one stream for the whole batch); otherwise keyed per image by
        (``seed``, ``keys[b]``, draw, tile), ``keys`` defaulting to :func:`coefficients_key` of each image.
        """
        coeffs = coeffs.to(self.device)
        if generator is not None and generator.device != self.device:
            raise ValueError(f"the generator lives on {generator.device}, the network on {self.device}")
        if keys is None:
            keys = [coefficients_key(coeffs, b) for b in range(coeffs.batch_size)]
        if len(keys) != coeffs.batch_size:
            raise ValueError(f"{self.name}: {len(keys)} image keys for a batch of {coeffs.batch_size}")

        def draw_with(index: int):
            tiles = itertools.count()  # restore_tiled visits the tiles in the same order for every batch

            def one_tile(part: jpeg.Coefficients) -> Tensor:
                with network_autocast(self.device, self.dtype):
                    if generator is not None:
                        draw = self.network(part, noise=True, generator=generator)
                    else:
                        draw = self.network(part, z=self._keyed_noise(keys, index, next(tiles), *part.size))
                return draw.float()
            return one_tile

        draws = []
        for index in range(int(num_samples)):
            draw = restore_tiled(draw_with(index), coeffs, self.tile, self.tile_overlap).clamp(0, 1)
            if draw.shape[1] != jpeg_image.shape[1]:
                raise ValueError(f"{self.name} returned {draw.shape[1]} channels for a "
                                 f"{jpeg_image.shape[1]}-channel JPEG")
            draws.append(jpeg.project(draw, coeffs) if self.project else draw)
        return torch.stack(draws)

    def __call__(self, coeffs: jpeg.Coefficients, jpeg_image: Tensor, keys: Sequence[str] | None = None) -> Tensor:
        """One draw (``samples=1``) or the mean of ``samples`` draws: [B, C, H, W] in [0, 1]. ``last_samples`` holds
        the max(samples, fid_repeats) draws of the call. ``keys``: one str per image (see :meth:`sample`)."""
        draws = self.sample(coeffs, jpeg_image, max(self.samples, self.fid_repeats), keys=keys)
        self.last_samples = draws
        return draws[: self.samples].mean(0)
