"""Projection onto the quantization bins (posterior-sampling paper, eq. 11)."""

import pytest
import torch

from jpegrestore import jpeg
from jpeg_helpers import photo, to_tensor


def _restoration(x, coeffs, seed=0):
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(x.shape, generator=g) * 0.03
    return (jpeg.decode(coeffs) + noise).clamp(0, 1)


@pytest.mark.parametrize("subsampling", ["4:2:0", "4:4:4", "4:2:2"])
@pytest.mark.parametrize("quality", [10, 50, 75])
def test_projection_re_encodes_to_the_coefficients(subsampling, quality):
    x = to_tensor(photo("astronaut", 69, 85, 150, 180))
    c = jpeg.encode(x, quality, subsampling=subsampling)
    y = _restoration(x, c)
    assert not bool(jpeg.is_consistent(y, c).all())
    p = jpeg.project(y, c)
    again = jpeg.encode(p, tables=c.qt, subsampling=subsampling)
    for a, b in zip(again.components(), c.components()):
        assert torch.equal(a, b)
    # It moves the image only a little.
    assert (p - y).abs().mean() < (y - x).abs().mean()


def test_grayscale_projection_and_high_quality():
    g = to_tensor(photo("camera", 64, 72, 200, 200))
    c = jpeg.encode(g, 40)
    assert bool(jpeg.is_consistent(jpeg.project(_restoration(g, c), c), c).all())
    x = to_tensor(photo("coffee", 64, 72, 100, 100))
    c = jpeg.encode(x, 90)
    again = jpeg.encode(jpeg.project(_restoration(x, c), c), tables=c.qt)
    match = sum(int((a == b).sum()) for a, b in zip(again.components(), c.components()))
    total = sum(a.numel() for a in c.components())
    assert match / total >= 0.995


def test_consistent_input_is_unchanged_and_gradients_flow():
    x = to_tensor(photo("chelsea", 48, 48, 100, 200))
    c = jpeg.encode(x, 20)
    decoded = jpeg.decode(c)
    if bool(jpeg.is_consistent(decoded, c).all()):
        torch.testing.assert_close(jpeg.project(decoded, c), decoded, atol=2e-3, rtol=0)
    y = _restoration(x, c).requires_grad_(True)
    w = torch.randn(y.shape)
    (g,) = torch.autograd.grad((jpeg.project(y, c) * w).sum(), y)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_mismatched_shapes_are_errors():
    c = jpeg.encode(torch.rand(1, 3, 32, 32), 50)
    with pytest.raises(ValueError, match="do not match"):
        jpeg.project(torch.rand(1, 3, 32, 40), c)
    with pytest.raises(ValueError, match="margin"):
        jpeg.project(torch.rand(1, 3, 32, 32), c, margin=0.5)
