"""Training losses: pixel (L1, SSIM, QGAC's L1 - lambda*SSIM), adversarial (RaGAN, non-saturating, R1) and
texture (VGG16 conv5_3 features)."""

from jpegrestore.losses.gan import (
    nonsaturating_discriminator_loss,
    nonsaturating_generator_loss,
    r1_penalty,
    ragan_discriminator_loss,
    ragan_generator_loss,
)
from jpegrestore.losses.perceptual import TextureLoss, build_vgg16_features
from jpegrestore.losses.pixel import L1Loss, L1SSIMLoss, l1_loss, mse_loss, ssim

__all__ = [
    "L1Loss", "L1SSIMLoss", "TextureLoss", "build_vgg16_features", "l1_loss", "nonsaturating_discriminator_loss",
    "nonsaturating_generator_loss", "r1_penalty", "ragan_discriminator_loss", "ragan_generator_loss", "ssim",
    "mse_loss",
]
