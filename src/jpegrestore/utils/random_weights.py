"""Random-weight files in the layouts of the pretrained files the recipes read (no download): for smoke runs and
benchmarks of the real loading code. The numbers they produce mean nothing."""

from __future__ import annotations

from pathlib import Path

import torch

#: torchvision's VGG layer configs: "D" = VGG16, "E" = VGG19.
VGG_FILE_NAMES = {"D": "vgg16-397923af.pth", "E": "vgg19-dcbb9e9d.pth"}
#: channels DISTS weighs: the image and the five VGG16 stages it reads (3 + 64 + 128 + 256 + 512 + 512).
DISTS_CHANNELS = 1475


def write_random_vgg_features(path: str | Path, config: str = "D", seed: int = 0) -> Path:
    """A randomly initialised VGG ``features`` state dict in torchvision's key layout (``features.N.weight``).
    config: "D" (VGG16) or "E" (VGG19). -> ``path``."""
    from torchvision.models.vgg import cfgs, make_layers

    if config not in VGG_FILE_NAMES:
        raise ValueError(f"config must be one of {sorted(VGG_FILE_NAMES)} (VGG16, VGG19), got {config!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        state = make_layers(cfgs[config]).state_dict()
    torch.save({f"features.{k}": v for k, v in state.items()}, path)
    return path


def write_random_dists_weights(directory: str | Path, seed: int = 0) -> Path:
    """``directory/dists_weights.pt`` with random alpha/beta [1, 1475, 1, 1], normalised as the real file's (they
    sum to 1). -> the file."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    alpha = torch.rand(1, DISTS_CHANNELS, 1, 1, generator=generator)
    beta = torch.rand(1, DISTS_CHANNELS, 1, 1, generator=generator)
    total = alpha.sum() + beta.sum()
    path = directory / "dists_weights.pt"
    torch.save({"alpha": alpha / total, "beta": beta / total}, path)
    return path


def write_random_dists(directory: str | Path, seed: int = 0) -> Path:
    """A directory DISTS loads (:func:`write_random_dists_weights` and a random ``vgg16-397923af.pth``).
    -> ``directory``."""
    write_random_dists_weights(directory, seed)
    write_random_vgg_features(Path(directory) / VGG_FILE_NAMES["D"], "D", seed)
    return Path(directory)
