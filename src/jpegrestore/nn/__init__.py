"""Network architectures (plain nn.Modules, configured by constructor arguments)."""

from .discriminators import DCGANDiscriminator
from .guided_diffusion import GuidedDiffusionUNet
from .posterior import PosteriorGenerator, VGGStyleDiscriminator
from .qgac import QGAC, DCTStats

__all__ = ["QGAC", "DCTStats", "DCGANDiscriminator", "GuidedDiffusionUNet", "PosteriorGenerator",
           "VGGStyleDiscriminator"]
