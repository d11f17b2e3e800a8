"""Adversarial losses on discriminator logits.

All functions take raw logits (any shape, typically [B] or [B, 1, h, w]) and return a scalar.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from jpegrestore.utils.precision import in_float32


def _bce(logits: torch.Tensor, is_real: bool) -> torch.Tensor:
    """Mean binary cross-entropy of sigmoid(logits) against an all-real or all-fake label."""
    label = torch.ones_like(logits) if is_real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, label)


@in_float32
def ragan_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Relativistic average GAN loss of the discriminator (Jolicoeur-Martineau 2018, as in ESRGAN/QGAC).

    ``-E_r[log s(C(r) - E_f C(f))] - E_f[log(1 - s(C(f) - E_r C(r)))]`` with s the sigmoid. -> scalar.
    Pass ``fake_logits`` computed on detached generator output.
    """
    real_vs_fake = real_logits - fake_logits.mean()
    fake_vs_real = fake_logits - real_logits.mean()
    return _bce(real_vs_fake, True) + _bce(fake_vs_real, False)


@in_float32
def ragan_generator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Relativistic average GAN loss of the generator: the discriminator's loss with the labels swapped.

    ``-E_r[log(1 - s(C(r) - E_f C(f)))] - E_f[log s(C(f) - E_r C(r))]``. -> scalar. Gradients reach the
    generator through ``fake_logits`` (and through the mean inside the real term).
    """
    real_vs_fake = real_logits - fake_logits.mean()
    fake_vs_real = fake_logits - real_logits.mean()
    return _bce(real_vs_fake, False) + _bce(fake_vs_real, True)


@in_float32
def nonsaturating_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating GAN generator loss ``E[softplus(-D(fake))] = -E[log s(D(fake))]``. -> scalar."""
    return F.softplus(-fake_logits).mean()


@in_float32
def nonsaturating_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Standard GAN discriminator loss ``E[softplus(-D(real))] + E[softplus(D(fake))]``. -> scalar."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


@in_float32
def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """R1 gradient penalty (Mescheder et al. 2018) ``E_batch[ ||d D(x) / d x||^2 ]`` on real images.

    ``real_images`` must have ``requires_grad=True`` and ``real_logits`` must be computed from them.
    Returns the mean over the batch of the per-sample squared gradient norm (multiply by gamma/2 yourself).
    The graph is kept (create_graph) so the penalty can be back-propagated into the discriminator.
    """
    if not real_images.requires_grad:
        raise ValueError("r1_penalty: real_images must require grad (call real.requires_grad_(True) before D)")
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()
