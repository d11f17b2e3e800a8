"""LightningModules, one per training recipe, plus checkpoint helpers (``load_network``)."""

from jpegrestore.tasks.base import RestorationTask
from jpegrestore.tasks.checkpoint import checkpoint_recipe, load_network
from jpegrestore.tasks.ddpm_prior import DDPMPrior
from jpegrestore.tasks.posterior import PosteriorGAN, PosteriorMMSE
from jpegrestore.tasks.qgac import QGACGAN, QGACColor, QGACLuma, export_interpolated

__all__ = ["DDPMPrior", "PosteriorGAN", "PosteriorMMSE", "QGACColor", "QGACGAN", "QGACLuma", "RestorationTask",
           "checkpoint_recipe",
           "export_interpolated", "load_network"]
