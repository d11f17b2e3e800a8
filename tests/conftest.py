"""Shared fixtures: composing train.yaml with the Hydra compose API and tiny overrides, tiny random weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"

#: Overrides that shrink any training experiment to seconds on a CPU (tiny QGAC, 32x32 crops, 2 steps).
TINY = [
    "model/network=qgac_tiny",
    "trainer=cpu",
    "data.crop_size=32",
    "data.batch_size=2",
    "data.samples_per_epoch=4",
    "data.val_crop_size=32",
    "data.val_batch_size=4",
    "data.val_qualities=[10]",
    "data.quality=[10,50]",
    "data.num_workers=0",
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "trainer.log_every_n_steps=1",
    "trainer.num_sanity_val_steps=0",
    "+trainer.enable_progress_bar=false",
    "+trainer.enable_model_summary=false",
    "callbacks.progress_bar=null",
    "seed=0",
]


def compose_train(overrides: list[str], out_dir: Path | None = None):
    """Compose conf/train.yaml with ``overrides`` (run outputs in ``out_dir``). -> DictConfig."""
    from hydra import compose, initialize_config_dir

    import jpegrestore.utils  # noqa: F401  (registers the config resolvers)

    extra = [] if out_dir is None else [f"paths.output_dir={out_dir}", f"paths.log_dir={out_dir}"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=[*overrides, *extra])


def run_train(overrides: list[str], out_dir: Path) -> dict[str, float]:
    """Compose and run train.yaml in-process (as train.py does). -> final metrics."""
    from jpegrestore.tasks.runner import train

    return train(compose_train(overrides, out_dir))


@pytest.fixture(scope="session")
def random_vgg16(tmp_path_factory) -> Path:
    """A randomly initialised VGG16 ``features`` state dict in torchvision's key layout (no download)."""
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "vgg16-random.pth"
    torch.save({f"features.{k}": v for k, v in make_layers(cfgs["D"]).state_dict().items()}, path)
    return path


def write_random_caffe_vgg16(path: Path, seed: int = 0, layout: str = "npz") -> dict[str, torch.Tensor]:
    """Random VGG16 conv parameters in a dumped-Caffe layout (``conv1_1_0`` / ``conv1_1_1`` in an .npz, or
    ``conv1_1.weight`` / ``conv1_1.bias`` in a torch file). He-scaled so conv5_3 features stay O(1). -> the arrays."""
    import numpy as np

    from jpegrestore.losses.convert_minc import VGG16_CONV_SHAPES

    gen = torch.Generator().manual_seed(seed)
    params = {}
    for layer, (out_channels, in_channels) in VGG16_CONV_SHAPES.items():
        weight = torch.randn(out_channels, in_channels, 3, 3, generator=gen) * (2.0 / (9 * in_channels)) ** 0.5
        params[layer] = (weight, torch.randn(out_channels, generator=gen) * 0.01)
    if layout == "npz":
        arrays = {f"{layer}_{i}": t.numpy() for layer, pair in params.items() for i, t in enumerate(pair)}
        arrays["fc8_0"] = np.zeros((23, 4096), dtype=np.float32)  # MINC-2500's 23 classes; ignored
        np.savez(path, **arrays)
    else:
        torch.save(_torch_layout(params), path)
    return _torch_layout(params)


def _torch_layout(params: dict) -> dict[str, torch.Tensor]:
    """{layer: (weight, bias)} -> {"<layer>.weight": ..., "<layer>.bias": ...}."""
    return {f"{layer}.{kind}": t for layer, pair in params.items() for kind, t in zip(("weight", "bias"), pair)}


@pytest.fixture(scope="session")
def random_minc_vgg16(tmp_path_factory) -> Path:
    """A random-weight VGG16 converted as the Caffe MINC-2500 model is (``minc_vgg16`` texture network)."""
    from jpegrestore.losses.convert_minc import convert

    folder = tmp_path_factory.mktemp("minc")
    write_random_caffe_vgg16(folder / "minc-vgg16-params.npz")
    return convert(folder / "minc-vgg16-params.npz", folder / "minc_vgg16.pth")
