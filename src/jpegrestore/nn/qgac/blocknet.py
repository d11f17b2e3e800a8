"""BlockNet: per-block representation from a table-guided stride-8 CFM, refined by an RRDB, and decoded back."""

from __future__ import annotations

import torch
from torch import nn

from .cfm import ConvolutionalFilterManifold
from .rrdb import RRDB


class BlockNet(nn.Module):
    """CFM (stride 8) -> PReLU -> RRDB(s) -> transposed CFM (stride 8) -> PReLU.

    Args:
        in_channels: channels of the coefficient-layout input.
        out_channels: channels of the coefficient-layout output.
        channels: width of the block representation (256 in the paper).
        cfm_hidden: width of the table CNN inside both CFMs.
        num_rrdb: number of RRDBs (1 in the paper).

    forward(x [B, in, H, W], table [B, 1, 8, 8] / 255) -> [B, out, H, W]; H, W multiples of 8.
    Both CFMs are driven by the same table.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        channels: int = 256,
        cfm_hidden: int = 64,
        num_rrdb: int = 1,
    ) -> None:
        super().__init__()
        self.encode = ConvolutionalFilterManifold(in_channels, channels, cfm_hidden)
        self.encode_act = nn.PReLU()
        self.enhance = nn.Sequential(*(RRDB(channels) for _ in range(num_rrdb)))
        self.decode = ConvolutionalFilterManifold(channels, out_channels, cfm_hidden, transposed=True)
        self.decode_act = nn.PReLU()

    def forward(self, x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        blocks = self.encode_act(self.encode(x, table))
        blocks = self.enhance(blocks)
        return self.decode_act(self.decode(blocks, table))
