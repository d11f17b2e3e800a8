"""The operator against Pillow / libjpeg-turbo, its gradients and its errors."""

import io

import jpeglib
import numpy as np
import pytest
import torch

from jpegrestore import jpeg
from jpeg_helpers import photo, pillow_decode, pillow_jpeg, psnr_uint8, to_tensor, to_uint8

QUALITIES = [1, 5, 10, 20, 30, 50, 75, 90, 95, 100]
# Natural photos whose sizes are not multiples of 16.
PHOTOS = [("astronaut", 203, 301, 40, 60), ("coffee", 157, 250, 100, 120), ("chelsea", 121, 173, 60, 140)]


@pytest.fixture(scope="module")
def photos():
    return [photo(*p) for p in PHOTOS]


@pytest.mark.parametrize("subsampling", ["4:2:0", "4:4:4"])
def test_compress_matches_pillow(photos, subsampling):
    worst_psnr, identical, total = np.inf, 0, 0
    for img in photos:
        x = to_tensor(img)
        for q in QUALITIES:
            ref = pillow_decode(pillow_jpeg(img, q, subsampling))
            ste = to_uint8(jpeg.compress(x, q, subsampling=subsampling))
            worst_psnr = min(worst_psnr, psnr_uint8(ste, ref))
            exact = to_uint8(jpeg.compress(x, q, subsampling=subsampling, rounding="exact"))
            identical += int((exact == ref).sum())
            total += ref.size
    assert worst_psnr >= 50.0
    assert identical == total  # the exact path is libjpeg-turbo, pixel for pixel


@pytest.mark.parametrize("subsampling", ["4:2:2", "4:2:0"])
def test_exact_4_2_2_and_grayscale(subsampling):
    for img in (photo("rocket", 99, 133, 200, 300), photo("camera", 77, 91, 100, 100)):
        for q in (7, 60, 97):
            ref = pillow_decode(pillow_jpeg(img, q, subsampling))
            out = to_uint8(jpeg.compress(to_tensor(img), q, subsampling=subsampling, rounding="exact"))
            np.testing.assert_array_equal(out, ref, err_msg=f"quality {q}")


def test_encode_gives_the_coefficients_libjpeg_writes(photos, tmp_path):
    same = total = 0
    for img in photos:
        for q in (5, 30, 90):
            for sub in ("4:2:0", "4:4:4"):
                path = tmp_path / "c.jpg"
                path.write_bytes(pillow_jpeg(img, q, sub))
                ref = jpeglib.read_dct(str(path))
                ours = jpeg.encode(to_tensor(img), q, subsampling=sub)
                for mine, theirs in ((ours.y, ref.Y), (ours.cb, ref.Cb), (ours.cr, ref.Cr)):
                    h, w = theirs.shape[:2]  # jpeglib omits libjpeg's dummy blocks
                    same += int((mine[0, :h, :w].numpy() == theirs).sum())
                    total += theirs.size
    assert same == total


def test_batch_with_a_quality_per_image_equals_separate_calls():
    x = torch.cat([to_tensor(photo("astronaut", 40, 56, 100 * i, 100)) for i in range(3)])
    q = torch.tensor([5, 50, 95])
    batched = jpeg.compress(x, q)
    for i in range(3):
        assert torch.equal(batched[i:i + 1], jpeg.compress(x[i:i + 1], int(q[i])))
    c = jpeg.encode(x, q)
    assert c.qt.shape == (3, 3, 8, 8) and torch.equal(c.qt[:, 0], jpeg.quant_tables(q)[:, 0])


def test_tables_in_place_of_quality_and_coefficient_layout():
    x = to_tensor(photo("coffee", 50, 70))
    custom = torch.randint(1, 60, (1, 2, 8, 8)).float()
    c = jpeg.encode(x, tables=custom)
    assert c.y.shape == (1, 8, 10, 8, 8) and c.cb.shape == (1, 4, 5, 8, 8)  # whole 16x16 MCUs
    assert c.size == (50, 70) and c.subsampling == "4:2:0"
    assert torch.equal(c.qt[:, 1], custom[:, 1]) and torch.equal(c.qt[:, 2], custom[:, 1])
    assert torch.equal(c.y, c.y.round())
    gray = jpeg.encode(x[:, :1], 50)
    assert gray.cb is None and gray.qt.shape == (1, 1, 8, 8)
    assert jpeg.decode(gray).shape == (1, 1, 50, 70)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_dtypes(dtype):
    x = to_tensor(photo("astronaut", 33, 47))
    ref = jpeg.compress(x, 40)
    out = jpeg.compress(x.to(dtype), 40)
    # Half images are computed and answered in float32, which holds every 8-bit level exactly.
    assert out.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    if dtype == torch.bfloat16:  # bf16 rounds the input itself: compare with the same rounded values
        ref = jpeg.compress(x.to(dtype).float(), 40)
    assert torch.equal(out.float(), ref)


@pytest.mark.parametrize("rounding", ["ste", "cubic"])
def test_gradients_are_finite_and_nonzero(rounding):
    x = to_tensor(photo("chelsea", 37, 45, 100, 100)).requires_grad_(True)
    y = jpeg.compress(x, 30, rounding=rounding)
    (g,) = torch.autograd.grad((y * torch.linspace(0, 1, y.numel()).view_as(y)).sum(), x)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    c = jpeg.encode(x, 30, rounding=rounding)
    (g,) = torch.autograd.grad(c.y.sum() + c.cb.pow(2).sum(), x)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_ste_round_trip_gradient_equals_the_composed_one():
    x = to_tensor(photo("coffee", 29, 38, 50, 50)).double().requires_grad_(True)
    w = torch.randn(1, 3, 29, 38, dtype=torch.double)
    (fused,) = torch.autograd.grad((jpeg.compress(x, 20) * w).sum(), x)
    (composed,) = torch.autograd.grad((jpeg.decode(jpeg.encode(x, 20)) * w).sum(), x)
    torch.testing.assert_close(fused, composed)
    # For 4:4:4 the straight-through linearization of a round trip is the identity.
    (g,) = torch.autograd.grad((jpeg.compress(x, 20, subsampling="4:4:4") * w).sum(), x)
    torch.testing.assert_close(g, w)


def test_cubic_is_close_to_exact_and_exact_carries_no_gradient():
    x = to_tensor(photo("astronaut", 64, 64, 200, 200))
    cubic = to_uint8(jpeg.compress(x, 50, rounding="cubic"))
    exact = to_uint8(jpeg.compress(x, 50, rounding="exact"))
    assert psnr_uint8(cubic, exact) > 40
    assert not jpeg.compress(x.requires_grad_(True), 50, rounding="exact").requires_grad


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: torch.rand(3, 8, 8), r"\[B, 3 or 1, H, W\]"),
        (lambda: torch.rand(1, 2, 8, 8), r"\[B, 3 or 1, H, W\]"),
        (lambda: torch.rand(1, 3, 8, 8) * 255, r"\[0, 1\]"),
        (lambda: torch.full((1, 3, 8, 8), float("nan")), r"\[0, 1\]"),
        (lambda: torch.randint(0, 255, (1, 3, 8, 8)), "float"),
    ],
)
def test_bad_images_are_clear_errors(make, match):
    with pytest.raises(ValueError, match=match):
        jpeg.compress(make(), 50)


def test_bad_arguments_are_clear_errors():
    x = torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError, match="quality"):
        jpeg.encode(x, 0)
    with pytest.raises(ValueError, match="quality"):
        jpeg.encode(x, 101)
    with pytest.raises(ValueError, match="subsampling"):
        jpeg.encode(x, 50, subsampling="4:1:1")
    with pytest.raises(ValueError, match="rounding"):
        jpeg.encode(x, 50, rounding="floor")
    with pytest.raises(ValueError, match="exactly one"):
        jpeg.encode(x)
    with pytest.raises(ValueError, match="batch of 2"):
        jpeg.encode(x, [10, 20, 30])
    c = jpeg.encode(x, 50)
    with pytest.raises(ValueError, match="does not match"):
        jpeg.decode(jpeg.Coefficients(c.y[:, :1], c.cb, c.cr, c.qt, c.subsampling, c.size))


def test_coefficients_batch_helpers():
    x = torch.rand(3, 3, 20, 20)
    c = jpeg.encode(x, [10, 20, 30])
    parts = jpeg.Coefficients.cat([c[0], c[1:]])
    assert torch.equal(parts.y, c.y) and torch.equal(parts.qt, c.qt) and len(parts) == 3
    with pytest.raises(ValueError, match="differ"):
        jpeg.Coefficients.cat([c[0], jpeg.encode(torch.rand(1, 3, 24, 20), 10)])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    x = to_tensor(photo("astronaut", 61, 75))
    for r in ("ste", "exact"):
        assert torch.equal(jpeg.compress(x.cuda(), 30, rounding=r).cpu(), jpeg.compress(x, 30, rounding=r))


def test_islow_matrices_equal_libjpeg_butterflies():
    from jpegrestore.jpeg import dct

    g = torch.Generator().manual_seed(0)
    samples = torch.randint(-128, 128, (4000, 8, 8), generator=g, dtype=torch.int32)
    assert torch.equal(dct.fdct_islow(samples), dct.fdct_islow_reference(samples))
    weights = torch.tensor([[300.0 / (1 + i + j) for j in range(8)] for i in range(8)])
    coeffs = (torch.randn(4000, 8, 8, generator=g) * weights).round().int()
    assert torch.equal(dct.idct_islow(coeffs), dct.idct_islow_reference(coeffs))
