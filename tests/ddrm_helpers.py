"""Oracle diffusion priors whose noise prediction is known in closed form, and a literal second implementation of the
DDRM-JPEG authors' torch JPEG, for testing DDRM-JPEG."""

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


# ---------------------------------------------------------------------------------------------------- the authors' JPEG
# A second, literal implementation of github.com/bahjat-kawar/ddrm-jpeg functions/jpeg_torch.py, step by step in
# their order and layout (nn.Unfold / nn.Fold over square images whose side is a multiple of 16, tensordot with
# their printed colour matrices, a DCT matrix from scipy applied as their LinearDCT is, the table formula with a
# float 5000 / qf), used to check jpegrestore.sampling.authors_jpeg.

_THEIR_RGB_TO_YCBCR = [[.299, .587, .114], [-.1687, -.3313, .5], [.5, -.4187, -.0813]]
_THEIR_YCBCR_TO_RGB = [[1.00000000e+00, -3.68199903e-05, 1.40198758e+00],
                       [1.00000000e+00, -3.44113281e-01, -7.14103821e-01],
                       [1.00000000e+00, 1.77197812e+00, -1.34583413e-04]]


def reference_tables(qf: int) -> tuple[Tensor, Tensor]:
    """Their general_quant_matrix: (luma [64], chroma [64]) float."""
    from jpegrestore.jpeg.tables import BASE_CHROMA, BASE_LUMA

    q1 = torch.tensor(BASE_LUMA).flatten()
    q2 = torch.tensor(BASE_CHROMA).flatten()
    s = (5000 / qf) if qf < 50 else (200 - 2 * qf)
    q1 = torch.floor((s * q1 + 50) / 100)
    q1[q1 <= 0] = 1
    q1[q1 > 255] = 255
    q2 = torch.floor((s * q2 + 50) / 100)
    q2[q2 <= 0] = 1
    q2[q2 > 255] = 255
    return q1, q2


def _their_linear(kind: str, device) -> Tensor:
    """The weight's transpose of their LinearDCT(8, kind, norm='ortho'): x @ this applies the 1-D transform."""
    import numpy as np
    import scipy.fft

    eye = np.eye(8)
    rows = scipy.fft.dct(eye, norm="ortho", axis=-1) if kind == "dct" else scipy.fft.idct(eye, norm="ortho", axis=-1)
    return torch.tensor(rows, dtype=torch.float32, device=device)


def _their_2d(x: Tensor, kind: str) -> Tensor:
    m = _their_linear(kind, x.device)
    return ((x @ m).transpose(-1, -2) @ m).transpose(-1, -2)


def reference_encode(x: Tensor, qf: int, rounding: bool = True) -> list[Tensor]:
    """Their jpeg_encode: x [N, 3, n, n] in [-1, 1] -> [luma [N, 1, n, n], chroma [N, 2, n/2, n/2]] (coefficients
    laid out block by block). ``rounding=False`` skips their x.round() (to locate rounding ties)."""
    x = (x + 1) / 2 * 255
    n_batch, _, n_size, _ = x.shape
    v = torch.tensor(_THEIR_RGB_TO_YCBCR, device=x.device)
    ycbcr = torch.tensordot(x, v, dims=([1], [1])).transpose(3, 2).transpose(2, 1)
    ycbcr[:, 1:] += 128
    x_luma, x_chroma = ycbcr[:, 0:1], ycbcr[:, 1:, ::2, ::2]
    unfold = torch.nn.Unfold(kernel_size=(8, 8), stride=(8, 8))
    x_luma = unfold(x_luma).transpose(2, 1).reshape(-1, 8, 8) - 128
    x_chroma = unfold(x_chroma).transpose(2, 1).reshape(-1, 8, 8) - 128
    x_luma = _their_2d(x_luma, "dct").view(-1, 1, 8, 8)
    x_chroma = _their_2d(x_chroma, "dct").view(-1, 2, 8, 8)
    q1, q2 = reference_tables(qf)
    x_luma = x_luma / q1.to(x.device).view(1, 8, 8)
    x_chroma = x_chroma / q2.to(x.device).view(1, 8, 8)
    if rounding:
        x_luma, x_chroma = x_luma.round(), x_chroma.round()
    x_luma = x_luma.reshape(n_batch, (n_size // 8) ** 2, 64).transpose(2, 1)
    x_chroma = x_chroma.reshape(n_batch, (n_size // 16) ** 2, 64 * 2).transpose(2, 1)
    x_luma = torch.nn.Fold(output_size=(n_size, n_size), kernel_size=(8, 8), stride=(8, 8))(x_luma)
    x_chroma = torch.nn.Fold(output_size=(n_size // 2, n_size // 2), kernel_size=(8, 8), stride=(8, 8))(x_chroma)
    return [x_luma, x_chroma]


def reference_decode(x: list[Tensor], qf: int) -> Tensor:
    """Their jpeg_decode: [luma, chroma] as reference_encode returns -> [N, 3, n, n] in [-1, 1] (not clamped)."""
    x_luma, x_chroma = x
    n_batch, _, n_size, _ = x_luma.shape
    unfold = torch.nn.Unfold(kernel_size=(8, 8), stride=(8, 8))
    x_luma = unfold(x_luma).transpose(2, 1).reshape(-1, 1, 8, 8)
    x_chroma = unfold(x_chroma).transpose(2, 1).reshape(-1, 2, 8, 8)
    q1, q2 = reference_tables(qf)
    x_luma = (x_luma * q1.to(x_luma.device).view(1, 8, 8)).reshape(-1, 8, 8)
    x_chroma = (x_chroma * q2.to(x_luma.device).view(1, 8, 8)).reshape(-1, 8, 8)
    x_luma = _their_2d(x_luma, "idct")
    x_chroma = _their_2d(x_chroma, "idct")
    x_luma = (x_luma + 128).reshape(n_batch, (n_size // 8) ** 2, 64).transpose(2, 1)
    x_chroma = (x_chroma + 128).reshape(n_batch, (n_size // 16) ** 2, 64 * 2).transpose(2, 1)
    x_luma = torch.nn.Fold(output_size=(n_size, n_size), kernel_size=(8, 8), stride=(8, 8))(x_luma)
    x_chroma = torch.nn.Fold(output_size=(n_size // 2, n_size // 2), kernel_size=(8, 8), stride=(8, 8))(x_chroma)
    repeated = torch.zeros(n_batch, 2, n_size, n_size, device=x_luma.device)
    for dy in (0, 1):
        for dx in (0, 1):
            repeated[:, :, dy::2, dx::2] = x_chroma
    ycbcr = torch.cat([x_luma, repeated], dim=1)
    ycbcr[:, 1:] -= 128
    v = torch.tensor(_THEIR_YCBCR_TO_RGB, device=ycbcr.device)
    rgb = torch.tensordot(ycbcr, v, dims=([1], [1])).transpose(3, 2).transpose(2, 1)
    return rgb / 255 * 2 - 1


def coefficient_planes(coeffs) -> list[Tensor]:
    """jpeg.Coefficients (4:2:0) -> [luma [N, 1, H, W], chroma [N, 2, H/2, W/2]], reference_encode's layout."""
    from jpegrestore.jpeg.dct import blocks_to_plane

    return [blocks_to_plane(coeffs.y)[:, None], torch.stack([blocks_to_plane(coeffs.cb), blocks_to_plane(coeffs.cr)], 1)]
