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
    from jpegrestore.utils.random_weights import write_random_dists_weights

    write_random_dists_weights(directory)
    shutil.copy(vgg16_file, directory / "vgg16-397923af.pth")
    return directory


def crops_seen_by_training_step(model, network_method: str, size: int, batches: int = 25,
                                batch_size: int = 8) -> tuple[torch.Tensor, tuple[int, int]]:
    """What a CODiff-family training step feeds its network: ``model.training_step`` runs on batches of
    ``size`` x ``size`` images whose every pixel holds its own position (row * size + col), and
    ``model.net.<network_method>`` records the images it is called with, then stops the step.

    Returns (the (top, left) of each crop in the original image, [batches * batch_size, 2]; the crops' (H, W)).
    """
    from unittest import mock

    class Reached(Exception):
        pass

    seen = []

    def record(images, *args, **kwargs):
        seen.append(images.detach().clone())
        raise Reached

    position = (torch.arange(size)[:, None] * size + torch.arange(size)[None]).float()
    with mock.patch.object(model.net, network_method, side_effect=record), \
            mock.patch.object(model, "optimizers", return_value=(None, None)):
        for index in range(batches):
            image = position.expand(batch_size, 3, size, size).clone()
            batch = {"input": image, "target": image.clone(), "quality": torch.full((batch_size,), 10),
                     "coeffs": None}
            try:
                model.training_step(batch, index)
            except Reached:
                continue
            raise AssertionError(f"the training step never called net.{network_method}")
    crops = torch.cat(seen)
    corner = crops[:, 0, 0, 0].round().long()
    return torch.stack([corner // size, corner % size], 1), tuple(crops.shape[-2:])


def assert_grid_shifts_follow(offsets: torch.Tensor, shift_prob: float, margin: int) -> None:
    """Crop offsets drawn by a training step: (0, 0) unless shifted; shifted with probability ``shift_prob``, to
    (top, left) uniform over 0..margin x 0..margin (both ends included, as the authors' code: 256 of 264). A
    shifted draw lands on (0, 0) with probability 1 / (margin + 1)^2, so the rate of moved crops is
    ``shift_prob * (1 - 1 / (margin + 1)^2)``, asserted to 4.5 binomial standard deviations (exactly 0 when
    ``shift_prob`` is 0)."""
    moved = (offsets != 0).any(1).float().mean().item()
    expected = shift_prob * (1 - 1 / (margin + 1) ** 2)
    n = offsets.shape[0]
    assert abs(moved - expected) <= 4.5 * (expected * (1 - expected) / n) ** 0.5 + 1e-9, (moved, expected)
    if shift_prob > 0:
        for axis in (0, 1):  # every offset 0..margin occurs, none beyond
            assert set(offsets[:, axis].tolist()) == set(range(margin + 1)), offsets[:, axis].unique()
