"""Training-free samplers over unconditional diffusion priors.

>>> from jpegrestore.sampling import DDRMJPEG
>>> sampler = DDRMJPEG(eps_model, alphas_cumprod)           # the paper's defaults: 20 steps below t = 300
>>> restored = sampler(jpeg.read("photo.jpg"), num_samples=8, generator=torch.Generator().manual_seed(0))
"""

from jpegrestore.sampling.authors_jpeg import AuthorsCompression, AuthorsJPEGMeasurement
from jpegrestore.sampling.ddrm_jpeg import DDRMJPEG, MODES, OPERATORS, check_alphas_cumprod
from jpegrestore.sampling.measurements import JPEGMeasurement, QuantizationMeasurement
from jpegrestore.sampling.priors import DiffusionPrior, load_prior, write_tiny_ddpm

__all__ = ["DDRMJPEG", "MODES", "OPERATORS", "check_alphas_cumprod", "AuthorsCompression", "AuthorsJPEGMeasurement", "JPEGMeasurement", "QuantizationMeasurement",
           "DiffusionPrior", "load_prior", "write_tiny_ddpm"]
