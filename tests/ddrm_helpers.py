"""Oracle diffusion priors whose noise prediction is known in closed form, for testing DDRM-JPEG."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from jpegrestore.jpeg.sampling import pad_edge


def linear_alphas_cumprod(steps: int = 1000, start: float = 1e-4, end: float = 0.02) -> Tensor:
    """abar_t of DDPM's linear schedule, float64 [steps]."""
    betas = torch.linspace(start, end, steps, dtype=torch.float64)
    return torch.cumprod(1 - betas, 0)


class MixturePrior(torch.nn.Module):
    """The exact eps of a mixture of point masses at images ``atoms`` [K, C, H, W] in [-1, 1] (equal weights).

    For x_t = sqrt(abar) x0 + sqrt(1 - abar) n, the posterior mean of n is
    ``sum_k r_k (x - sqrt(abar) a_k) / sqrt(1 - abar)`` with
    ``r = softmax_k(-|x - sqrt(abar) a_k|^2 / (2 (1 - abar)))``.
    One atom is a point mass: eps = (x - sqrt(abar) a) / sqrt(1 - abar), whose x0 prediction is ``a`` itself.
    Inputs larger than the atoms (the sampler's padded canvas) see the atoms extended by edge replication.
    ``learned_sigma`` appends C constant channels, as a learned-variance network does.
    """

    def __init__(self, atoms: Tensor, alphas_cumprod: Tensor, learned_sigma: bool = False) -> None:
        super().__init__()
        self.register_buffer("atoms", atoms.double())
        self.abar = alphas_cumprod
        self.learned_sigma = learned_sigma
        self.calls = 0

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        assert t.dtype == torch.long and t.shape == (x.shape[0],)
        self.calls += 1
        a = self.abar[t].to(torch.float64).view(-1, 1, 1, 1, 1)
        atoms = pad_edge(self.atoms, *x.shape[-2:])[None]  # [1, K, C, H, W]
        diff = x.double()[:, None] - a.sqrt() * atoms  # [B, K, C, H, W]
        logits = -diff.pow(2).flatten(2).sum(-1) / (2 * (1 - a.view(-1, 1)))
        r = torch.softmax(logits, 1).view(*logits.shape, 1, 1, 1)
        eps = ((r * diff).sum(1) / (1 - a[:, 0]).sqrt()).to(x.dtype)
        if self.learned_sigma:
            eps = torch.cat([eps, torch.full_like(eps, 7.0)], 1)
        return eps


@dataclass
class OraclePrior:
    """What ``sampling.load_prior`` returns, around an oracle eps model."""

    eps_model: torch.nn.Module
    alphas_cumprod: Tensor
    channels: int
    size_multiple: int = 1
    image_size: Optional[int] = None


def point_mass_prior(image01: Tensor, learned_sigma: bool = False, **kw) -> OraclePrior:
    """A prior that is a point mass at ``image01`` [C, H, W] in [0, 1]."""
    abar = linear_alphas_cumprod()
    return OraclePrior(MixturePrior(image01[None] * 2 - 1, abar, learned_sigma), abar, image01.shape[0], **kw)


def psnr(a: Tensor, b: Tensor) -> float:
    mse = torch.mean((a.double() - b.double()) ** 2)
    return float("inf") if mse == 0 else float(10 * torch.log10(1 / mse))
