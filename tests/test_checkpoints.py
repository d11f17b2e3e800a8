"""jpegrestore.checkpoints: a checkpoint is read once, and evaluate / restore load each file a single time."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from checkpoint_helpers import write_tiny_checkpoint
from conftest import CONF
from posterior_helpers import write_posterior_checkpoint
from jpegrestore.checkpoints import Checkpoint, checkpoint_description, load_network


@pytest.fixture
def loads(monkeypatch) -> Counter:
    """Counts ``torch.load`` calls per file (resolved path)."""
    counter: Counter = Counter()
    real = torch.load

    def counting(f, *args, **kwargs):
        if isinstance(f, (str, Path)):
            counter[Path(f).resolve()] += 1
        return real(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting)
    return counter


def _ddpm_prior_checkpoint(path: Path) -> Path:
    """A tiny ``ddpm_prior`` checkpoint in the layout the recipe writes (its UNet, schedule and method)."""
    from diffusers import UNet2DModel

    from jpegrestore.sampling.priors import LINEAR_SCHEDULE, TINY_UNET_CONFIG

    torch.manual_seed(0)
    unet = UNet2DModel(**TINY_UNET_CONFIG)
    torch.save({"state_dict": {f"net.{k}": v for k, v in unet.state_dict().items()}, "jpegrestore": {
        "format": 1, "recipe": "ddpm_prior", "state_dict_prefix": "net.",
        "network": {"_target_": "diffusers.UNet2DModel", **{k: list(v) if isinstance(v, tuple) else v
                                                              for k, v in TINY_UNET_CONFIG.items()}},
        "scheduler": {"_class_name": "DDPMScheduler", **LINEAR_SCHEDULE},
        "evaluation_method": "jpegrestore.evaluation.ddrm.DDRMJPEGMethod"}}, path)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    import skimage.data

    folder = tmp_path_factory.mktemp("images")
    Image.fromarray(skimage.data.astronaut()[80:128, 200:248]).save(folder / "a.png")
    return folder


def _jpeg(tmp_path: Path) -> Path:
    import skimage.data

    path = tmp_path / "photo.jpg"
    Image.fromarray(np.ascontiguousarray(skimage.data.coffee()[100:140, 150:198])).save(path, quality=20)
    return path


def test_a_checkpoint_is_read_once_and_answers_everything(tmp_path, loads):
    path, network = write_tiny_checkpoint(tmp_path / "q.ckpt")
    ckpt = Checkpoint.read(path)
    assert ckpt.recipe and ckpt.network_spec["_target_"].endswith(".QGAC")
    assert set(ckpt.network_state_dict()) == set(network.state_dict())
    rebuilt = load_network(ckpt)
    assert all(torch.equal(a, b) for a, b in zip(rebuilt.state_dict().values(), network.state_dict().values()))
    assert checkpoint_description(ckpt)[0].startswith("recipe:")
    assert loads[path.resolve()] == 1
    assert Checkpoint.of(ckpt) is ckpt and Checkpoint.of(path).recipe == ckpt.recipe


def test_bad_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        Checkpoint.read(tmp_path / "missing.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.ckpt"):
        Checkpoint.read(tmp_path / "junk.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "plain.ckpt")
    with pytest.raises(ValueError, match="plain.ckpt has no 'jpegrestore' entry"):
        Checkpoint.read(tmp_path / "plain.ckpt").meta


@pytest.mark.parametrize("kind", ["qgac", "posterior", "ddpm_prior"])
def test_evaluate_and_restore_load_each_checkpoint_once(kind, images, tmp_path, loads):
    from hydra import compose, initialize_config_dir

    from jpegrestore.cli import main
    from jpegrestore.evaluation import evaluate_config

    path = {"qgac": lambda p: write_tiny_checkpoint(p)[0], "posterior": write_posterior_checkpoint,
            "ddpm_prior": _ddpm_prior_checkpoint}[kind](tmp_path / f"{kind}.ckpt").resolve()
    options = {"qgac": [], "posterior": [], "ddpm_prior": ["+method.steps=2"]}[kind]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=[
            f"ckpt={path}", f"data.source={images}", "qf=[10]", "metrics=[psnr]", "device=cpu", "progress=false",
            "comparisons=0", *options])
    evaluate_config(cfg, tmp_path / "eval")
    assert loads[path] == 1, f"evaluate.py read {path.name} {loads[path]} times"
    loads.clear()
    argv = ["restore", str(_jpeg(tmp_path)), "-o", str(tmp_path / "out"), "--ckpt", str(path), "--device", "cpu",
            "-q"]
    assert main(argv) == 0
    assert loads[path] == 1, f"jpegrestore restore read {path.name} {loads[path]} times"
