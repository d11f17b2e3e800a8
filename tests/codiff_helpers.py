"""Tiny inputs for the CODiff stage-2 tests: a tiny SD folder, a stage-1 (CaVE) checkpoint, random DISTS files."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

TINY_CAVE = {"_target_": "jpegrestore.nn.cave.CaVE", "channels": [4, 8, 8, 16], "blocks": 1, "qf_blocks": 1,
             "qf_hidden": 16}


def write_cave_checkpoint(path: Path, recipe: str = "cave", seed: int = 0) -> Path:
    """A seeded tiny CaVE saved the way the stage-1 task writes it (``net.`` state + metadata)."""
    from jpegrestore.utils.instantiate import instantiate_object

    torch.manual_seed(seed)
    cave = instantiate_object(dict(TINY_CAVE))
    torch.save({
        "state_dict": {f"net.{k}": v for k, v in cave.state_dict().items()},
        "jpegrestore": {"format": 1, "recipe": recipe, "state_dict_prefix": "net.", "network": dict(TINY_CAVE)},
    }, path)
    return path


def write_random_dists(directory: Path, vgg16_file: Path) -> Path:
    """A directory with random DISTS alpha/beta (normalised as the real file) and a (random) VGG16 file."""
    directory.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    alpha, beta = torch.rand(1, 1475, 1, 1, generator=generator), torch.rand(1, 1475, 1, 1, generator=generator)
    total = alpha.sum() + beta.sum()
    torch.save({"alpha": alpha / total, "beta": beta / total}, directory / "dists_weights.pt")
    shutil.copy(vgg16_file, directory / "vgg16-397923af.pth")
    return directory
