"""Training losses: pixel (L1, SSIM, QGAC's L1 - lambda*SSIM), adversarial (RaGAN, non-saturating, R1), VGG
features (QGAC's VGG16 texture loss, the posterior decoder's VGG19 perceptual loss), JPEG consistency and the
first/second-moment penalties over several draws."""

from jpegrestore.losses.consistency import consistency_loss
from jpegrestore.losses.gan import (
    nonsaturating_discriminator_loss,
    nonsaturating_generator_loss,
    r1_penalty,
    ragan_discriminator_loss,
    ragan_generator_loss,
)
from jpegrestore.losses.moments import first_moment_loss, second_moment_loss
from jpegrestore.losses.perceptual import (
    PerceptualLoss,
    TextureLoss,
    VGGFeatureLoss,
    build_vgg16_features,
    load_vgg_features,
)
from jpegrestore.losses.pixel import L1Loss, L1SSIMLoss, l1_loss, mse_loss, ssim

__all__ = [
    "L1Loss", "L1SSIMLoss", "PerceptualLoss", "TextureLoss", "VGGFeatureLoss", "build_vgg16_features",
    "load_vgg_features", "consistency_loss", "first_moment_loss", "l1_loss", "nonsaturating_discriminator_loss",
    "nonsaturating_generator_loss", "r1_penalty", "ragan_discriminator_loss", "ragan_generator_loss",
    "second_moment_loss", "ssim", "mse_loss",
]
