"""Frechet Inception Distance with the pytorch-fid Inception network, built offline.

torch-fidelity (torchmetrics' default FID backbone) is not a dependency, so the feature
extractor is piq's port of the pytorch-fid Inception v3 (the TF 2015-12-05 weights,
file ``pt_inception-2015-12-05-6726825d.pth``), resolved through
:mod:`jpegrestore.weights` and run inside torchmetrics' ``FrechetInceptionDistance``.
Inputs are resized bilinearly to 299x299 as in pytorch-fid. FID is a set-level
number: ``update`` with batches of real and restored images, then ``compute``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from jpegrestore import weights

FID_FEATURES = 2048


def _offline_inception(file: Path) -> nn.Module:
    """piq's ``InceptionV3`` (pool3 features) whose FID network is loaded from ``file``, not downloaded."""
    from piq.feature_extractors import fid_inception as fi
    from torchvision import models

    class OfflineInceptionV3(fi.InceptionV3):
        def fid_inception_v3(self) -> nn.Module:  # replaces piq's downloading static method
            with torch.device("meta"):  # skeleton only: every tensor comes from the file
                inception = models.inception_v3(
                    weights=None, num_classes=1008, aux_logits=False, init_weights=False
                )
                inception.Mixed_5b = fi.FIDInceptionA(192, pool_features=32)
                inception.Mixed_5c = fi.FIDInceptionA(256, pool_features=64)
                inception.Mixed_5d = fi.FIDInceptionA(288, pool_features=64)
                inception.Mixed_6b = fi.FIDInceptionC(768, channels_7x7=128)
                inception.Mixed_6c = fi.FIDInceptionC(768, channels_7x7=160)
                inception.Mixed_6d = fi.FIDInceptionC(768, channels_7x7=160)
                inception.Mixed_6e = fi.FIDInceptionC(768, channels_7x7=192)
                inception.Mixed_7b = fi.FIDInceptionE1(1280)
                inception.Mixed_7c = fi.FIDInceptionE2(2048)
            inception = inception.to_empty(device="cpu")
            try:
                inception.load_state_dict(weights.load_state_dict(file), strict=True)
            except RuntimeError as error:
                raise ValueError(f"FID Inception weights file {file} does not match the network: {error}") from error
            return inception

    return OfflineInceptionV3(output_blocks=[3], resize_input=True, normalize_input=True)


class InceptionFeatures(nn.Module):
    """Pool3 features of the FID Inception: float [B, 3 or 1, H, W] in [0, 1] -> [B, 2048]."""

    num_features = FID_FEATURES

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        super().__init__()
        self.net = _offline_inception(weights.resolve("fid", path))
        self.net.eval().requires_grad_(False)

    def forward(self, images: Tensor) -> Tensor:
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"FID expects [B, 1 or 3, H, W] images, got {tuple(images.shape)}")
        images = images.float().clamp(0, 1).expand(-1, 3, -1, -1)
        return self.net(images)[0].flatten(1)


def build_fid(path: str | os.PathLike[str] | None = None, feature: nn.Module | None = None, **kwargs):
    """torchmetrics ``FrechetInceptionDistance`` over the offline Inception (or a given ``feature`` module).

    ``update(images, real=bool)`` takes float [B, C, H, W] in [0, 1]; ``compute()`` returns
    a scalar tensor. ``feature`` (a module images -> [B, D] with ``num_features``) is for tests.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    return FrechetInceptionDistance(feature=feature if feature is not None else InceptionFeatures(path), **kwargs)
