"""The float JPEG pair (DDRM-JPEG's measurement operator): the exact identity Encode(Decode(y)) == y on real
files of odd sizes in every layout, and closeness to libjpeg's own codec."""

import numpy as np
import pytest
import torch

from jpegrestore import jpeg
from jpeg_helpers import (photo, pillow_decode, pillow_jpeg, psnr_uint8, reference_float_decode,
                          reference_float_encode, to_tensor, to_uint8)

LAYOUTS = ["4:2:0", "4:2:2", "4:4:4", "gray"]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _file(tmp_path, layout: str, height: int, width: int, quality: int) -> tuple[np.ndarray, "jpeg.Coefficients"]:
    """A real libjpeg file (Pillow) of a photo crop, read back with its own tables and coefficients."""
    if layout == "gray":
        img = photo("camera", height, width, 100, 150)
        data = pillow_jpeg(img, quality)
    else:
        img = photo("astronaut", height, width, 150, 200)
        data = pillow_jpeg(img, quality, layout)
    path = tmp_path / "in.jpg"
    path.write_bytes(data)
    return img, jpeg.read(path)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("size", [(97, 130), (64, 48), (9, 23)])
def test_encode_of_decode_is_identity_on_real_files(tmp_path, layout, size):
    _, y = _file(tmp_path, layout, *size, quality=10)
    canvas = jpeg.float_decode(y)
    assert canvas.shape[-2:] == jpeg.mcu_canvas(y.size, y.subsampling, y.num_components)
    again = jpeg.float_encode(canvas, tables=y.qt, subsampling=y.subsampling, size=y.size)
    assert again.size == y.size and again.subsampling == y.subsampling
    for a, b in zip(again.components(), y.components()):
        assert a.shape == b.shape
        assert torch.equal(a, b.float())


@pytest.mark.parametrize("layout", ["4:2:0", "4:2:2"])
def test_cropping_the_canvas_breaks_the_identity_for_odd_sizes(tmp_path, layout):
    """Why the sampler works on the MCU canvas: re-padding the cropped decode by replication is not the
    canvas the coefficients describe (4:2:0 at 97x130 pads 15 rows and 14 columns)."""
    _, y = _file(tmp_path, layout, 97, 130, quality=10)
    cropped = jpeg.float_decode(y, crop=True)
    assert cropped.shape[-2:] == (97, 130)
    again = jpeg.float_encode(cropped, tables=y.qt, subsampling=y.subsampling)
    assert not all(torch.equal(a, b.float()) for a, b in zip(again.components(), y.components()))


def test_identity_on_random_coefficients_float64_and_batches():
    """Coefficients that come from no image at all (large, random, per-image tables) still round-trip."""
    g = torch.Generator().manual_seed(0)
    qt = jpeg.quant_tables(torch.tensor([5, 50, 95]))[:, [0, 1, 1]].double()
    y = torch.randint(-60, 61, (3, 8, 12, 8, 8), generator=g).double()
    c = torch.randint(-60, 61, (3, 4, 6, 8, 8), generator=g).double()
    coeffs = jpeg.Coefficients(y, c, c.flip(0), qt, "4:2:0", (61, 83))
    canvas = jpeg.float_decode(coeffs)
    assert canvas.dtype == torch.float64 and canvas.shape == (3, 3, 64, 96)
    assert canvas.min() < -1 and canvas.max() > 2  # far outside [0, 1]: nothing is clamped
    again = jpeg.float_encode(canvas, tables=qt, subsampling="4:2:0", size=(61, 83))
    for a, b in zip(again.components(), coeffs.components()):
        assert torch.equal(a, b)


def test_decode_of_encode_is_the_orthogonal_projection_for_444():
    """With 4:4:4 and no rounding, Decode(Encode(x)) == x (orthonormal DCT, exact colour inverse)."""
    x = torch.rand(2, 3, 24, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    c = jpeg.float_encode(x, quality=30, subsampling="4:4:4", quantize=False)
    assert torch.allclose(jpeg.float_decode(c), x, atol=1e-9)


def test_box_average_and_nearest_upsampling_by_hand():
    """A flat-chroma check computed by hand: constant colour -> DC only, decode returns the colour."""
    rgb = torch.tensor([0.8, 0.4, 0.2]).view(1, 3, 1, 1).expand(1, 3, 16, 16).contiguous()
    c = jpeg.float_encode(rgb, quality=100, subsampling="4:2:0", quantize=False)  # tables of ones
    y_level = 255 * (0.299 * 0.8 + 0.587 * 0.4 + 0.114 * 0.2)
    assert torch.allclose(c.y[..., 0, 0], torch.full((1, 2, 2), 8 * (y_level - 128)), atol=1e-3)
    assert torch.allclose(c.y[..., 1:, :].abs().amax(), torch.tensor(0.0), atol=1e-3)
    assert c.cb.shape == (1, 1, 1, 8, 8)
    assert torch.allclose(jpeg.float_decode(c), rgb, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_chroma_is_the_2x2_average_by_hand_on_a_non_flat_image(device):
    """Red only at the top-left pixel of every 2x2 group (green = blue = 0), tables of ones, no rounding.
    Averaging each 2x2 group gives R = 255/4 everywhere, so chroma is flat and by T.871 its DC is
    8 (Cb - 128) = -8 * 0.168736 * 63.75 and 8 (Cr - 128) = 8 * 0.5 * 63.75 = 255, with no AC; keeping the
    top-left pixel instead would give four times these. Luma keeps every pixel: its blocks are not flat."""
    rgb = torch.zeros(1, 3, 16, 16, dtype=torch.float64, device=device)
    rgb[:, 0, ::2, ::2] = 1.0
    c = jpeg.float_encode(rgb, quality=100, subsampling="4:2:0", quantize=False).to(torch.device("cpu"))
    assert c.cb.shape == c.cr.shape == (1, 1, 1, 8, 8)
    assert c.cb[0, 0, 0, 0, 0].item() == pytest.approx(-8 * 0.168736 * 63.75, abs=1e-3)
    assert c.cr[0, 0, 0, 0, 0].item() == pytest.approx(255.0, abs=1e-3)
    assert c.cb.flatten()[1:].abs().max() < 1e-6 and c.cr.flatten()[1:].abs().max() < 1e-6  # no chroma AC
    assert c.y[..., 0, 0].flatten().tolist() == pytest.approx([8 * (0.299 * 63.75 - 128)] * 4, abs=1e-3)
    assert c.y[..., 1:, 1:].abs().max() > 10  # the luma of the pattern is far from flat


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_encode_and_decode_equal_a_second_implementation(layout, device):
    """Against numpy/scipy written from T.871 (tests/jpeg_helpers.py), on random non-flat images with a different
    table per image: the unquantized coefficients, and the decode of random coefficients."""
    g = torch.Generator().manual_seed(7)
    channels, subsampling = (1, "4:4:4") if layout == "gray" else (3, layout)
    x = torch.rand(2, channels, 16, 32, generator=g, dtype=torch.float64)
    quality = torch.tensor([10, 75], device=device)
    c = jpeg.float_encode(x.to(device), quality=quality, subsampling=subsampling, quantize=False)
    ref = reference_float_encode(x, c.qt, subsampling)
    for ours, theirs in zip(c.components(), ref):
        assert ours.shape == theirs.shape
        assert np.allclose(ours.cpu().numpy(), theirs, atol=1e-3)
    rounded = jpeg.float_encode(x, quality=quality.cpu(), subsampling=subsampling)
    noisy = [a + torch.randint(-3, 4, a.shape, generator=g) for a in rounded.components()]
    coeffs = jpeg.Coefficients(noisy[0], *(noisy[1:] or [None, None]), rounded.qt, subsampling, (16, 32))
    decoded = jpeg.float_decode(coeffs.to(device)).cpu().numpy()
    assert np.allclose(decoded, reference_float_decode(noisy, c.qt, subsampling), atol=1e-5)


@pytest.mark.parametrize("layout, floor", [("4:2:0", 42.0), ("4:4:4", 50.0), ("gray", 60.0)])
def test_close_to_libjpeg_but_not_equal(tmp_path, layout, floor):
    """Float decode of the file vs Pillow/libjpeg's decode: close (nearest vs fancy upsampling, float vs islow)
    but not identical; and float_encode predicts most coefficients libjpeg wrote."""
    img, y = _file(tmp_path, layout, 97, 130, quality=50)
    ref = pillow_decode((tmp_path / "in.jpg").read_bytes())
    ours = to_uint8(jpeg.float_decode(y, crop=True).clamp(0, 1))
    score = psnr_uint8(ours, ref)
    assert floor <= score < 99
    assert not np.array_equal(ours, ref)
    predicted = jpeg.float_encode(to_tensor(img), tables=y.qt, subsampling=y.subsampling)
    same = [float((a == b.float()).float().mean()) for a, b in zip(predicted.components(), y.components())]
    assert min(same) > 0.99


def test_errors():
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match="larger than the MCU canvas"):
        jpeg.float_encode(x, quality=10, subsampling="4:4:4", size=(8, 8))
    with pytest.raises(ValueError, match="exactly one of quality or tables"):
        jpeg.float_encode(x)
    with pytest.raises(ValueError, match="float tensor"):
        jpeg.float_encode((x * 255).byte(), quality=10)
    with pytest.raises(ValueError, match="subsampling"):
        jpeg.float_encode(x, quality=10, subsampling="4:1:1")
