"""Frechet Inception Distance with the pytorch-fid Inception network, built offline.

torch-fidelity (torchmetrics' default FID backbone) is not a dependency, so the feature
extractor is piq's port of the pytorch-fid Inception v3 (the TF 2015-12-05 weights,
file ``pt_inception-2015-12-05-6726825d.pth``), resolved through
:mod:`jpegrestore.weights`. Inputs are resized bilinearly to 299x299 as in pytorch-fid.
FID is a set-level number: ``update`` with batches of real and restored images, then
``compute``. :class:`RepeatedFID` computes K FIDs against one set of real images at once
(the posterior-sampling paper's protocol for stochastic methods: K repeats of one
restoration per image), with the statistics torchmetrics' ``FrechetInceptionDistance``
keeps (float64 sums, unbiased covariances) and its closed form.
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


class _Moments:
    """Running float64 sums of features [N, D]: count, sum [D] and sum of outer products [D, D]."""

    def __init__(self) -> None:
        self.count = 0
        self.sum: Tensor | None = None
        self.outer: Tensor | None = None

    def add(self, features: Tensor) -> None:
        features = features.double()
        if self.sum is None:
            dim = features.shape[1]
            self.sum, self.outer = features.new_zeros(dim), features.new_zeros(dim, dim)
        self.sum += features.sum(0)
        self.outer += features.T @ features
        self.count += features.shape[0]

    def mean_cov(self) -> tuple[Tensor, Tensor]:
        """Mean [D] and unbiased covariance [D, D] (needs count >= 2)."""
        mean = self.sum / self.count
        return mean, (self.outer - self.count * torch.outer(mean, mean)) / (self.count - 1)


def frechet_distance(mean1: Tensor, cov1: Tensor, mean2: Tensor, cov2: Tensor) -> Tensor:
    """``||m1 - m2||^2 + tr(C1 + C2 - 2 (C1 C2)^(1/2))``, the trace of the root from the eigenvalues of C1 C2."""
    root_trace = torch.linalg.eigvals(cov1 @ cov2).sqrt().real.sum()
    return (mean1 - mean2).square().sum() + cov1.trace() + cov2.trace() - 2 * root_trace


class RepeatedFID(nn.Module):
    """FID of ``repeats`` sets of generated images against one set of real images, one feature network.

    ``update(images, real=True)`` adds real images; ``update(images, real=False, repeat=k)`` adds images of
    repeat k (k in 0..repeats-1); ``compute()`` -> float64 Tensor[repeats], FID k between the real images and
    those of repeat k. Images: float [B, C, H, W] in [0, 1]. Each repeat keeps float64 sums of D + D^2 values
    (34 MB for the Inception's D = 2048) on the features' device.
    """

    def __init__(self, feature: nn.Module, repeats: int = 1) -> None:
        super().__init__()
        if int(repeats) < 1:
            raise ValueError(f"FID repeats must be >= 1, got {repeats}")
        self.feature = feature
        self.repeats = int(repeats)
        self.reset()

    def reset(self) -> None:
        """Forget every image seen."""
        self.real = _Moments()
        self.fakes = [_Moments() for _ in range(self.repeats)]

    @property
    def real_count(self) -> int:
        return self.real.count

    @property
    def fake_counts(self) -> list[int]:
        return [m.count for m in self.fakes]

    @torch.no_grad()
    def update(self, images: Tensor, real: bool, repeat: int = 0) -> None:
        if not real and not 0 <= repeat < self.repeats:
            raise ValueError(f"FID repeat {repeat} outside 0..{self.repeats - 1}")
        features = self.feature(images)
        (self.real if real else self.fakes[repeat]).add(features.reshape(features.shape[0], -1))

    def compute(self) -> Tensor:
        if self.real.count < 2 or min(self.fake_counts) < 2:
            raise RuntimeError(f"FID needs at least 2 real and 2 generated images per repeat; got "
                               f"{self.real.count} real, {self.fake_counts} generated")
        mean_real, cov_real = self.real.mean_cov()
        return torch.stack([frechet_distance(mean_real, cov_real, *fake.mean_cov()) for fake in self.fakes])


def build_fid(path: str | os.PathLike[str] | None = None, feature: nn.Module | None = None,
              repeats: int = 1) -> RepeatedFID:
    """:class:`RepeatedFID` over the offline Inception (or a given ``feature`` module, images -> [B, D], for
    tests). ``update(images, real=bool)`` takes float [B, C, H, W] in [0, 1]; ``compute()`` returns Tensor[repeats].
    """
    return RepeatedFID(feature if feature is not None else InceptionFeatures(path), repeats)
