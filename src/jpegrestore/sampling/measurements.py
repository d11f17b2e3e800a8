"""Measurement operators of DDRM-JPEG: a forward map H and a right inverse H+ with H(H+(y)) == y exactly.

Images are on the diffusion scale [-1, 1], [B, C, H, W]. ``forward`` and ``pinv`` work on the operator's
*observed canvas* (``canvas``): the MCU-padded area the JPEG coefficients describe, or the image itself for
the quantization variant. The sampler pads that canvas further to what the prior needs and crops back.
"""

from __future__ import annotations

import torch
from torch import Tensor

from jpegrestore import jpeg


_LUMA = (0.299, 0.587, 0.114)  # JFIF Y of RGB; the weights sum to 1, so a gray RGB image has Y = its gray


def luma(rgb: Tensor) -> Tensor:
    """JFIF luma of [B, 3, H, W] -> [B, 1, H, W] (on any scale whose zero is black)."""
    w = torch.tensor(_LUMA, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    return (rgb * w).sum(1, keepdim=True)


class JPEGMeasurement:
    """H = :func:`jpeg.float_encode` with the file's own tables and subsampling, H+ = :func:`jpeg.float_decode`.

    A grayscale JPEG restored with an RGB prior (``rgb_prior=True``) is measured through the luma of the RGB
    image: H(x) = encode(luma(x)), H+(y) = the decoded gray in all three channels (luma of gray is gray, so
    H(H+(y)) == y still holds), and the restoration is the luma of the result.

    Args:
        coeffs: the JPEG's quantized coefficients (e.g. from ``jpeg.read``), batch B.
        rgb_prior: the prior models RGB images (only changes anything for grayscale JPEGs).
    Attributes:
        channels: channels of the images the sampler draws (the prior's); ``out_channels``: of the result.
    """

    def __init__(self, coeffs: jpeg.Coefficients, rgb_prior: bool = False) -> None:
        if not isinstance(coeffs, jpeg.Coefficients):
            raise ValueError(f"mode='jpeg' measures jpeg.Coefficients, got {type(coeffs).__name__}")
        self.y = coeffs.to(torch.float32)
        self.size = coeffs.size
        self.out_channels = coeffs.num_components
        self.through_luma = rgb_prior and coeffs.num_components == 1
        self.channels = 3 if self.through_luma else coeffs.num_components
        self.batch_size = coeffs.batch_size
        self.device = coeffs.device
        self.canvas = jpeg.mcu_canvas(coeffs.size, coeffs.subsampling, coeffs.num_components)

    def forward(self, x: Tensor) -> jpeg.Coefficients:
        """x [B, C, *canvas] in [-1, 1] -> quantized float coefficients with the file's tables."""
        x01 = (x + 1) / 2
        if self.through_luma:
            x01 = luma(x01)
        return jpeg.float_encode(x01, tables=self.y.qt, subsampling=self.y.subsampling, size=self.size)

    def pinv(self, y: jpeg.Coefficients) -> Tensor:
        """Coefficients -> [B, C, *canvas] in [-1, 1] (not clamped)."""
        x = jpeg.float_decode(y) * 2 - 1
        return x.expand(-1, 3, -1, -1) if self.through_luma else x

    def output(self, x01: Tensor) -> Tensor:
        """The restoration from a drawn image on the 0..1 scale: itself, or its luma for a gray JPEG."""
        return luma(x01) if self.through_luma else x01


class QuantizationMeasurement:
    """The dequantization variant (DDRM-JPEG Fig. 2): ``levels`` uniform levels per colour channel.

    H keeps the lower edge of each pixel's level: ``k = floor(255 v / w)`` with ``v = (x + 1) / 2`` and
    ``w = 256 / levels`` gray levels per bin (32 for 8 levels), returned as the image ``2 k w / 255 - 1``;
    H+ is the identity. ``k`` is taken with a tolerance of ``EDGE_TOLERANCE`` gray levels below each edge,
    so that a lower edge itself (whose float value may land a hair under the edge) maps to its own level and
    H(H+(y)) == y holds exactly. Values outside [-1, 1] (the sampler's x0 is not clipped) get level 0 or
    ``levels - 1``, the level of the clamped value.

    Args:
        images: float [B, C, H, W] in [0, 1]; the measurement is their levels (quantizing an image that is
            already quantized to these levels changes nothing).
        levels: number of levels per channel, a divisor of 256 (8 in the paper: 3 bits per channel).
    """

    EDGE_TOLERANCE = 1e-3

    def __init__(self, images: Tensor, levels: int = 8) -> None:
        if not torch.is_tensor(images) or images.dim() != 4 or not images.is_floating_point():
            raise ValueError("mode='dequantize' measures float images [B, C, H, W] in [0, 1], got "
                             f"{getattr(images, 'shape', type(images).__name__)}")
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2 or 256 % levels:
            raise ValueError(f"levels must be a divisor of 256 of at least 2, got {levels!r}")
        self.levels = levels
        self.width = 256 // levels
        self.size = tuple(images.shape[-2:])
        self.channels = self.out_channels = images.shape[1]
        self.batch_size = images.shape[0]
        self.device = images.device
        self.canvas = self.size
        self.y = self.forward(images.float() * 2 - 1)

    def level(self, x: Tensor) -> Tensor:
        """Level index 0..levels-1 of every value of x in [-1, 1] (float tensor of integers)."""
        gray = (x + 1) * (255 / 2)
        return torch.floor((gray + self.EDGE_TOLERANCE) / self.width).clamp(0, self.levels - 1)

    def forward(self, x: Tensor) -> Tensor:
        """x [B, C, H, W] in [-1, 1] -> the lower edge of each value's level, in [-1, 1]."""
        return self.level(x) * (2 * self.width / 255) - 1

    def pinv(self, y: Tensor) -> Tensor:
        return y

    def output(self, x01: Tensor) -> Tensor:
        return x01
