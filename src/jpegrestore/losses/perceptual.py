"""Feature losses on a frozen torchvision VGG: QGAC's texture loss (L1 between VGG16 conv5_3 features) and the
posterior decoder's perceptual loss (squared L2 between VGG19 conv5_4 features, Eq. 6), one class for both.

Features are taken before the layer's ReLU (as ESRGAN/BasicSR do). The weights come from a local file resolved
by ``jpegrestore.weights.resolve("vgg16" | "vgg19", path)``; nothing is downloaded. Images are float
[B, 3, H, W] in [0, 1] RGB; they are normalized with the ImageNet mean/std before the network (the convention of
torchvision's VGGs and of MINC-VGG16 ports to PyTorch).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

# Index of each conv layer inside torchvision's ``vgg16().features``.
VGG16_CONV_INDEX = {
    "conv1_1": 0, "conv1_2": 2, "conv2_1": 5, "conv2_2": 7, "conv3_1": 10, "conv3_2": 12, "conv3_3": 14,
    "conv4_1": 17, "conv4_2": 19, "conv4_3": 21, "conv5_1": 24, "conv5_2": 26, "conv5_3": 28,
}
# Index of each conv layer inside torchvision's ``vgg19().features``.
VGG19_CONV_INDEX = {
    "conv1_1": 0, "conv1_2": 2, "conv2_1": 5, "conv2_2": 7, "conv3_1": 10, "conv3_2": 12, "conv3_3": 14,
    "conv3_4": 16, "conv4_1": 19, "conv4_2": 21, "conv4_3": 23, "conv4_4": 25, "conv5_1": 28, "conv5_2": 30,
    "conv5_3": 32, "conv5_4": 34,
}
#: arch -> (torchvision layer config name, conv indices)
VGG_LAYOUTS = {"vgg16": ("D", VGG16_CONV_INDEX), "vgg19": ("E", VGG19_CONV_INDEX)}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _features_state_dict(state: dict, source: str, arch: str = "vgg16") -> dict:
    """Keep the ``features.*`` entries of a full VGG state dict (or accept a features-only one)."""
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if any(k.startswith("features.") for k in state):
        state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    if "0.weight" not in state:
        raise ValueError(f"{source} does not hold {arch.upper()} weights (no 'features.0.weight' or '0.weight' key)")
    return state


def build_vgg_features(arch: str = "vgg16", layer: str = "conv5_3",
                       weights_path: str | Path | None = None) -> nn.Sequential:
    """torchvision VGG16/VGG19 ``features`` truncated after ``layer`` (pre-activation), loaded from a local file.

    weights_path: a torchvision ``vgg16-*.pth`` / ``vgg19-*.pth`` state dict (or features-only), or None to
    resolve it through ``jpegrestore.weights`` ($JPEGRESTORE_WEIGHTS, torch-hub cache). Parameters are frozen,
    module in eval mode.
    """
    from torchvision.models.vgg import cfgs, make_layers

    from jpegrestore import weights

    if arch not in VGG_LAYOUTS:
        raise ValueError(f"unknown VGG {arch!r}; choose one of {sorted(VGG_LAYOUTS)}")
    cfg_name, index = VGG_LAYOUTS[arch]
    if layer not in index:
        raise ValueError(f"unknown {arch.upper()} layer {layer!r}; choose one of {sorted(index)}")
    path = Path(weights.resolve(arch, weights_path))
    features = make_layers(cfgs[cfg_name])[: index[layer] + 1]
    state = _features_state_dict(torch.load(path, map_location="cpu", weights_only=True), str(path), arch)
    wanted = set(features.state_dict())
    missing = wanted - set(state)
    if missing:
        raise ValueError(f"{path} lacks {arch.upper()} feature weights {sorted(missing)}")
    features.load_state_dict({k: state[k] for k in wanted})
    features.requires_grad_(False)
    return features.eval()


def build_vgg16_features(layer: str = "conv5_3", weights_path: str | Path | None = None) -> nn.Sequential:
    """VGG16 ``features`` up to ``layer``; see :func:`build_vgg_features`."""
    return build_vgg_features("vgg16", layer, weights_path)


class VGGFeatureLoss(nn.Module):
    """Distance between frozen VGG features of ``pred`` and ``target``: ``mean |f(p) - f(t)|`` (``"l1"``) or
    ``mean (f(p) - f(t))^2`` (``"mse"``), the mean over batch, channels and positions.

    (pred, target) [B, 3, H, W] RGB in [0, 1] -> scalar. The VGG stays frozen and in eval mode; gradients flow to
    ``pred`` only (target features are computed without a graph). Grayscale inputs are repeated to three channels.
    """

    def __init__(self, arch: str = "vgg16", layer: str = "conv5_3", distance: str = "l1",
                 weights_path: str | Path | None = None) -> None:
        super().__init__()
        if distance not in ("l1", "mse"):
            raise ValueError(f"VGG feature distance must be 'l1' or 'mse', got {distance!r}")
        self.distance = distance
        self.features = build_vgg_features(arch, layer, weights_path)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> "VGGFeatureLoss":
        """The feature network never leaves eval mode."""
        super().train(mode)
        self.features.eval()
        return self

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.features((x - self.mean) / self.std)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target_features = self._embed(target)
        difference = self._embed(pred) - target_features
        return difference.abs().mean() if self.distance == "l1" else difference.square().mean()


class PerceptualLoss(VGGFeatureLoss):
    """The posterior decoder's perceptual loss P (Eq. 6): ``mean (VGG19_conv5_4(pred) - VGG19_conv5_4(target))^2``.

    The paper's squared norm is taken as a mean over feature elements (independent of the crop size).
    """

    def __init__(self, weights_path: str | Path | None = None, layer: str = "conv5_4") -> None:
        super().__init__("vgg19", layer, "mse", weights_path)


class TextureLoss(VGGFeatureLoss):
    """Texture loss (QGAC eq. 2): ``mean |VGG16_conv5_3(pred) - VGG16_conv5_3(target)|``.

    (pred, target) [B, 3, H, W] RGB in [0, 1] -> scalar; see :class:`VGGFeatureLoss`.
    """

    def __init__(self, weights_path: str | Path | None = None, layer: str = "conv5_3") -> None:
        super().__init__("vgg16", layer, "l1", weights_path)
