"""Projection onto the quantization bins (posterior-sampling paper, eq. 11)."""

import pytest
import torch

from jpegrestore import jpeg
from jpegrestore.metrics import quantize_8bit
from jpeg_helpers import photo, pillow_jpeg, to_tensor, to_uint8


def _restoration(x, coeffs, seed=0, sigma=0.03):
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(x.shape, generator=g) * sigma
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


#: Odd-sized crops of photos: (name, height, width, top, left, subsampling); camera is grayscale.
ODD_CROPS = [("astronaut", 69, 85, 150, 180, "4:2:0"), ("chelsea", 45, 59, 50, 120, "4:2:2"),
             ("camera", 37, 51, 200, 200, None)]


def _file_coefficients(tmp_path, img, quality, subsampling):
    """Coefficients of the JPEG file Pillow (libjpeg) writes for a uint8 image."""
    path = tmp_path / "photo.jpg"
    path.write_bytes(pillow_jpeg(img, quality, subsampling or "4:4:4"))
    return jpeg.read(path)


@pytest.mark.parametrize("quality", [5, 10, 30, 50])
def test_projection_is_the_identity_on_consistent_images(quality, tmp_path):
    """Eq. 11 leaves a coefficient inside its bin alone: an image that re-encodes to the file comes back bit for
    bit (the original photo, and a projected restoration saved as 8-bit)."""
    for name, h, w, top, left, subsampling in ODD_CROPS:
        img = photo(name, h, w, top, left)
        c = _file_coefficients(tmp_path, img, quality, subsampling)
        x = to_tensor(img)
        assert bool(jpeg.is_consistent(x, c).all()), name
        assert torch.equal(jpeg.project(x, c), x), name
        saved = quantize_8bit(jpeg.project(_restoration(x, c, sigma=0.06), c))
        assert bool(jpeg.is_consistent(saved, c).all()), name
        assert torch.equal(jpeg.project(saved, c), saved), name


@pytest.mark.parametrize("quality", [5, 10, 30, 50])
def test_projection_re_encodes_exactly_after_8bit_rounding(quality, tmp_path):
    """libjpeg (Pillow) re-encoding the 8-bit projected image writes the file's coefficients exactly; a batch
    mixing a consistent and an inconsistent image projects each on its own."""
    for name, h, w, top, left, subsampling in ODD_CROPS:
        img = photo(name, h, w, top, left)
        c = _file_coefficients(tmp_path, img, quality, subsampling)
        x = to_tensor(img)
        y = _restoration(x, c, sigma=0.06)
        batch = jpeg.project(torch.cat([y, x]), jpeg.Coefficients.cat([c, c]))
        assert torch.equal(batch[1:], x), name
        saved = to_uint8(batch[:1])
        again = _file_coefficients(tmp_path, saved, quality, subsampling)
        for a, b in zip(again.components(), c.components()):
            assert torch.equal(a, b), name
        # Nearer the restoration than the original is (the bins hold the original too).
        assert (batch[:1] - y).abs().mean() < (x - y).abs().mean(), name


def test_projection_gradients_flow():
    x = to_tensor(photo("chelsea", 48, 48, 100, 200))
    c = jpeg.encode(x, 20)
    y = _restoration(x, c).requires_grad_(True)
    w = torch.randn(y.shape)
    (g,) = torch.autograd.grad((jpeg.project(y, c) * w).sum(), y)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    consistent = x.clone().requires_grad_(True)  # the identity: gradient passes unchanged
    (g,) = torch.autograd.grad((jpeg.project(consistent, c) * w).sum(), consistent)
    assert torch.equal(g, w)


def test_mismatched_shapes_are_errors():
    c = jpeg.encode(torch.rand(1, 3, 32, 32), 50)
    with pytest.raises(ValueError, match="do not match"):
        jpeg.project(torch.rand(1, 3, 32, 40), c)
    with pytest.raises(ValueError, match="margin"):
        jpeg.project(torch.rand(1, 3, 32, 32), c, margin=0.5)
