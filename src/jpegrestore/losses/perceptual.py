"""QGAC's texture loss: L1 distance between VGG16 conv5_3 (pre-activation) features.

The VGG16 weights come from a local file resolved by ``jpegrestore.weights.resolve("vgg16", path)``; nothing
is downloaded. Images are float [B, 3, H, W] in [0, 1] RGB; they are normalized with the ImageNet mean/std
before the network (the convention of torchvision's VGG16 and of MINC-VGG16 ports to PyTorch).
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
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _features_state_dict(state: dict, source: str) -> dict:
    """Keep the ``features.*`` entries of a full VGG16 state dict (or accept a features-only one)."""
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if any(k.startswith("features.") for k in state):
        state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    if "0.weight" not in state:
        raise ValueError(f"{source} does not hold VGG16 weights (no 'features.0.weight' or '0.weight' key)")
    return state


def build_vgg16_features(layer: str = "conv5_3", weights_path: str | Path | None = None) -> nn.Sequential:
    """torchvision VGG16 ``features`` truncated after ``layer`` (pre-activation), loaded from a local file.

    weights_path: a torchvision ``vgg16-*.pth`` state dict (or features-only), or None to resolve it through
    ``jpegrestore.weights`` ($JPEGRESTORE_WEIGHTS, torch-hub cache). Parameters are frozen, module in eval mode.
    """
    from torchvision.models.vgg import cfgs, make_layers

    from jpegrestore import weights

    if layer not in VGG16_CONV_INDEX:
        raise ValueError(f"unknown VGG16 layer {layer!r}; choose one of {sorted(VGG16_CONV_INDEX)}")
    path = Path(weights.resolve("vgg16", weights_path))
    features = make_layers(cfgs["D"])[: VGG16_CONV_INDEX[layer] + 1]  # cfg D is VGG16
    state = _features_state_dict(torch.load(path, map_location="cpu", weights_only=True), str(path))
    wanted = set(features.state_dict())
    missing = wanted - set(state)
    if missing:
        raise ValueError(f"{path} lacks VGG16 feature weights {sorted(missing)}")
    features.load_state_dict({k: state[k] for k in wanted})
    features.requires_grad_(False)
    return features.eval()


class TextureLoss(nn.Module):
    """Texture loss (QGAC eq. 2): ``mean |VGG16_conv5_3(pred) - VGG16_conv5_3(target)|``.

    (pred, target) [B, 3, H, W] RGB in [0, 1] -> scalar. The VGG stays frozen and in eval mode; gradients
    flow to ``pred`` only. Grayscale inputs [B, 1, H, W] are repeated to three channels.
    """

    def __init__(self, weights_path: str | Path | None = None, layer: str = "conv5_3") -> None:
        super().__init__()
        self.features = build_vgg16_features(layer, weights_path)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> "TextureLoss":
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
        return (self._embed(pred) - target_features).abs().mean()
