"""Feature losses on a frozen VGG: QGAC's texture loss (L1 between VGG16 conv5_3 features, eq. 2) and the
posterior decoder's perceptual loss (squared L2 between VGG19 conv5_4 features, Eq. 6), one class for both.

Features are taken before the layer's ReLU (as ESRGAN/BasicSR do). Each network is fed in the input convention it
was trained with (images arrive as float [B, 3, H, W] RGB in [0, 1]):

- ``minc_vgg16`` (QGAC's paper): VGG16 trained on MINC-2500 materials (Bell et al. 2015), released as a Caffe
  model. Caffe convention: BGR channel order, 0..255, minus the mean pixel (B, G, R) = (104, 117, 124). Convert
  the Caffe weights once with ``python -m jpegrestore.losses.convert_minc``; the converted file records the
  convention and the mean.
- ``imagenet_vgg16`` / ``imagenet_vgg19``: torchvision's ImageNet VGGs (``vgg16-397923af.pth``,
  ``vgg19-dcbb9e9d.pth``). torchvision convention: RGB in [0, 1], normalized with the ImageNet mean/std.

Weights come from local files resolved by ``jpegrestore.weights`` (or an explicit path); nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from jpegrestore.utils.precision import in_float32

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
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Mean pixel of the MINC Caffe models, in their BGR order on a 0..255 scale. Source: the README.txt of the MINC
#: model release (Bell et al. 2015, "MINC is available online at http://minc.cs.cornell.edu/"), section "Model
#: inputs": inputs "scaled to [0,255], presented in BGR channel order and have a mean of B:104, G:117, R:124
#: subtracted" (read in a copy of that README, beside deploy-vgg16.prototxt and minc-vgg16.caffemodel in its file
#: list, held by a public code index that does not name the repository; a pycaffe script in the same index loads
#: minc-vgg16.caffemodel with channel_swap (2, 1, 0) and mean [104, 117, 124]). Not the ImageNet VGG mean
#: (103.939, 116.779, 123.68).
MINC_MEAN_BGR = (104.0, 117.0, 124.0)

#: Key of the description a converted file carries next to its ``state_dict``.
VGG_META_KEY = "jpegrestore_vgg"
#: network name -> (jpegrestore.weights entry, torchvision layer config, conv indices, input convention)
VGG_NETWORKS = {
    "imagenet_vgg16": ("vgg16", "D", VGG16_CONV_INDEX, "torchvision_rgb"),
    "minc_vgg16": ("minc_vgg16", "D", VGG16_CONV_INDEX, "caffe_bgr"),
    "imagenet_vgg19": ("vgg19", "E", VGG19_CONV_INDEX, "torchvision_rgb"),
}
#: QGAC's texture networks (``model.texture_network``).
TEXTURE_NETWORKS = {name: VGG_NETWORKS[name] for name in ("imagenet_vgg16", "minc_vgg16")}


def _features_state_dict(state: dict, source: str) -> dict:
    """Keep the ``features.*`` entries of a full VGG state dict (or accept a features-only one)."""
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if any(k.startswith("features.") for k in state):
        state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    if "0.weight" not in state:
        raise ValueError(f"{source} does not hold VGG weights (no 'features.0.weight' or '0.weight' key)")
    return state


def _check_file_network(data: dict, network: str, source: str) -> dict[str, Any]:
    """The file's description (converted MINC files have one, torchvision files none) checked against ``network``."""
    meta = data.get(VGG_META_KEY) if isinstance(data, dict) else None
    file_network = meta.get("network") if isinstance(meta, dict) else None
    if network == "minc_vgg16" and file_network != "minc_vgg16":
        raise ValueError(f"{source} is not a converted MINC VGG16 file (no '{VGG_META_KEY}' entry naming minc_vgg16); "
                         "convert the Caffe MINC-2500 VGG16 with `python -m jpegrestore.losses.convert_minc`, "
                         "or set texture_network=imagenet_vgg16 for torchvision's ImageNet VGG16")
    if network != "minc_vgg16" and file_network not in (None, network):
        raise ValueError(f"{source} holds {file_network} weights, not {network} "
                         f"(for the texture loss: texture_network={file_network})")
    return dict(meta or {})


def load_vgg_features(
    network: str = "imagenet_vgg16", layer: str = "conv5_3", weights_path: str | Path | None = None
) -> tuple[nn.Sequential, dict[str, Any]]:
    """A VGG's ``features`` truncated after ``layer`` (pre-activation), loaded from a local file.

    network: a key of :data:`VGG_NETWORKS`. weights_path: the network's file (a torchvision ``vgg*.pth`` or
    features-only state dict; a ``convert_minc`` output for ``minc_vgg16``), or None to resolve it through
    ``jpegrestore.weights`` ($JPEGRESTORE_WEIGHTS, torch-hub cache). -> (frozen module in eval mode, the file's
    description: ``{"network", "input", "mean_bgr", ...}`` for converted files, ``{}`` otherwise).
    """
    from torchvision.models.vgg import cfgs, make_layers

    from jpegrestore import weights

    if network not in VGG_NETWORKS:
        raise ValueError(f"unknown VGG network {network!r}; choose one of {sorted(VGG_NETWORKS)}")
    entry, cfg_name, index, _ = VGG_NETWORKS[network]
    if layer not in index:
        raise ValueError(f"unknown {network} layer {layer!r}; choose one of {sorted(index)}")
    path = Path(weights.resolve(entry, weights_path))
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold VGG weights (expected a state dict)")
    meta = _check_file_network(data, network, str(path))
    features = make_layers(cfgs[cfg_name])[: index[layer] + 1]
    state = _features_state_dict(data, str(path))
    wanted = set(features.state_dict())
    missing = wanted - set(state)
    if missing:
        raise ValueError(f"{path} lacks {network} feature weights {sorted(missing)}")
    features.load_state_dict({k: state[k] for k in wanted})
    features.requires_grad_(False)
    return features.eval(), meta


def build_vgg16_features(layer: str = "conv5_3", weights_path: str | Path | None = None,
                         network: str = "imagenet_vgg16") -> nn.Sequential:
    """The module of :func:`load_vgg_features` alone, for a VGG16."""
    return load_vgg_features(network, layer, weights_path)[0]


class VGGFeatureLoss(nn.Module):
    """Distance between frozen VGG features of ``pred`` and ``target``: ``mean |f(p) - f(t)|`` (``"l1"``) or
    ``mean (f(p) - f(t))^2`` (``"mse"``), the mean over batch, channels and positions.

    (pred, target) [B, 3, H, W] RGB in [0, 1] -> scalar; inputs are converted to the network's convention
    (module docstring). The VGG stays frozen and in eval mode; gradients flow to ``pred`` only (target features
    are computed without a graph). Grayscale inputs [B, 1, H, W] are repeated to three channels.
    """

    def __init__(self, network: str = "imagenet_vgg16", layer: str = "conv5_3", distance: str = "l1",
                 weights_path: str | Path | None = None) -> None:
        super().__init__()
        if distance not in ("l1", "mse"):
            raise ValueError(f"VGG feature distance must be 'l1' or 'mse', got {distance!r}")
        self.features, meta = load_vgg_features(network, layer, weights_path)
        self.network, self.distance = network, distance
        self.convention = VGG_NETWORKS[network][3]
        if self.convention == "caffe_bgr":
            mean_bgr = tuple(float(v) for v in meta.get("mean_bgr", MINC_MEAN_BGR))
            scale, mean, std = 255.0, torch.tensor(mean_bgr[::-1]), torch.ones(3)  # mean in RGB order
        else:
            scale, mean, std = 1.0, torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        self.scale = scale
        self.register_buffer("mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> "VGGFeatureLoss":
        """The feature network never leaves eval mode."""
        super().train(mode)
        self.features.eval()
        return self

    def network_input(self, x: torch.Tensor) -> torch.Tensor:
        """RGB [B, 3 or 1, H, W] in [0, 1] -> the network's input (BGR 0..255 - mean, or normalized RGB)."""
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = (x * self.scale - self.mean) / self.std
        return x.flip(1) if self.convention == "caffe_bgr" else x

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.network_input(x))

    @in_float32
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target_features = self._embed(target)
        difference = self._embed(pred) - target_features
        return difference.abs().mean() if self.distance == "l1" else difference.square().mean()


class TextureLoss(VGGFeatureLoss):
    """Texture loss (QGAC eq. 2): ``mean |VGG16_conv5_3(pred) - VGG16_conv5_3(target)|``.

    ``network``: "minc_vgg16" (the paper) or "imagenet_vgg16"; see :class:`VGGFeatureLoss`.
    """

    def __init__(self, weights_path: str | Path | None = None, layer: str = "conv5_3",
                 network: str = "imagenet_vgg16") -> None:
        if network not in TEXTURE_NETWORKS:
            raise ValueError(f"unknown texture network {network!r}; choose one of {sorted(TEXTURE_NETWORKS)}")
        super().__init__(network, layer, "l1", weights_path)


class PerceptualLoss(VGGFeatureLoss):
    """The posterior decoder's perceptual loss P (Eq. 6): ``mean (VGG19_conv5_4(pred) - VGG19_conv5_4(target))^2``.

    The paper's squared norm is taken as a mean over feature elements (independent of the crop size).
    """

    def __init__(self, weights_path: str | Path | None = None, layer: str = "conv5_4") -> None:
        super().__init__("imagenet_vgg19", layer, "mse", weights_path)
