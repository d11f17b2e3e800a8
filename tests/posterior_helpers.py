"""Tiny posterior-decoder runs and checkpoints for tests: overrides, a random VGG19, a generator whose noise and
residual are strong (random output layer), saved in the posterior_gan checkpoint layout."""

from __future__ import annotations

from pathlib import Path

import torch

from conftest import TINY

#: TINY with the tiny posterior generator instead of the tiny QGAC.
POSTERIOR_TINY = [o if not o.startswith("model/network=") else "model/network=posterior_tiny" for o in TINY]
#: A 3-stage critic with 4 base channels (32-px crops -> 4 px).
TINY_CRITIC = ["model.discriminator.base_channels=4", "model.discriminator.stages=3", "model.draws=2"]


def write_random_vgg19(path: Path, he_init: bool = False) -> Path:
    """A randomly initialised VGG19 ``features`` state dict in torchvision's key layout (no download).

    ``he_init``: He-normal convolutions, so that deep features keep the input's scale (PyTorch's default init
    shrinks them ~2.4x per layer: conv5_4 features of ~1e-8, a perceptual loss of ~1e-16)."""
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    features = make_layers(cfgs["E"])
    if he_init:
        for layer in features:
            if isinstance(layer, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    return path


def noisy_generator(seed: int = 0):
    """A tiny PosteriorGenerator with every zero-initialized tensor randomized: visible noise and residuals."""
    from jpegrestore.nn.posterior import PosteriorGenerator

    torch.manual_seed(seed)
    net = PosteriorGenerator(widths=(4, 8), blocks=1, cond_hidden=8)
    for param in net.parameters():
        if param.abs().sum() == 0:
            torch.nn.init.normal_(param, 0, 0.2)
    return net


def write_posterior_checkpoint(path: Path, net=None) -> Path:
    """Save ``net`` (default :func:`noisy_generator`) as a posterior_gan checkpoint rebuilt by ``load_network``."""
    net = noisy_generator() if net is None else net
    spec = {"_target_": "jpegrestore.nn.posterior.PosteriorGenerator", "widths": list(net.widths), "blocks": 1,
            "cond_hidden": 8, "noise_channels": net.noise_channels}
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}, "jpegrestore": {
        "format": 1, "recipe": "posterior_gan", "state_dict_prefix": "net.", "network": spec,
        "evaluation_method": "jpegrestore.evaluation.posterior.PosteriorMethod"}}, path)
    return path
