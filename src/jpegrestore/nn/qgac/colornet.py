"""Colour (Cb/Cr) network guided by the restored Y channel; one network shared by Cb and Cr."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .cfm import ConvolutionalFilterManifold
from .rrdb import RRDB


class ColorNet(nn.Module):
    """Predicts a chroma residual at Y resolution from chroma coefficients and the restored Y.

    Args:
        channels: (chroma width, fused width). The chroma CFM gives `chroma width` channels refined by an
            RRDB; the restored Y goes through its own CFM to `fused - chroma` channels; the concatenation
            (`fused` channels) is refined by a second RRDB. Paper: (32, 64).
        cfm_hidden: width of the CFM table CNNs.

    forward(chroma [N, 1, Hc, Wc], chroma_table [N, 1, 8, 8], y [N, 1, H, W], y_table [N, 1, 8, 8])
        -> residual [N, 1, H, W] (normalized coefficients, coefficient layout, Y resolution).
    All inputs are normalized coefficients; tables are divided by 255. (Hc, Wc) is either (H, W)
    (4:4:4: no upsampling) or (H/2, W/2) (4:2:0: learned 4x4 stride-2 transposed conv on the block grid).
    Cb and Cr are passed as one batch of N = 2B single-channel inputs.
    """

    def __init__(self, channels: Sequence[int] = (32, 64), cfm_hidden: int = 64) -> None:
        super().__init__()
        if len(channels) != 2 or int(channels[1]) <= int(channels[0]):
            raise ValueError(
                f"color channels must be (chroma, fused) with fused > chroma (Y gets fused - chroma), got {channels}"
            )
        chroma, fused = int(channels[0]), int(channels[1])
        self.chroma_encode = ConvolutionalFilterManifold(1, chroma, cfm_hidden)
        self.chroma_act = nn.PReLU()
        self.chroma_enhance = RRDB(chroma)
        self.upsample = nn.ConvTranspose2d(chroma, chroma, kernel_size=4, stride=2, padding=1)
        self.upsample_act = nn.PReLU()
        self.luma_encode = ConvolutionalFilterManifold(1, fused - chroma, cfm_hidden)
        self.luma_act = nn.PReLU()
        self.fused_enhance = RRDB(fused)
        self.decode = ConvolutionalFilterManifold(fused, 1, cfm_hidden, transposed=True)
        self.decode_act = nn.PReLU()

    def forward(
        self, chroma: torch.Tensor, chroma_table: torch.Tensor, y: torch.Tensor, y_table: torch.Tensor
    ) -> torch.Tensor:
        c_blocks = self.chroma_enhance(self.chroma_act(self.chroma_encode(chroma, chroma_table)))
        if chroma.shape[-2:] != y.shape[-2:]:
            if (2 * chroma.shape[-2], 2 * chroma.shape[-1]) != tuple(y.shape[-2:]):
                raise ValueError(
                    f"chroma {tuple(chroma.shape[-2:])} must equal (4:4:4) or be half (4:2:0) "
                    f"of Y {tuple(y.shape[-2:])}"
                )
            c_blocks = self.upsample_act(self.upsample(c_blocks))
        y_blocks = self.luma_act(self.luma_encode(y, y_table))
        fused = self.fused_enhance(torch.cat([c_blocks, y_blocks], dim=1))
        return self.decode_act(self.decode(fused, chroma_table))
