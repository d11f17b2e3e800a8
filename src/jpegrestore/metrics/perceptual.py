"""LPIPS (AlexNet / VGG16, via ``lpips``) and DISTS (via ``piq``), built offline.

Both libraries download their backbones when constructed normally. Here the networks
are built with random weights (``pnet_rand=True`` / a ready feature extractor) and every
tensor is then loaded from files resolved by :mod:`jpegrestore.weights`, so nothing is
ever downloaded. Both metrics take float [B, 3, H, W] in [0, 1] and return Tensor[B]
(lower is better).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from jpegrestore import weights

_LPIPS_NETS = {"alex": ("lpips_alex", "alexnet"), "vgg": ("lpips_vgg", "vgg16")}


def _check_images(pred: Tensor, target: Tensor, name: str) -> None:
    if pred.dim() != 4 or pred.shape != target.shape or pred.shape[1] != 3:
        raise ValueError(f"{name} expects two RGB [B, 3, H, W] tensors, got {tuple(pred.shape)}, {tuple(target.shape)}")


class LPIPSMetric(nn.Module):
    """LPIPS v0.1 distance per image; inputs in [0, 1] (mapped to [-1, 1] internally)."""

    def __init__(self, net: str = "alex", path: str | os.PathLike[str] | None = None) -> None:
        super().__init__()
        import lpips

        if net not in _LPIPS_NETS:
            raise ValueError(f"unknown LPIPS net {net!r}; expected one of {sorted(_LPIPS_NETS)}")
        entry, arch = _LPIPS_NETS[net]
        files = weights.resolve_files(entry, path)
        backbone_file, linear_file = (files[name] for name in weights.spec_for(entry).files)
        self.model = lpips.LPIPS(net=net, pretrained=False, pnet_rand=True, verbose=False)
        _load_lpips_backbone(self.model.net, weights.torchvision_features(arch, backbone_file))
        _load_lpips_linear(self.model, linear_file)
        self.model.eval().requires_grad_(False)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """pred, target float [B, 3, H, W] in [0, 1] -> Tensor[B]."""
        _check_images(pred, target, "LPIPS")
        return self.model(pred, target, normalize=True).flatten()


def _load_lpips_backbone(lpips_net: nn.Module, features: nn.Sequential) -> None:
    """Copy torchvision ``features`` tensors into the lpips slices (their children keep the feature indices)."""
    source = features.state_dict()
    state = {}
    for slice_name, block in lpips_net.named_children():
        for index, _ in block.named_children():
            for key in ("weight", "bias"):
                if f"{index}.{key}" in source:
                    state[f"{slice_name}.{index}.{key}"] = source[f"{index}.{key}"]
    lpips_net.load_state_dict(state, strict=True)


def _load_lpips_linear(model: nn.Module, file: Path) -> None:
    """Load the learned 1x1 ``lin*`` layers; every one of them must be in ``file``."""
    state = weights.load_state_dict(file)
    linear = {k: v for k, v in state.items() if k.startswith("lin")}
    expected = {k for k in model.state_dict() if k.startswith("lin") and not k.startswith("lins.")}
    missing = expected - set(linear)
    if missing:
        raise ValueError(f"LPIPS linear-layer file {file} lacks {sorted(missing)}")
    model.load_state_dict(linear, strict=False)


class DISTSMetric(nn.Module):
    """DISTS (Ding et al. 2020) per image via ``piq.DISTS``; inputs in [0, 1].

    ``full_resolution=False`` is piq's DISTS, which downscales images whose shorter side exceeds 256 px to 256;
    ``True`` scores every image at its own size, as the authors' code and pyiqa (the papers' numbers) do.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, full_resolution: bool = False) -> None:
        super().__init__()
        self.model = _offline_piq_dists(path)
        self.full_resolution = bool(full_resolution)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """pred, target float [B, 3, H, W] in [0, 1] -> Tensor[B] (0 for identical images)."""
        _check_images(pred, target, "DISTS")
        if self.full_resolution:
            from piq.perceptual import ContentLoss

            return 1 - ContentLoss.forward(self.model, pred, target)  # piq's DISTS without its resize
        return self.model(pred, target)


def _offline_piq_dists(path: str | os.PathLike[str] | None) -> nn.Module:
    """A ``piq.DISTS`` built from resolved files, bypassing its downloading constructor."""
    import piq
    from piq.perceptual import VGG16_LAYERS, ContentLoss

    files = weights.resolve_files("dists", path)
    dists_file, vgg_file = (files[name] for name in weights.spec_for("dists").files)
    alpha_beta = weights.load_state_dict(dists_file)
    if "alpha" not in alpha_beta or "beta" not in alpha_beta:
        raise ValueError(f"DISTS weights file {dists_file} must hold 'alpha' and 'beta' tensors")
    channels = [3, 64, 128, 256, 512, 512]
    if alpha_beta["alpha"].shape[1] != sum(channels) or alpha_beta["beta"].shape[1] != sum(channels):
        raise ValueError(f"DISTS weights file {dists_file}: alpha/beta must have {sum(channels)} channels")
    layer_weights = list(torch.split(alpha_beta["alpha"], channels, dim=1))
    layer_weights += list(torch.split(alpha_beta["beta"], channels, dim=1))
    features = weights.torchvision_features("vgg16", vgg_file)
    layers = [VGG16_LAYERS[name] for name in ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")]

    model = piq.DISTS.__new__(piq.DISTS)
    # ContentLoss.__init__ with a ready module: no download; DISTS' own replace_pooling puts in L2 pooling.
    ContentLoss.__init__(
        model, features, layers=layers, weights=layer_weights, replace_pooling=True, reduction="none",
        normalize_features=False, allow_layers_weights_mismatch=True,
    )
    return model.eval()
