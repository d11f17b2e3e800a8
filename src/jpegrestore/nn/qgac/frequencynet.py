"""Frequency component rearrangement and FrequencyNet (per-frequency grouped convolutions)."""

from __future__ import annotations

import torch
from torch import nn

from .rrdb import RRDB

FREQUENCIES = 64

#: How FrequencyNet's dense blocks concatenate features. "isolated" (default, the paper's Section 3.1: each
#: frequency is processed "in isolation"): per-frequency interleaving, no feature crosses frequencies.
#: "plain_concat" (the author's code): plain channel concatenation, so grouped convs mix frequencies.
FREQUENCY_GROUPINGS = ("isolated", "plain_concat")


def blocks_to_frequencies(x: torch.Tensor) -> torch.Tensor:
    """Move each 8x8 block's coefficients to channels, frequency-major.

    [B, C, 8h, 8w] -> [B, 64*C, h, w] with out[b, (8*i + j)*C + c, y, x] = x[b, c, 8*y + i, 8*x + j],
    so the C channels of frequency (i, j) are contiguous (ready for groups=64 convolutions).
    """
    batch, channels, height, width = x.shape
    if height % 8 or width % 8:
        raise ValueError(f"coefficient maps must have height and width multiple of 8, got {height}x{width}")
    h, w = height // 8, width // 8
    t = x.reshape(batch, channels, h, 8, w, 8).permute(0, 3, 5, 1, 2, 4)  # [B, 8(i), 8(j), C, h, w]
    return t.reshape(batch, FREQUENCIES * channels, h, w)


def frequencies_to_blocks(x: torch.Tensor) -> torch.Tensor:
    """Inverse of blocks_to_frequencies: [B, 64*C, h, w] -> [B, C, 8h, 8w]."""
    batch, total, h, w = x.shape
    if total % FREQUENCIES:
        raise ValueError(f"frequency-major maps need a multiple of 64 channels, got {total}")
    channels = total // FREQUENCIES
    t = x.reshape(batch, 8, 8, channels, h, w).permute(0, 3, 4, 1, 5, 2)  # [B, C, h, 8(i), w, 8(j)]
    return t.reshape(batch, channels, 8 * h, 8 * w)


class FrequencyNet(nn.Module):
    """Per-frequency restoration on the block grid (one channel group per DCT frequency).

    Coefficients are rearranged to [B, 64*in, h, w]; a 3x3 conv (groups=64) maps each frequency's `in`
    channels to channels/64 features, an RRDB with 64 groups refines them, a 3x3 conv (groups=64) maps back
    to `out` channels per frequency, and the result is rearranged to blocks. PReLU after both convs.

    Args:
        in_channels, out_channels: channels per coefficient position of input/output (64 in the Y net,
            the output of the first BlockNet; 1 for a single coefficient plane).
        channels: total RRDB width, a multiple of 64 (256 in the paper: 4 per frequency).
        grouping: "isolated" (default: every frequency keeps its own features through the dense blocks) or
            "plain_concat" (the author's code; see FREQUENCY_GROUPINGS).

    forward: [B, in, 8h, 8w] -> [B, out, 8h, 8w].
    """

    def __init__(
        self,
        in_channels: int = 64,
        out_channels: int = 64,
        channels: int = 256,
        num_rrdb: int = 1,
        grouping: str = "isolated",
    ) -> None:
        super().__init__()
        if grouping not in FREQUENCY_GROUPINGS:
            raise ValueError(f"frequency grouping must be one of {FREQUENCY_GROUPINGS}, got {grouping!r}")
        if channels % FREQUENCIES:
            raise ValueError(
                f"FrequencyNet channels must be a multiple of 64 (one group per frequency), got {channels}"
            )
        g = FREQUENCIES
        self.head = nn.Conv2d(g * in_channels, channels, kernel_size=3, padding=1, groups=g)
        self.head_act = nn.PReLU()
        isolate = grouping == "isolated"
        self.enhance = nn.Sequential(*(RRDB(channels, groups=g, isolate_groups=isolate) for _ in range(num_rrdb)))
        self.tail = nn.Conv2d(channels, g * out_channels, kernel_size=3, padding=1, groups=g)
        self.tail_act = nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.head_act(self.head(blocks_to_frequencies(x)))
        f = self.enhance(f)
        return frequencies_to_blocks(self.tail_act(self.tail(f)))
