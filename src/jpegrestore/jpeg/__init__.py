"""The shared JPEG operator.

>>> from jpegrestore import jpeg
>>> coeffs = jpeg.encode(images, quality=10)        # images: float [B, 3, H, W] in [0, 1]
>>> jpeg.decode(coeffs)                              # -> [B, 3, H, W] in [0, 1]
>>> jpeg.compress(images, 10, rounding="exact")     # bit-exact libjpeg-turbo round trip
"""

from .codec import compress, decode, encode
from .coefficients import Coefficients
from .colour import rgb_to_ycbcr, ycbcr_to_rgb
from .float_codec import float_decode, float_encode, mcu_canvas
from .dct import block_dct, block_idct, blocks_to_image, image_to_blocks
from .io import read, write
from .projection import is_consistent, project
from .tables import QualityEstimate, estimate_quality, quant_tables
from .rounding import ROUNDING_MODES
from .sampling import SUBSAMPLING_FACTORS

__all__ = [
    "Coefficients", "quant_tables", "estimate_quality", "QualityEstimate", "encode", "decode", "compress", "project", "is_consistent", "read", "write",
    "block_dct", "block_idct", "blocks_to_image", "image_to_blocks",
    "rgb_to_ycbcr", "ycbcr_to_rgb", "ROUNDING_MODES", "SUBSAMPLING_FACTORS",
    "float_encode", "float_decode", "mcu_canvas",
]
