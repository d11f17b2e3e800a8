"""Y channel network: BlockNet -> FrequencyNet -> BlockNet, fused per frequency into a residual."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .blocknet import BlockNet
from .frequencynet import FREQUENCIES, FrequencyNet, blocks_to_frequencies, frequencies_to_blocks


class FrequencyFusion(nn.Module):
    """Three-layer per-frequency fusion of several coefficient-layout maps into one residual plane.

    The inputs [B, c_k, H, W] are concatenated ([B, sum c_k, H, W]), rearranged frequency-major and passed
    through three 3x3 convs with groups=64: sum c_k -> width -> width -> 1 per frequency (PReLU between).
    Output: [B, 1, H, W], no final activation (it is a residual).
    """

    def __init__(self, in_channels: Sequence[int] = (64, 64, 64), width: int = 4) -> None:
        super().__init__()
        g = FREQUENCIES
        total = sum(in_channels)
        self.net = nn.Sequential(
            nn.Conv2d(g * total, g * width, kernel_size=3, padding=1, groups=g),
            nn.PReLU(),
            nn.Conv2d(g * width, g * width, kernel_size=3, padding=1, groups=g),
            nn.PReLU(),
            nn.Conv2d(g * width, g, kernel_size=3, padding=1, groups=g),
        )

    def forward(self, *maps: torch.Tensor) -> torch.Tensor:
        return frequencies_to_blocks(self.net(blocks_to_frequencies(torch.cat(maps, dim=1))))


class YNet(nn.Module):
    """Restores normalized Y DCT coefficients (coefficient layout, one 8x8 tile per block).

    Args:
        block_channels: BlockNet representation width (256).
        freq_channels: FrequencyNet RRDB width, multiple of 64 (256).
        inner_channels: channels between the subnetworks (64: BlockNet(1->64), FrequencyNet(64->64),
            BlockNet(64->64)).
        cfm_hidden: width of every CFM table CNN (64).
        fusion_width: per-frequency width of the fusion convs (4).
        frequency_grouping: FrequencyNet's dense concatenation, "isolated" (paper) or "plain_concat".

    forward(y [B, 1, H, W] normalized coefficients, table [B, 1, 8, 8] luma table / 255)
        -> restored normalized coefficients [B, 1, H, W] = y + fusion(BlockNet2, FrequencyNet, BlockNet1).
    """

    def __init__(
        self,
        block_channels: int = 256,
        freq_channels: int = 256,
        inner_channels: int = 64,
        cfm_hidden: int = 64,
        fusion_width: int = 4,
        frequency_grouping: str = "isolated",
    ) -> None:
        super().__init__()
        c = inner_channels
        self.block_encoder = BlockNet(1, c, block_channels, cfm_hidden)
        self.frequency_net = FrequencyNet(c, c, freq_channels, grouping=frequency_grouping)
        self.block_decoder = BlockNet(c, c, block_channels, cfm_hidden)
        self.fusion = FrequencyFusion((c, c, c), fusion_width)

    def forward(self, y: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        early = self.block_encoder(y, table)
        frequencies = self.frequency_net(early)
        late = self.block_decoder(frequencies, table)
        return y + self.fusion(late, frequencies, early)
