"""DDRM-JPEG as a restoration method: ``python evaluate.py method=ddrm_jpeg method.prior=PATH method.samples=8``.

It reports through the optional parts of the method protocol (``evaluation.methods``): ``last_samples`` (the
draws behind each returned mean, so the evaluation adds their per-pixel standard deviation when samples > 1
and takes FID on one draw), ``extras["nfe"]`` (network evaluations per image: steps x samples x tiles) and
``sample(...)`` for ``jpegrestore restore --samples N``. With ``operator="authors"`` it also carries
``compression`` (``sampling.authors_jpeg.AuthorsCompression``): the evaluation then measures it on the authors'
simulated JPEG of each clean image instead of a libjpeg file, as their code does.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor

from jpegrestore import jpeg
from jpegrestore.checkpoints import Checkpoint, CheckpointSource
from jpegrestore.evaluation.methods import resolve_device
from jpegrestore.evaluation.precision import AutocastModule, precision_dtype

log = logging.getLogger(__name__)


class DDRMJPEGMethod:
    """DDRM-JPEG over an unconditional diffusion prior, the paper's settings by default.

    Args:
        prior: what ``jpegrestore.sampling.load_prior`` loads (a diffusers folder, a local Hugging Face cache id,
            a guided-diffusion ``.pt``, a ``ddpm_prior`` checkpoint), or an already loaded prior object.
        samples: draws per JPEG; the method returns their mean (paper: 1, and 8 for the averaged variant).
        steps, t_start, eta, eta_b: the sampler's (paper: 20, 300, 1.0, 0.4).
        seed: seed of every call's draws (each call starts from it, so results do not depend on image order;
            None: 0).
        device: "cpu", "cuda", "cuda:N" or "auto".
        tile, tile_overlap: images larger than ``tile`` pixels are restored in tiles (None/0: never, unless the
            prior has a fixed image size).
        project: project every draw onto the JPEG's quantization bins (``jpeg.project``) before averaging; off in
            the paper (its draws are consistent with the float operator only through the eta_b mix).
        operator: "float" (default: ``jpeg.float_encode``/``float_decode``, which fit real libjpeg files) or
            "authors" (the authors' operator, and their simulated measurement in the evaluation: ``compression``).
        name: label in tables (None: "ddrm_jpeg").
        ckpt: accepted in place of ``prior`` (a checkpoint that names this method as its evaluation method).
        precision: "32" (default), "bf16" or "16": the prior's network under autocast (``evaluation.precision``);
            the sampler's updates and the JPEG operator stay in float32.
    """

    def __init__(
        self, prior: Any = None, samples: int = 1, steps: int = 20, t_start: int = 300, eta: float = 1.0,
        eta_b: float = 0.4, seed: Optional[int] = 0, device: str | torch.device = "auto", tile: Optional[int] = None,
        tile_overlap: int = 32, project: bool = False, name: Optional[str] = None,
        ckpt: Optional[CheckpointSource] = None, operator: str = "float",
        precision: str = "32",
    ) -> None:
        from jpegrestore.sampling import DDRMJPEG, OPERATORS, AuthorsCompression

        if operator not in OPERATORS:
            raise ValueError(f"method.operator must be one of {OPERATORS}, got {operator!r}")
        if operator == "authors" and project:
            raise ValueError("method.project=true projects onto libjpeg's quantization bins (jpeg.project), which the "
                             "authors' operator does not share: use it with method.operator=float")
        prior = prior if prior not in (None, "") else ckpt
        if prior in (None, ""):
            raise ValueError("method=ddrm_jpeg needs a diffusion prior: method.prior=PATH (a diffusers folder, "
                             "a Hugging Face cache id, a guided-diffusion .pt or a ddpm_prior checkpoint)")
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise ValueError(f"method.samples must be a positive int, got {samples!r}")
        self.device = resolve_device(device)
        self.dtype = precision_dtype(precision)
        if isinstance(prior, (str, Path, Checkpoint)):
            from jpegrestore.sampling.priors import load_prior

            self.prior_source = str(prior)
            prior = load_prior(prior, device=self.device)
            log.info("DDRM-JPEG prior from %s", self.prior_source)
        else:
            self.prior_source = getattr(prior, "source", type(prior).__name__)
            if hasattr(prior.eps_model, "to"):
                prior.eps_model.to(self.device)
        self.prior = prior
        self.sampler = DDRMJPEG.from_prior(prior, steps=steps, t_start=t_start, eta=eta, eta_b=eta_b,
                                           tile=tile or None, tile_overlap=tile_overlap, operator=operator)
        self.operator = operator
        self.compression = AuthorsCompression() if operator == "authors" else None
        if self.dtype != torch.float32:
            self.sampler.eps_model = AutocastModule(self.sampler.eps_model, self.device, self.dtype)
        self.name = name or "ddrm_jpeg"
        self.samples = samples
        self.seed = 0 if seed is None else int(seed)
        self.project = bool(project)
        self.extras: dict[str, Tensor] = {}
        self.last_samples: Optional[Tensor] = None

    def sample(self, coeffs: jpeg.Coefficients, jpeg_image: Tensor, num_samples: int,
               generator: Optional[torch.Generator] = None) -> Tensor:
        """``num_samples`` independent restorations [S, B, C, H, W] in [0, 1]; sets ``extras["nfe"]``."""
        before = self.sampler.network_evaluations
        coeffs = coeffs.to(self.device)
        draws = self.sampler(coeffs, num_samples, generator, return_samples=True)
        if self.project:
            draws = torch.stack([jpeg.project(draw, coeffs) for draw in draws])
        per_image = (self.sampler.network_evaluations - before) / coeffs.batch_size
        self.extras = {"nfe": torch.full((coeffs.batch_size,), float(per_image))}
        if draws.shape[1:] != jpeg_image.shape:
            raise ValueError(f"{self.name} produced {tuple(draws.shape[1:])} for a JPEG of {tuple(jpeg_image.shape)}")
        return draws

    def __call__(self, coeffs: jpeg.Coefficients, jpeg_image: Tensor) -> Tensor:
        """The mean of ``samples`` draws, [B, C, H, W] in [0, 1]; the draws stay in ``last_samples``."""
        generator = torch.Generator().manual_seed(self.seed)
        self.last_samples = self.sample(coeffs, jpeg_image, self.samples, generator)
        return self.last_samples.mean(0)
