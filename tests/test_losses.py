"""Losses against hand-computed values and independent implementations (scikit-image, torchvision)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from jpegrestore import losses
from jpegrestore.losses.pixel import SSIM_K1, SSIM_K2


def test_l1_hand_computed():
    pred = torch.tensor([[[[0.0, 0.5], [1.0, 0.25]]]])
    target = torch.tensor([[[[0.5, 0.5], [0.0, 0.0]]]])
    # |diffs| = 0.5, 0, 1, 0.25 -> mean 0.4375
    assert losses.l1_loss(pred, target).item() == pytest.approx(0.4375)
    assert losses.L1Loss()(pred, target).item() == pytest.approx(0.4375)


def test_ssim_of_constant_images_is_luminance_term():
    a, b = 0.3, 0.7
    x = torch.full((2, 1, 16, 16), a)
    y = torch.full((2, 1, 16, 16), b)
    c1 = SSIM_K1**2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)  # the variance terms are c2 / c2 = 1
    assert losses.ssim(x, y).tolist() == pytest.approx([expected] * 2, rel=1e-5)


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_matches_scikit_image(channels):
    gen = torch.Generator().manual_seed(0)
    target = torch.rand(2, channels, 24, 20, generator=gen)
    pred = (target + 0.1 * torch.randn(2, channels, 24, 20, generator=gen)).clamp(0, 1)
    ours = losses.ssim(pred, target).double()
    for i in range(2):
        ref = structural_similarity(
            pred[i].numpy().astype(np.float64), target[i].numpy().astype(np.float64), data_range=1.0,
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False, channel_axis=0,
        )
        assert ours[i].item() == pytest.approx(ref, abs=2e-5)


def test_ssim_is_differentiable_and_identity_is_one():
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    assert losses.ssim(x, x.detach()).item() == pytest.approx(1.0, abs=1e-5)
    y = torch.rand(1, 3, 16, 16)
    losses.ssim(x, y).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_ssim_rejects_small_or_mismatched_input():
    with pytest.raises(ValueError, match="at least 11x11"):
        losses.ssim(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="one shape"):
        losses.ssim(torch.rand(1, 1, 16, 16), torch.rand(1, 3, 16, 16))


def test_qgac_l1_ssim_loss_hand_computed():
    a, b = 0.2, 0.6
    x = torch.full((1, 1, 12, 12), a)
    y = torch.full((1, 1, 12, 12), b)
    c1 = SSIM_K1**2
    expected = abs(a - b) - 0.05 * (2 * a * b + c1) / (a * a + b * b + c1)
    assert losses.L1SSIMLoss(ssim_weight=0.05)(x, y).item() == pytest.approx(expected, rel=1e-5)
    assert SSIM_K2 == 0.03


def test_ragan_losses_hand_computed():
    real = torch.tensor([1.0, 3.0])
    fake = torch.tensor([0.0, 2.0])
    # real - mean(fake) = [0, 2]; fake - mean(real) = [-2, 0]
    softplus = lambda v: math.log1p(math.exp(v))  # noqa: E731
    d_expected = (softplus(-0) + softplus(-2)) / 2 + (softplus(-2) + softplus(0)) / 2
    g_expected = (softplus(0) + softplus(2)) / 2 + (softplus(2) + softplus(0)) / 2
    assert losses.ragan_discriminator_loss(real, fake).item() == pytest.approx(d_expected, rel=1e-6)
    assert losses.ragan_generator_loss(real, fake).item() == pytest.approx(g_expected, rel=1e-6)
    assert d_expected == pytest.approx(math.log(2) + math.log1p(math.exp(-2)))


def test_ragan_generator_gradient_reaches_fake_only_through_logits():
    real = torch.tensor([0.5, -0.5])
    fake = torch.tensor([0.0, 1.0], requires_grad=True)
    losses.ragan_generator_loss(real, fake).backward()
    # d/dfake_i of the loss, by hand: fake enters both terms.
    s = torch.sigmoid
    rvf = real - fake.detach().mean()
    fvr = fake.detach() - real.mean()
    expected = -(s(rvf).sum() / 2) / 2 * torch.ones(2) + (s(fvr) - 1) / 2
    assert torch.allclose(fake.grad, expected, atol=1e-6)


def test_nonsaturating_losses_hand_computed():
    real = torch.tensor([2.0, -1.0])
    fake = torch.tensor([-3.0, 0.5])
    sp = lambda v: math.log1p(math.exp(v))  # noqa: E731
    assert losses.nonsaturating_generator_loss(fake).item() == pytest.approx((sp(3) + sp(-0.5)) / 2, rel=1e-6)
    expected_d = (sp(-2) + sp(1)) / 2 + (sp(-3) + sp(0.5)) / 2
    assert losses.nonsaturating_discriminator_loss(real, fake).item() == pytest.approx(expected_d, rel=1e-6)


def test_r1_penalty_hand_computed():
    x = torch.tensor([[1.0, 2.0], [0.0, -1.0]], requires_grad=True)
    logits = (x**2).sum(1)  # grad = 2x -> squared norms 4*(1+4)=20 and 4*(0+1)=4 -> mean 12
    penalty = losses.r1_penalty(logits, x)
    assert penalty.item() == pytest.approx(12.0)
    penalty.backward()  # d/dx of mean ||2x||^2 = 8x / 2
    assert torch.allclose(x.grad, 4 * x.detach())


def test_r1_penalty_requires_grad_input():
    with pytest.raises(ValueError, match="requires_grad"):
        losses.r1_penalty(torch.zeros(2), torch.zeros(2, 3))


@pytest.fixture(scope="module")
def random_vgg16_file(tmp_path_factory):
    """A randomly initialised VGG16 saved as a torchvision-style (``features.*``) state dict."""
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    features = make_layers(cfgs["D"])
    path = tmp_path_factory.mktemp("vgg") / "vgg16-random.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    return path, features


def test_texture_loss_matches_torchvision_vgg(random_vgg16_file):
    path, features = random_vgg16_file
    loss_fn = losses.TextureLoss(weights_path=path)
    gen = torch.Generator().manual_seed(1)
    pred = torch.rand(2, 3, 32, 32, generator=gen, requires_grad=True)
    target = torch.rand(2, 3, 32, 32, generator=gen)
    loss = loss_fn(pred, target)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    conv5_3 = features[:29].eval()  # up to and including conv5_3, before its ReLU
    with torch.no_grad():
        expected = (conv5_3((pred - mean) / std) - conv5_3((target - mean) / std)).abs().mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss.item() > 0
    loss.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in loss_fn.parameters())
    loss_fn.train()
    assert not loss_fn.features.training


def test_texture_loss_missing_weights_names_file(tmp_path):
    missing = tmp_path / "nowhere" / "vgg16.pth"
    with pytest.raises(FileNotFoundError, match="vgg16"):
        losses.TextureLoss(weights_path=missing)


def test_texture_loss_rejects_wrong_file(tmp_path):
    bogus = tmp_path / "not_vgg.pth"
    torch.save({"weight": torch.zeros(1)}, bogus)
    with pytest.raises(ValueError, match="not_vgg.pth"):
        losses.TextureLoss(weights_path=bogus)


def test_regression_loss_with_mse_distance_hand_computed():
    a, b = 0.25, 0.75
    x = torch.full((1, 3, 12, 12), a)
    y = torch.full((1, 3, 12, 12), b)
    c1 = SSIM_K1**2
    expected = (a - b) ** 2 - 0.1 * (2 * a * b + c1) / (a * a + b * b + c1)
    assert losses.L1SSIMLoss(ssim_weight=0.1, distance="mse")(x, y).item() == pytest.approx(expected, rel=1e-5)
    assert losses.mse_loss(x, y).item() == pytest.approx(0.25)
    with pytest.raises(ValueError, match="distance"):
        losses.L1SSIMLoss(distance="huber")
