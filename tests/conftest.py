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
