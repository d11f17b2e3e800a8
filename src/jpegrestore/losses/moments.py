"""First- and second-moment penalties over P draws per input (Man et al. 2023, Eq. 5 and Eq. 7).

Draws are stacked as ``samples`` [P, B, C, H, W] in [0, 1]: P restorations G(Z_p, Y_b) of each input b.
Both penalties are means over pixels and channels (and inputs) on the [0, 1] scale.
"""

from __future__ import annotations

from torch import Tensor

from jpegrestore.utils.precision import in_float32


def _check(samples: Tensor, target: Tensor, minimum: int) -> None:
    if samples.dim() != 5 or samples.shape[1:] != target.shape:
        raise ValueError(f"samples must be [P, B, C, H, W] matching target {tuple(target.shape)}, "
                         f"got {tuple(samples.shape)}")
    if samples.shape[0] < minimum:
        raise ValueError(f"this penalty needs at least {minimum} draws per input, got P={samples.shape[0]}")


@in_float32
def first_moment_loss(samples: Tensor, target: Tensor) -> Tensor:
    """FM (Eq. 5): ``mean (X - mean_p G(Z_p, Y))^2``. samples [P, B, C, H, W], target X [B, C, H, W]. -> scalar.

    The expectation over Z is the sample mean of the P draws of each input. With finite P its expected value is
    ``||X - E_Z G||^2 + Var_Z(G) / P`` (per element), so small P also penalizes spread a little (P = 1 is plain MSE).
    """
    _check(samples, target, 1)
    return (target - samples.mean(0)).square().mean()


@in_float32
def second_moment_loss(samples: Tensor, target: Tensor, mmse: Tensor, correction: int = 1) -> Tensor:
    """SM (Eq. 7): ``mean |(X - Xbar(Y))^2 - Var_p G(Z_p, Y)|``. -> scalar.

    samples [P, B, C, H, W] (P >= 2), target X and mmse Xbar(Y) [B, C, H, W] (Xbar from a frozen MMSE estimator;
    no gradient flows into it). The variance over the P draws of each input is per pixel and channel, unbiased
    (``correction=1``, divisor P - 1; 0 for the population variance). The paper's norm carries no square: we take
    the mean absolute difference (an L1 norm per element), which with per-pixel variances of ~1e-3 and
    lambda_SM = 1e3 puts the term at the adversarial loss's order.
    """
    _check(samples, target, correction + 1)
    if mmse.shape != target.shape:
        raise ValueError(f"MMSE estimate {tuple(mmse.shape)} and target {tuple(target.shape)} differ in shape")
    residual = (target - mmse.detach()).square()
    return (residual - samples.var(0, correction=correction)).abs().mean()
