"""DCGAN discriminator: structure, shapes, pooling and gradient flow."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from jpegrestore.nn import DCGANDiscriminator


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_structure_follows_dcgan():
    d = DCGANDiscriminator(in_channels=3, base_channels=8, num_layers=4, max_channels=32)
    convs = [m for m in d.features if isinstance(m, nn.Conv2d)]
    assert [c.stride for c in convs] == [(2, 2)] * 4
    assert [c.kernel_size for c in convs] == [(4, 4)] * 4
    assert [c.out_channels for c in convs] == [8, 16, 32, 32]
    norms = [m for m in d.features if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 3  # none after the first conv
    acts = [m for m in d.features if isinstance(m, nn.LeakyReLU)]
    assert len(acts) == 4 and all(a.negative_slope == 0.2 for a in acts)
    assert abs(convs[1].weight.std().item() - 0.02) < 0.004


@pytest.mark.parametrize("size", [(32, 32), (48, 40), (33, 70)])
def test_one_logit_per_image_is_mean_of_patch_logits(size):
    d = DCGANDiscriminator(in_channels=3, base_channels=8, num_layers=4)
    x = torch.rand(3, 3, *size)
    logits = d(x)
    assert logits.shape == (3,)
    patches = d.patch_logits(x)
    expected = tuple(s // 16 for s in size)  # each k4 s2 p1 conv floors the side in half
    assert patches.shape == (3, 1, *expected)
    torch.testing.assert_close(logits, patches.flatten(1).mean(1))


def test_gradients_reach_input_and_every_parameter():
    d = DCGANDiscriminator(in_channels=1, base_channels=8, num_layers=3)
    x = torch.rand(4, 1, 32, 32, requires_grad=True)
    loss = nn.functional.binary_cross_entropy_with_logits(d(x), torch.tensor([1.0, 0.0, 1.0, 0.0]))
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in d.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_patch_logits_see_only_their_receptive_field():
    """Four 4x4 stride-2 convs (padding 1) and a 3x3 head: patch (i, j) sees rows and columns
    16 i - 31 .. 16 i + 46 of the input, so a change in the top-left 8x8 pixels reaches patches 0..2 only."""
    d = DCGANDiscriminator(in_channels=3, base_channels=8, num_layers=4).eval()
    x = torch.rand(1, 3, 96, 96)
    y = x.clone()
    y[..., :8, :8] = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        changed = d.patch_logits(x)[0, 0] != d.patch_logits(y)[0, 0]
    expected = torch.zeros(6, 6, dtype=torch.bool)
    expected[:3, :3] = True
    assert torch.equal(changed, expected)


def test_eval_logits_do_not_depend_on_the_rest_of_the_batch():
    d = DCGANDiscriminator(in_channels=3, base_channels=8, num_layers=3)
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        d.train()
        d(x * 0.5)  # one batch of running statistics
        in_batch_train = d(x)
        alone_train = torch.cat([d(x[i : i + 1]) for i in range(4)])
        d.eval()
        in_batch = d(x)
        alone = torch.cat([d(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(in_batch, alone)
    # in training mode BatchNorm normalises with the batch's statistics, so the check above can tell
    assert not torch.allclose(in_batch_train, alone_train, atol=1e-3)


def test_bad_inputs_raise():
    d = DCGANDiscriminator(in_channels=3, base_channels=8, num_layers=4)
    with pytest.raises(ValueError, match="sides >= 16"):
        d(torch.rand(1, 3, 8, 64))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        d(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match="num_layers"):
        DCGANDiscriminator(num_layers=0)
