"""Residual-in-Residual Dense Block (ESRGAN style, PReLU, no batch norm) with optional channel groups.

With `groups=G` every convolution is grouped and the dense concatenations are interleaved per group, so
group g only ever sees its own features. FrequencyNet uses this with G=64, one group per DCT frequency.
`isolate_groups=False` concatenates plainly instead (as the QGAC author's code does): the grouped convs then
see slices of the stacked features that cross group boundaries, so groups mix from the second conv on.
"""

from __future__ import annotations

import torch
from torch import nn


def grouped_cat(tensors: list[torch.Tensor], groups: int) -> torch.Tensor:
    """Concatenate [B, G*c_i, H, W] tensors along channels keeping each group's channels together.

    Returns [B, G*sum(c_i), H, W] where the channels of group g are
    (t_0[g], t_1[g], ...) and sit at g*sum(c_i) ... (g+1)*sum(c_i) - 1.
    With groups=1 this is plain torch.cat(dim=1).
    """
    if groups == 1:
        return torch.cat(tensors, dim=1)
    batch, _, height, width = tensors[0].shape
    split = [t.reshape(batch, groups, t.shape[1] // groups, height, width) for t in tensors]
    return torch.cat(split, dim=2).reshape(batch, -1, height, width)


class DenseBlock(nn.Module):
    """Five densely connected 3x3 convs: conv k sees the input and the k-1 previous outputs.

    [B, C, H, W] -> [B, C, H, W]; output = input + residual_scale * conv5(...).
    Conv k takes k*C channels and gives C, each followed by a PReLU.
    """

    def __init__(
        self,
        channels: int,
        groups: int = 1,
        num_convs: int = 5,
        residual_scale: float = 0.2,
        kernel_size: int = 3,
        isolate_groups: bool = True,
    ) -> None:
        super().__init__()
        if channels % groups:
            raise ValueError(f"DenseBlock channels ({channels}) must be a multiple of groups ({groups})")
        self.groups = groups
        self.concat_groups = groups if isolate_groups else 1
        self.residual_scale = residual_scale
        pad = kernel_size // 2
        self.convs = nn.ModuleList(
            nn.Conv2d(k * channels, channels, kernel_size, padding=pad, groups=groups)
            for k in range(1, num_convs + 1)
        )
        self.acts = nn.ModuleList(nn.PReLU() for _ in range(num_convs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        out = x
        for conv, act in zip(self.convs, self.acts):
            out = act(conv(grouped_cat(features, self.concat_groups)))
            features.append(out)
        return x + self.residual_scale * out


class RRDB(nn.Module):
    """Residual in residual dense block: three DenseBlocks and an outer residual, both scaled by 0.2.

    Args:
        channels: feature width C (must be a multiple of `groups`).
        groups: number of channel groups of every conv (64 in FrequencyNet, one per frequency).
        isolate_groups: interleave the dense concatenations per group so groups never mix (default);
            False: plain concatenation (see the module docstring).

    Shapes: [B, C, H, W] -> [B, C, H, W].
    """

    def __init__(
        self,
        channels: int,
        groups: int = 1,
        num_dense_blocks: int = 3,
        num_convs: int = 5,
        residual_scale: float = 0.2,
        kernel_size: int = 3,
        isolate_groups: bool = True,
    ) -> None:
        super().__init__()
        self.residual_scale = residual_scale
        self.blocks = nn.Sequential(
            *(DenseBlock(channels, groups, num_convs, residual_scale, kernel_size, isolate_groups)
              for _ in range(num_dense_blocks))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.residual_scale * self.blocks(x)
