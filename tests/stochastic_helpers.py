"""A toy stochastic restoration method: JPEG decoding plus seeded Gaussian noise, for testing the optional parts of
the method protocol (``extras``, ``last_samples``, ``sample``) and the checkpoint dispatch."""

from __future__ import annotations

import torch

from jpegrestore import jpeg


class NoisyMethod:
    """``samples`` draws ``clamp(jpeg_image + sigma * noise)``; returns their mean; reports ``nfe = 3 * samples``."""

    def __init__(self, ckpt=None, name: str | None = None, device: str = "cpu", tile=None,
                 tile_overlap: int = 32,
                 samples: int = 4, sigma: float = 0.05, seed: int = 0) -> None:
        self.name = name or "noisy"
        self.ckpt, self.samples, self.sigma, self.seed = ckpt, int(samples), float(sigma), int(seed)
        self.extras: dict = {}
        self.last_samples = None

    def sample(self, coeffs: jpeg.Coefficients, jpeg_image: torch.Tensor, num_samples: int,
               generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn((num_samples, *jpeg_image.shape), generator=generator, device=jpeg_image.device)
        return (jpeg_image[None] + self.sigma * noise).clamp(0, 1)

    def __call__(self, coeffs: jpeg.Coefficients, jpeg_image: torch.Tensor) -> torch.Tensor:
        generator = torch.Generator(device=jpeg_image.device).manual_seed(self.seed)
        self.last_samples = self.sample(coeffs, jpeg_image, self.samples, generator)
        self.extras = {"nfe": torch.full((jpeg_image.shape[0],), 3.0 * self.samples)}
        return self.last_samples.mean(0)


def write_stochastic_checkpoint(path) -> None:
    """A checkpoint whose metadata names :class:`NoisyMethod` as its evaluation method."""
    torch.save({"state_dict": {}, "jpegrestore": {
        "format": 1, "recipe": "noisy", "state_dict_prefix": "net.", "network": {"_target_": "torch.nn.Identity"},
        "evaluation_method": "stochastic_helpers.NoisyMethod"}}, path)
