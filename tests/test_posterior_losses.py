"""Loss terms of the posterior-sampling decoder on hand-computed tensors: consistency (Eq. 4), first moment (Eq. 5),
second moment (Eq. 7), the VGG19 conv5_4 perceptual loss (Eq. 6) against torchvision, and R1 with the critic."""

from __future__ import annotations

import pytest
import torch

from jpegrestore import jpeg, losses


def test_first_moment_is_squared_error_of_the_sample_mean():
    target = torch.tensor([[[[0.5, 0.2]]]])  # [1, 1, 1, 2]
    samples = torch.tensor([[[[[0.4, 0.0]]]], [[[[0.8, 0.2]]]]])  # P=2: means 0.6, 0.1
    # errors 0.1 and 0.1 -> mean of squares 0.01
    assert losses.first_moment_loss(samples, target).item() == pytest.approx(0.01)
    # One draw: plain MSE.
    assert losses.first_moment_loss(samples[:1], target).item() == pytest.approx((0.1**2 + 0.2**2) / 2)


def test_first_moment_ignores_spread_around_the_right_mean():
    target = torch.full((1, 1, 2, 2), 0.5)
    samples = torch.stack([target + 0.1, target - 0.1])
    assert losses.first_moment_loss(samples, target).item() == pytest.approx(0.0, abs=1e-12)
    assert losses.mse_loss(samples[0], target).item() == pytest.approx(0.01)  # a per-draw MSE would not


def test_second_moment_hand_computed_unbiased_and_population():
    target = torch.tensor([[[[0.5, 0.5]]]])
    mmse = torch.tensor([[[[0.3, 0.5]]]])  # residual^2: 0.04, 0
    samples = torch.tensor([[[[[0.1, 0.2]]]], [[[[0.3, 0.2]]]], [[[[0.5, 0.2]]]]])  # P=3
    # pixel 0: values 0.1, 0.3, 0.5 -> unbiased var 0.04, population 0.08/3; pixel 1: var 0
    assert losses.second_moment_loss(samples, target, mmse).item() == pytest.approx(0.0, abs=1e-7)
    population = losses.second_moment_loss(samples, target, mmse, correction=0).item()
    assert population == pytest.approx(abs(0.04 - 0.08 / 3) / 2, rel=1e-5)


def test_second_moment_pushes_variance_towards_the_residual():
    target, mmse = torch.full((1, 1, 1, 1), 0.6), torch.full((1, 1, 1, 1), 0.5)  # residual^2 = 0.01
    samples = torch.tensor([0.5, 0.5]).view(2, 1, 1, 1, 1).requires_grad_(True)  # variance 0 < 0.01
    loss = losses.second_moment_loss(samples, target, mmse)
    assert loss.item() == pytest.approx(0.01)
    loss.backward()
    assert samples.grad.abs().sum() == 0  # zero-variance draws: d var / d x = 0 at equal values
    spread = torch.tensor([0.45, 0.55]).view(2, 1, 1, 1, 1).requires_grad_(True)  # variance 0.005
    losses.second_moment_loss(spread, target, mmse).backward()
    assert spread.grad.view(-1)[0] > 0 > spread.grad.view(-1)[1]  # descent moves the draws apart (0.45 down, 0.55 up)


def test_moment_penalties_reject_bad_shapes():
    with pytest.raises(ValueError, match="P, B, C, H, W"):
        losses.first_moment_loss(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="at least 2 draws"):
        losses.second_moment_loss(torch.zeros(1, 1, 3, 4, 4), torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4))


@pytest.mark.parametrize("subsampling", ["4:2:0", "4:4:4"])
def test_consistency_is_zero_for_the_original_and_matches_a_hand_computation(subsampling):
    gen = torch.Generator().manual_seed(0)
    original = torch.rand(2, 3, 16, 24, generator=gen)
    coeffs = jpeg.encode(original, quality=torch.tensor([10, 50]), subsampling=subsampling, rounding="exact")
    decoded = jpeg.decode(coeffs, rounding="exact")
    zero = losses.consistency_loss(original, decoded, coeffs.qt, coeffs.subsampling)
    assert zero.item() == 0.0  # the original re-encodes to exactly its JPEG
    other = torch.rand(2, 3, 16, 24, generator=gen)
    expected = (decoded - jpeg.decode(jpeg.encode(other, tables=coeffs.qt, subsampling=subsampling,
                                                  rounding="exact"), rounding="exact")).square().mean()
    assert losses.consistency_loss(other, decoded, coeffs.qt, coeffs.subsampling).item() == pytest.approx(
        expected.item(), rel=1e-6)


def test_consistency_gradient_is_straight_through():
    gen = torch.Generator().manual_seed(1)
    original = torch.rand(1, 3, 16, 16, generator=gen)
    coeffs = jpeg.encode(original, quality=50, rounding="exact")
    decoded = jpeg.decode(coeffs, rounding="exact")
    restored = (decoded + 0.1 * torch.randn(decoded.shape, generator=gen)).clamp(0, 1).requires_grad_(True)
    loss = losses.consistency_loss(restored, decoded, coeffs.qt, coeffs.subsampling)
    loss.backward()
    assert loss.item() > 0 and restored.grad.abs().sum() > 0
    # A small step against the gradient lowers the penalty (the STE gradient is a useful direction).
    with torch.no_grad():
        stepped = (restored - 0.5 * restored.grad / restored.grad.abs().max() * 0.02).clamp(0, 1)
    assert losses.consistency_loss(stepped, decoded, coeffs.qt, coeffs.subsampling) < loss


@pytest.fixture(scope="module")
def random_vgg19(tmp_path_factory):
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    features = make_layers(cfgs["E"])
    path = tmp_path_factory.mktemp("vgg19") / "vgg19-random.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    return path, features


def test_perceptual_loss_is_squared_vgg19_conv5_4_distance(random_vgg19):
    path, features = random_vgg19
    loss_fn = losses.PerceptualLoss(weights_path=path)
    gen = torch.Generator().manual_seed(2)
    pred = torch.rand(2, 3, 32, 32, generator=gen, requires_grad=True)
    target = torch.rand(2, 3, 32, 32, generator=gen)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    conv5_4 = features[:35].eval()  # torchvision vgg19 features up to conv5_4, before its ReLU
    assert isinstance(conv5_4[-1], torch.nn.Conv2d)
    with torch.no_grad():
        expected = (conv5_4((pred - mean) / std) - conv5_4((target - mean) / std)).square().mean()
    loss = loss_fn(pred, target)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert pred.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in loss_fn.parameters())


def test_perceptual_loss_missing_weights_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("JPEGRESTORE_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(FileNotFoundError, match="vgg19-dcbb9e9d.pth"):
        losses.PerceptualLoss()


def test_r1_on_a_linear_critic_is_its_squared_weight_norm():
    """D(x) = <w, x>: grad = w, R1 = ||w||^2 for every sample (the critic used by the posterior recipe)."""
    w = torch.tensor([1.0, -2.0, 0.5])
    x = torch.rand(4, 3, requires_grad=True)
    assert losses.r1_penalty(x @ w, x).item() == pytest.approx(5.25)
