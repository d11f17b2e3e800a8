"""Discriminators for adversarial training."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class DCGANDiscriminator(nn.Module):
    """DCGAN-style discriminator giving one logit per image (patch logits averaged).

    Layers: conv 4x4 stride 2 + LeakyReLU(0.2) (no norm on the first), then (num_layers - 1) times
    conv 4x4 stride 2 + BatchNorm + LeakyReLU(0.2) doubling the width up to max_channels, then a
    3x3 conv to one channel of patch logits, averaged over space (adaptive average pooling).
    Weights follow DCGAN: conv N(0, 0.02), BatchNorm weight N(1, 0.02), bias 0.

    Args:
        in_channels: image channels (3 for RGB, 1 for Y).
        base_channels: width of the first conv (64).
        num_layers: number of stride-2 convs (4); inputs need sides >= 2**num_layers.
        max_channels: width cap (512).

    forward(x [B, in, H, W], any range) -> logits [B]; patch_logits(x) -> [B, 1, H // 2**n, W // 2**n].
    """

    def __init__(
        self, in_channels: int = 3, base_channels: int = 64, num_layers: int = 4, max_channels: int = 512
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.config: dict[str, Any] = {
            "in_channels": in_channels,
            "base_channels": base_channels,
            "num_layers": num_layers,
            "max_channels": max_channels,
        }
        self.in_channels = in_channels
        self.num_layers = num_layers
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, base_channels, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
        ]
        width = base_channels
        for _ in range(num_layers - 1):
            nxt = min(width * 2, max_channels)
            layers += [
                nn.Conv2d(width, nxt, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(nxt),
                nn.LeakyReLU(0.2),
            ]
            width = nxt
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(width, 1, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def patch_logits(self, x: torch.Tensor) -> torch.Tensor:
        """[B, in, H, W] -> patch logits [B, 1, H // 2**n, W // 2**n]."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"DCGANDiscriminator expects [B, {self.in_channels}, H, W], got {tuple(x.shape)}")
        minimum = 2**self.num_layers
        if min(x.shape[-2:]) < minimum:
            raise ValueError(
                f"DCGANDiscriminator with {self.num_layers} layers needs sides >= {minimum}, got {tuple(x.shape[-2:])}"
            )
        return self.head(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, in, H, W] -> one logit per image [B]."""
        return self.pool(self.patch_logits(x)).flatten()
