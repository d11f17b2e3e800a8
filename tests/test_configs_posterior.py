"""The posterior decoder's configs carry the paper's values as defaults and compose for every experiment."""

from __future__ import annotations

from conftest import compose_train


def test_posterior_gan_paper_defaults(tmp_path):
    cfg = compose_train(["experiment=posterior_gan"], tmp_path)
    model, data = cfg.model, cfg.data
    assert model._target_ == "jpegrestore.tasks.posterior.PosteriorGAN"
    assert model.variant == "general" and model.lambda_sm == 1e3
    assert model.discriminator._target_ == "jpegrestore.nn.posterior.VGGStyleDiscriminator"
    assert model.network._target_ == "jpegrestore.nn.posterior.PosteriorGenerator" and model.network.stochastic
    assert data.crop_size == 128 and list(data.quality) == list(range(5, 51))
    assert model.optimizer.betas == [0.0, 0.99] and model.draws == 8
    assert cfg.ddp_find_unused_parameters is True
    # "a conditional GAN [35] that takes Y as an input": the critic sees (image, JPEG) pairs
    assert model.conditional_critic is True and model.discriminator.in_channels is None
    # StyleGAN2-ADA's gamma = 2e-4 * 128^2 / 32 on [-1, 1] with a 1/2 factor is gamma / 8 on [0, 1] without it
    assert model.lambda_r1 == 2e-4 * 128**2 / 32 / 8


def test_posterior_mmse_is_the_same_generator_without_noise(tmp_path):
    gan = compose_train(["experiment=posterior_gan"], tmp_path).model.network
    mmse = compose_train(["experiment=posterior_mmse"], tmp_path).model.network
    assert mmse.stochastic is False
    assert {k: v for k, v in mmse.items() if k != "stochastic"} == {k: v for k, v in gan.items() if k != "stochastic"}


def test_quickstart_starts_from_and_regularizes_with_the_mmse(tmp_path):
    cfg = compose_train(["experiment=posterior_quick", "model.mmse_checkpoint=m.ckpt"], tmp_path)
    assert cfg.model.generator_checkpoint == "m.ckpt" and cfg.model.lambda_p == 0
    assert cfg.trainer.accelerator == "cpu"
