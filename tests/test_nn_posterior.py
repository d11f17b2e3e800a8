"""The posterior generator and the VGG-style critic: shapes on odd sizes, seeded noise, zero-noise mode, FiLM."""

from __future__ import annotations

import pytest
import torch

from jpegrestore import jpeg
from jpegrestore.nn.posterior import PosteriorGenerator, VGGStyleDiscriminator, table_features


def _trained_like(seed: int = 0) -> PosteriorGenerator:
    """A tiny generator with random (not zero) output layer and FiLM maps, so noise and tables matter."""
    torch.manual_seed(seed)
    net = PosteriorGenerator(widths=(4, 8, 8), blocks=1, cond_hidden=8)
    for p in net.parameters():
        if p.abs().sum() == 0:
            torch.nn.init.normal_(p, 0, 0.1)
    return net.eval()


def test_table_features_hand_computed():
    tables = torch.ones(1, 3, 8, 8)
    tables[0, 1] = 255
    features = table_features(tables)
    assert features.shape == (1, 128)
    assert torch.equal(features[0, :64], torch.zeros(64)) and torch.allclose(features[0, 64:], torch.ones(64))
    gray = table_features(torch.full((2, 1, 8, 8), 255.0))
    assert torch.allclose(gray, torch.ones(2, 128))


@pytest.mark.parametrize("size", [(17, 30), (32, 32), (8, 9)])
def test_generator_keeps_any_size_and_range(size):
    net = _trained_like()
    image = torch.rand(2, 3, *size)
    out = net.generate(image, jpeg.quant_tables([10, 50]))
    assert out.shape == image.shape and 0 <= out.min() and out.max() <= 1


def test_untrained_generator_returns_the_jpeg():
    net = PosteriorGenerator(widths=(4, 8), blocks=1, cond_hidden=8)  # zero-initialized output layer
    image = torch.rand(1, 3, 16, 16)
    assert torch.equal(net.generate(image, jpeg.quant_tables(10)), image)


def test_seeds_noise_and_zero_noise_mode():
    net = _trained_like()
    image, tables = torch.rand(1, 3, 24, 24), jpeg.quant_tables(10)
    with torch.no_grad():
        a = net.generate(image, tables, generator=torch.Generator().manual_seed(1))
        a_again = net.generate(image, tables, generator=torch.Generator().manual_seed(1))
        b = net.generate(image, tables, generator=torch.Generator().manual_seed(2))
        zero = net.generate(image, tables, noise=False)
        zero_again = net.generate(image, tables, noise=False, generator=torch.Generator().manual_seed(3))
        explicit = net.generate(image, tables, z=[torch.zeros(s) for s in net.noise_shapes(1, 24, 24)])
    assert torch.equal(a, a_again)
    assert (a - b).abs().mean() > 1e-4
    assert torch.equal(zero, zero_again) and torch.equal(zero, explicit)
    net.stochastic = False
    with torch.no_grad():
        assert torch.equal(net.generate(image, tables), zero)


def test_noise_enters_at_every_scale():
    net = _trained_like()
    image, tables = torch.rand(1, 3, 16, 16), jpeg.quant_tables(10)
    base = [torch.zeros(s) for s in net.noise_shapes(1, 16, 16)]
    with torch.no_grad():
        reference = net.generate(image, tables, z=base)
        for level in range(len(base)):
            z = [t.clone() for t in base]
            z[level].normal_()
            assert (net.generate(image, tables, z=z) - reference).abs().max() > 1e-5, level


def test_tables_condition_the_output():
    net = _trained_like()
    image = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        low = net.generate(image, jpeg.quant_tables(5), noise=False)
        high = net.generate(image, jpeg.quant_tables(50), noise=False)
    assert (low - high).abs().max() > 1e-5


def test_forward_decodes_coefficients_like_libjpeg():
    net = PosteriorGenerator(widths=(4, 8), blocks=1, cond_hidden=8, stochastic=False)
    image = torch.rand(1, 3, 20, 28)
    coeffs = jpeg.encode(image, quality=20, rounding="exact")
    assert torch.equal(net(coeffs), jpeg.decode(coeffs, rounding="exact"))


def test_generator_rejects_wrong_channels():
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        PosteriorGenerator(widths=(4,), blocks=1).generate(torch.rand(1, 1, 8, 8), jpeg.quant_tables(10))


def test_discriminator_any_size_and_errors():
    critic = VGGStyleDiscriminator(base_channels=4, stages=3)
    assert critic(torch.rand(2, 3, 32, 48)).shape == (2,)
    assert VGGStyleDiscriminator(base_channels=4, stages=3, norm="none")(torch.rand(1, 3, 8, 8)).shape == (1,)
    with pytest.raises(ValueError, match="sides >= 8"):
        critic(torch.rand(1, 3, 4, 16))
    with pytest.raises(ValueError, match="norm"):
        VGGStyleDiscriminator(norm="layer")


def test_critic_without_norm_starts_with_input_dependent_logits():
    torch.manual_seed(0)
    critic = VGGStyleDiscriminator(base_channels=8, stages=3, norm="none")
    logits = critic(torch.rand(16, 3, 48, 48))
    assert logits.std() > 0.05  # He init: the logits depend on the image from the start
