"""trainer=ddp_sim for the posterior-sampling GAN (manual optimization, two optimizers, frozen MMSE estimator):
both processes end with identical generator and critic weights, and a run stopped mid-epoch resumes to the weights
of an uninterrupted one on both ranks. Marked slow (two processes each; run with -m slow)."""

from __future__ import annotations

import pytest

from conftest import run_train
from posterior_helpers import POSTERIOR_TINY, TINY_CRITIC
from test_train_ddp import _assert_ddp_resume_is_exact, _assert_identical_ranks, _ddp_overrides, _train_py


@pytest.fixture(scope="module")
def mmse_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("mmse")
    run_train([*POSTERIOR_TINY, "experiment=posterior_mmse"], out)
    return out / "checkpoints" / "last.ckpt"


def _posterior_ddp(experiment: str) -> list[str]:
    return [o if not o.startswith("model/network=") else "model/network=posterior_tiny"
            for o in _ddp_overrides(experiment)]


@pytest.mark.slow
def test_ddp_sim_posterior_mmse_ranks_agree(tmp_path):
    _train_py(_posterior_ddp("posterior_mmse"), tmp_path)
    _assert_identical_ranks(tmp_path, 2, ("net.",))


@pytest.mark.slow
def test_ddp_sim_posterior_gan_ranks_agree(tmp_path, mmse_checkpoint):
    # general variant without the VGG19 file (lambda_p=0): C, FM and SM against the frozen MMSE estimator.
    overrides = [*_posterior_ddp("posterior_gan"), *TINY_CRITIC, f"model.mmse_checkpoint={mmse_checkpoint}",
                 "model.lambda_p=0", "trainer.max_steps=4"]
    _train_py(overrides, tmp_path)
    _assert_identical_ranks(tmp_path, 4, ("net.", "discriminator."))


@pytest.mark.slow
def test_ddp_sim_posterior_gan_resumes_midepoch_bit_identically(tmp_path, mmse_checkpoint):
    # 2 ranks x batch 2 over 12 crops: 3 batches (6 optimizer steps, G and D) per epoch; last.ckpt every 2 batches,
    # so the first run stops after batch 2 of epoch 0. Both ranks draw their noise from (step, batch, rank).
    base = [*_posterior_ddp("posterior_gan"), *TINY_CRITIC, f"model.mmse_checkpoint={mmse_checkpoint}",
            "model.lambda_p=0", "data.samples_per_epoch=12", "trainer.val_check_interval=2"]
    _assert_ddp_resume_is_exact(base, tmp_path, stop=4, end=10)
