"""LightningModules, one per training recipe (checkpoints are read by :mod:`jpegrestore.checkpoints`)."""

from jpegrestore.tasks.base import RestorationTask
from jpegrestore.tasks.ddpm_prior import DDPMPrior
from jpegrestore.tasks.posterior import PosteriorGAN, PosteriorMMSE
from jpegrestore.tasks.qgac import QGACColor, QGACGAN, QGACLuma, export_interpolated

__all__ = ["DDPMPrior", "PosteriorGAN", "PosteriorMMSE", "QGACColor", "QGACGAN", "QGACLuma", "RestorationTask",
           "export_interpolated"]
