"""Convolutional Filter Manifold (CFM): convolution kernels generated from the quantization table.

A tiny CNN reads the 8x8 table of each sample and produces that sample's own convolution kernel and
bias. The generated kernels are applied to the whole batch at once as one grouped convolution (the batch
is folded into the channel dimension, one group per sample), so there is no Python loop over samples.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class ConvolutionalFilterManifold(nn.Module):
    """Stride-8 convolution (or transposed convolution) whose 8x8 kernels depend on the quantization table.

    Args:
        in_channels: channels of the input feature map.
        out_channels: channels of the output feature map.
        hidden_channels: width of the table CNN (the "manifold" vector length).
        transposed: False maps coefficients to one vector per block ([B, in, H, W] -> [B, out, H/8, W/8]);
            True maps block vectors back to coefficients ([B, in, h, w] -> [B, out, 8h, 8w]).
        bias: whether a table-dependent bias is generated.

    The table network is conv 8x8 (1 -> hidden), PReLU, conv 1x1 (hidden -> hidden), PReLU, giving a
    [B, hidden, 1, 1] vector. A transposed conv (hidden -> out*in, kernel 8) turns it into B sets of
    8x8 kernels and a 1x1 conv (hidden -> out) into B biases.
    """

    kernel_size = 8

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden_channels: int = 64,
        transposed: bool = False,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if min(in_channels, out_channels, hidden_channels) < 1:
            raise ValueError(
                f"CFM channels must be positive, got in={in_channels} out={out_channels} hidden={hidden_channels}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.hidden_channels = hidden_channels
        self.transposed = transposed
        k = self.kernel_size
        self.table_net = nn.Sequential(
            nn.Conv2d(1, hidden_channels, kernel_size=k),
            nn.PReLU(),
            nn.Conv2d(hidden_channels, hidden_channels, kernel_size=1),
            nn.PReLU(),
        )
        self.weight_transform = nn.ConvTranspose2d(hidden_channels, out_channels * in_channels, kernel_size=k)
        self.bias_transform = nn.Conv2d(hidden_channels, out_channels, kernel_size=1) if bias else None
        self.reset_parameters()

    def generated_fan_in(self) -> int:
        """Inputs summed into one output value of the generated convolution."""
        if self.transposed:
            return self.in_channels  # kernel == stride: each output pixel sees one tap per input channel
        return self.in_channels * self.kernel_size**2

    @torch.no_grad()
    def reset_parameters(self, kernel_scale: float = 1.0) -> None:
        """Initialise so that generated kernels start near He-normal variance times `kernel_scale`.

        The table CNN gets He-normal weights and a unit-normal first bias, so its output vector has a
        table-independent part of roughly unit mean square plus a table-dependent part. Each generated
        tap sums `hidden` manifold entries, so the transform weights get variance target / hidden.
        """
        if self.weight_transform.weight.is_meta:
            return  # nothing to initialise (e.g. built under torch.device("meta") to count parameters)
        first, _, second, _ = self.table_net
        for conv in (first, second):
            nn.init.kaiming_normal_(conv.weight, a=0.25, mode="fan_in")
        first.bias.normal_(0.0, 1.0)
        second.bias.zero_()
        target_std = kernel_scale * math.sqrt(2.0 / self.generated_fan_in())
        self.weight_transform.weight.normal_(0.0, target_std / math.sqrt(self.hidden_channels))
        self.weight_transform.bias.zero_()
        if self.bias_transform is not None:
            self.bias_transform.weight.normal_(0.0, kernel_scale * 0.1 / math.sqrt(self.hidden_channels))
            self.bias_transform.bias.zero_()

    def kernels(self, table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Generate per-sample kernels from tables.

        Args:
            table: [B, 8, 8] or [B, 1, 8, 8] quantization tables already scaled to about 0..1 (divided by 255).

        Returns:
            weight [B, out, in, 8, 8] and bias [B, out] (or None when bias=False).
        """
        if table.dim() == 3:
            table = table.unsqueeze(1)
        if table.dim() != 4 or table.shape[1:] != (1, 8, 8):
            raise ValueError(f"CFM table must be [B, 8, 8] or [B, 1, 8, 8], got {tuple(table.shape)}")
        manifold = self.table_net(table)  # [B, hidden, 1, 1]
        batch = table.shape[0]
        k = self.kernel_size
        weight = self.weight_transform(manifold).reshape(batch, self.out_channels, self.in_channels, k, k)
        bias = None
        if self.bias_transform is not None:
            bias = self.bias_transform(manifold).reshape(batch, self.out_channels)
        return weight, bias

    def forward(self, x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """Apply the table-generated stride-8 (transposed) convolution.

        Args:
            x: [B, in, H, W]. For the forward CFM H and W must be multiples of 8.
            table: [B, 8, 8] or [B, 1, 8, 8] tables divided by 255.

        Returns:
            [B, out, H/8, W/8] (forward) or [B, out, 8H, 8W] (transposed).
        """
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"CFM expects [B, {self.in_channels}, H, W], got {tuple(x.shape)}")
        batch, _, height, width = x.shape
        if table.shape[0] != batch:
            raise ValueError(f"CFM got {batch} inputs but {table.shape[0]} tables")
        k = self.kernel_size
        if not self.transposed and (height % k or width % k):
            raise ValueError(f"CFM input height and width must be multiples of 8, got {height}x{width}")
        weight, bias = self.kernels(table)
        folded = x.reshape(1, batch * self.in_channels, height, width)
        flat_bias = None if bias is None else bias.reshape(batch * self.out_channels)
        if self.transposed:
            # conv_transpose2d weight layout: [in_total, out_per_group, k, k]
            w = weight.transpose(1, 2).reshape(batch * self.in_channels, self.out_channels, k, k)
            out = F.conv_transpose2d(folded, w, flat_bias, stride=k, groups=batch)
        else:
            w = weight.reshape(batch * self.out_channels, self.in_channels, k, k)
            out = F.conv2d(folded, w, flat_bias, stride=k, groups=batch)
        return out.reshape(batch, self.out_channels, out.shape[-2], out.shape[-1])
