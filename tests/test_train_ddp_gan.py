"""trainer=ddp_sim for the GAN recipe (QGAC stage 3: manual optimization, two optimizers, find_unused_parameters):
both processes end with identical generator and discriminator weights."""

from __future__ import annotations

import pytest

from conftest import TINY, run_train
from test_train_ddp import _assert_identical_ranks, _ddp_overrides, _train_py

TINY_D = ["model.discriminator.base_channels=8", "model.discriminator.num_layers=2"]


@pytest.fixture(scope="module")
def stage2_checkpoint(tmp_path_factory):
    """A tiny joint Y + colour checkpoint to start the GAN from (single process)."""
    out = tmp_path_factory.mktemp("joint")
    run_train([*TINY, "model=qgac_joint"], out)
    return out / "checkpoints" / "last.ckpt"


def test_ddp_sim_stage3_gan_ranks_agree(tmp_path, stage2_checkpoint, random_minc_vgg16):
    overrides = [*_ddp_overrides("qgac_stage3"), *TINY_D, f"model.generator_checkpoint={stage2_checkpoint}",
                 f"model.vgg_weights={random_minc_vgg16}", "trainer.max_steps=4"]
    _train_py(overrides, tmp_path)
    _assert_identical_ranks(tmp_path, 4, ("net.y_net.", "net.color_net.", "discriminator."))
