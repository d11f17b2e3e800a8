"""Metrics against independent references: scikit-image, NumPy re-implementations, Pillow, hand values."""

from __future__ import annotations

import io
import math
import socket
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from jpegrestore import metrics, weights
from jpegrestore.metrics import (
    MetricSuite, bits_per_pixel, jpeg_bytes, psnr, psnrb, rgb_to_y, sample_std, ssim, y_convention_name,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# ----------------------------------------------------------------------------------------- helpers


def natural_like(batch: int, channels: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Smooth gradients and waves plus a little noise, float [B, C, H, W] in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    yy = torch.linspace(0, 1, height).view(1, 1, -1, 1)
    xx = torch.linspace(0, 1, width).view(1, 1, 1, -1)
    phase = torch.rand(batch, channels, 1, 1, generator=g) * 6
    freq = 2 + torch.rand(batch, channels, 1, 1, generator=g) * 6
    base = 0.5 + 0.3 * torch.sin(freq * xx * 3 + phase) * torch.cos(freq * yy * 2 - phase) + 0.1 * (xx - yy)
    return (base + 0.03 * torch.randn(batch, channels, height, width, generator=g)).clamp(0, 1)


def degrade(images: torch.Tensor, sigma: float = 0.05, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (images + sigma * torch.randn(images.shape, generator=g)).clamp(0, 1)


def hwc(image: torch.Tensor) -> np.ndarray:
    """[C, H, W] tensor -> float64 [H, W, C] array."""
    return image.permute(1, 2, 0).double().numpy()


def numpy_y(image_hwc: np.ndarray, convention: str) -> np.ndarray:
    """Luma by an independent route: NumPy weights for JFIF, scikit-image's rgb2ycbcr for BT.601."""
    if convention == "jfif":
        return image_hwc @ np.array([0.299, 0.587, 0.114])
    return rgb2ycbcr(image_hwc)[..., 0] / 255.0


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Empty $JPEGRESTORE_WEIGHTS, fake HOME and TORCH_HOME: no pretrained file can be found."""
    env_dir = tmp_path / "weights"
    env_dir.mkdir()
    for var in ("XDG_CACHE_HOME", "HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv(weights.ENV_VAR, str(env_dir))
    return env_dir


@pytest.fixture
def no_network(monkeypatch):
    """Any download attempt fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:1]}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def save_random_features(path: Path, arch: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A randomly initialised torchvision ``features`` state dict saved like a torchvision checkpoint."""
    from torchvision.models import alexnet
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(seed)
    features = alexnet(weights=None).features if arch == "alexnet" else make_layers(cfgs["D"])
    state = {f"features.{k}": v.clone() for k, v in features.state_dict().items()}
    torch.save(state, path)
    return state


# ----------------------------------------------------------------------------------------- Y conventions


def test_rgb_to_y_hand_values():
    colours = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1], [0, 0, 0]]).T.reshape(1, 3, 1, 5)
    jfif = rgb_to_y(colours, "jfif").flatten()
    assert torch.allclose(jfif, torch.tensor([0.299, 0.587, 0.114, 1.0, 0.0]), atol=1e-6)
    bt601 = rgb_to_y(colours, "bt601").flatten() * 255
    assert torch.allclose(bt601, torch.tensor([16 + 65.481, 16 + 128.553, 16 + 24.966, 235.0, 16.0]), atol=1e-4)


def test_rgb_to_y_bt601_matches_skimage():
    images = natural_like(2, 3, 9, 11)
    ours = rgb_to_y(images, "bt601")[:, 0].double().numpy()
    reference = np.stack([numpy_y(hwc(im), "bt601") for im in images])
    np.testing.assert_allclose(ours, reference, atol=1e-6)


def test_convention_names_and_errors():
    assert y_convention_name() == "Y (JFIF full range)"
    assert "BT.601" in y_convention_name("bt601") and "studio" in y_convention_name("bt601")
    assert metrics.metric_label("psnr_y", "bt601") == "PSNR [Y (BT.601 studio range, BasicSR)]"
    assert metrics.metric_label("ssim") == "SSIM [RGB]"
    with pytest.raises(ValueError, match="y_convention"):
        y_convention_name("ycocg")


# ----------------------------------------------------------------------------------------- PSNR


@pytest.mark.parametrize("crop", [0, 3])
def test_psnr_rgb_matches_skimage(crop):
    target = natural_like(3, 3, 24, 20)
    pred = degrade(target)
    ours = psnr(pred, target, crop_border=crop)
    c = slice(crop, -crop if crop else None)
    for i in range(3):
        expected = peak_signal_noise_ratio(hwc(target[i])[c, c], hwc(pred[i])[c, c], data_range=1.0)
        assert ours[i].item() == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("convention", ["jfif", "bt601"])
def test_psnr_y_matches_skimage(convention):
    target = natural_like(2, 3, 16, 24)
    pred = degrade(target, 0.08)
    ours = psnr(pred, target, y_channel=True, y_convention=convention, crop_border=2)
    for i in range(2):
        ty = numpy_y(hwc(target[i]), convention)[2:-2, 2:-2]
        py = numpy_y(hwc(pred[i]), convention)[2:-2, 2:-2]
        assert ours[i].item() == pytest.approx(peak_signal_noise_ratio(ty, py, data_range=1.0), abs=1e-4)


def test_psnr_hand_value_and_identical_images():
    target = torch.zeros(1, 1, 4, 4)
    pred = torch.full((1, 1, 4, 4), 0.1)  # MSE = 0.01 -> 20 dB
    assert psnr(pred, target).item() == pytest.approx(20.0, abs=1e-4)
    assert math.isinf(psnr(target, target).item())


def test_bad_inputs_raise_value_error():
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match="same shape"):
        psnr(x, torch.rand(1, 3, 16, 15))
    with pytest.raises(ValueError, match="crop_border"):
        ssim(x, x, crop_border=8)
    with pytest.raises(ValueError, match="float"):
        psnr((x * 255).byte(), (x * 255).byte())
    with pytest.raises(ValueError, match="y_convention"):
        psnrb(x, x, y_channel=True, y_convention="bt709")
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8))


def test_bf16_inputs_are_computed_in_float32():
    """bf16 images give the float64 references on the very same (bf16-representable) values."""
    target = natural_like(2, 3, 24, 24).bfloat16()
    pred = degrade(target.float()).bfloat16()
    values = {fn.__name__: fn(pred, target) for fn in (psnr, ssim, psnrb)}
    assert all(v.dtype == torch.float32 for v in values.values())
    for i in range(2):
        t, p = hwc(target[i]), hwc(pred[i])  # exact: every bf16 value is a float64 value
        assert values["psnr"][i].item() == pytest.approx(peak_signal_noise_ratio(t, p, data_range=1.0), abs=1e-4)
        expected_ssim = structural_similarity(t, p, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                              data_range=1.0, channel_axis=2)
        assert values["ssim"][i].item() == pytest.approx(expected_ssim, abs=1e-4)
        expected_psnrb = psnrb_reference(pred[i].double().numpy(), target[i].double().numpy())
        assert values["psnrb"][i].item() == pytest.approx(expected_psnrb, abs=1e-3)


def test_metrics_under_bf16_autocast_equal_float32():
    """Training validates under autocast; the metrics must not drop to bf16 there (1e-5 relative)."""
    target = natural_like(2, 3, 32, 32, seed=5)
    pred = blocky(degrade(target, 0.05), 0.03).clamp(0, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = [fn(pred, target) for fn in (psnr, ssim, psnrb)]
    for fn, value in zip((psnr, ssim, psnrb), autocast):
        torch.testing.assert_close(value, fn(pred, target), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------- SSIM


def test_ssim_rgb_matches_skimage():
    target = natural_like(2, 3, 32, 40)
    pred = degrade(target, 0.1)
    ours = ssim(pred, target)
    for i in range(2):
        expected = structural_similarity(
            hwc(target[i]), hwc(pred[i]), gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
            data_range=1.0, channel_axis=2,
        )
        assert ours[i].item() == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("convention", ["jfif", "bt601"])
def test_ssim_y_with_crop_matches_skimage(convention):
    target = natural_like(2, 3, 30, 34, seed=3)
    pred = degrade(target, 0.07, seed=4)
    ours = ssim(pred, target, y_channel=True, y_convention=convention, crop_border=4)
    for i in range(2):
        ty = numpy_y(hwc(target[i]), convention)[4:-4, 4:-4]
        py = numpy_y(hwc(pred[i]), convention)[4:-4, 4:-4]
        expected = structural_similarity(
            ty, py, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0
        )
        assert ours[i].item() == pytest.approx(expected, abs=1e-4)


def test_ssim_of_identical_images_is_one():
    x = natural_like(2, 1, 16, 16)
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-6)


# ----------------------------------------------------------------------------------------- PSNR-B


def psnrb_reference(pred: np.ndarray, target: np.ndarray, offset: int = 0) -> float:
    """Yim & Bovik's definition written out pair by pair; arrays [C, H, W] float64, peak 1."""
    channels, height, width = pred.shape
    total = 0.0
    for c in range(channels):
        img = pred[c]
        boundary, inner = [], []
        for j in range(width - 1):  # horizontal neighbours (column j, column j + 1)
            squared = list((img[:, j] - img[:, j + 1]) ** 2)
            (boundary if (j + 1 + offset) % 8 == 0 else inner).extend(squared)
        for i in range(height - 1):  # vertical neighbours (row i, row i + 1)
            squared = list((img[i, :] - img[i + 1, :]) ** 2)
            (boundary if (i + 1 + offset) % 8 == 0 else inner).extend(squared)
        d_b, d_bc = np.mean(boundary), np.mean(inner)
        eta = math.log2(8) / math.log2(min(height, width)) if d_b > d_bc else 0.0
        total += np.mean((pred[c] - target[c]) ** 2) + eta * (d_b - d_bc)
    return 10 * math.log10(1.0 / (total / channels))


def blocky(images: torch.Tensor, strength: float = 0.06, seed: int = 5, shift: int = 0) -> torch.Tensor:
    """Add a random constant per 8x8 block (grid shifted by ``shift`` pixels)."""
    g = torch.Generator().manual_seed(seed)
    b, c, h, w = images.shape
    offsets = strength * torch.randn(b, c, h // 8 + 2, w // 8 + 2, generator=g)
    field = offsets.repeat_interleave(8, -2).repeat_interleave(8, -1)[..., :h, :w]
    return images + field.roll((shift, shift), dims=(-2, -1))


def test_psnrb_rgb_matches_numpy_definition():
    target = natural_like(2, 3, 32, 40)
    pred = blocky(target)
    ours = psnrb(pred, target)
    for i in range(2):
        expected = psnrb_reference(pred[i].double().numpy(), target[i].double().numpy())
        assert ours[i].item() == pytest.approx(expected, abs=1e-3)
    assert (ours < psnr(pred, target)).all()


@pytest.mark.parametrize("convention", ["jfif", "bt601"])
def test_psnrb_y_with_crop_matches_numpy_definition(convention):
    target = natural_like(2, 3, 36, 29, seed=7)
    pred = blocky(target, seed=8).clamp(0, 1)
    ours = psnrb(pred, target, y_channel=True, y_convention=convention, crop_border=3)
    for i in range(2):
        py = numpy_y(hwc(pred[i]), convention)[None, 3:-3, 3:-3]
        ty = numpy_y(hwc(target[i]), convention)[None, 3:-3, 3:-3]
        assert ours[i].item() == pytest.approx(psnrb_reference(py, ty, offset=3), abs=1e-3)


def test_psnrb_penalises_blocking_at_equal_mse():
    target = natural_like(1, 1, 64, 64, seed=2)
    on_grid = blocky(target, shift=0)
    off_grid = blocky(target, shift=4)  # same error values, edges inside the 8x8 blocks
    assert psnr(on_grid, target).item() == pytest.approx(psnr(off_grid, target).item(), abs=1e-4)
    assert psnrb(on_grid, target).item() < psnrb(off_grid, target).item() - 1.0
    # Without blocking, PSNR-B equals PSNR (BEF is 0 when boundaries are no rougher than the rest).
    assert psnrb(off_grid, target).item() == pytest.approx(psnr(off_grid, target).item(), abs=1e-4)


def test_psnrb_bef_is_per_image_not_summed_over_batch():
    target = natural_like(2, 1, 32, 32)
    pred = torch.stack([blocky(target[:1])[0], target[1]])  # only the first image is blocky
    batch = psnrb(pred, target)
    singles = torch.cat([psnrb(pred[i : i + 1], target[i : i + 1]) for i in range(2)])
    assert torch.allclose(batch, singles)
    for i in range(2):
        expected = psnrb_reference(pred[i].double().numpy(), target[i].double().numpy())
        assert batch[i].item() == pytest.approx(expected, abs=1e-3)


# ----------------------------------------------------------------------------------------- batch independence


def test_batch_of_one_and_of_eight_give_the_same_numbers():
    target = natural_like(8, 3, 24, 24, seed=11)
    pred = blocky(degrade(target, 0.03), 0.02).clamp(0, 1)
    for fn in (psnr, ssim, psnrb):
        for y_channel in (False, True):
            together = fn(pred, target, y_channel=y_channel).mean()
            alone = torch.cat([fn(pred[i : i + 1], target[i : i + 1], y_channel=y_channel) for i in range(8)]).mean()
            assert together.item() == pytest.approx(alone.item(), abs=1e-5)


# ----------------------------------------------------------------------------------------- real JPEG artefacts


@pytest.fixture(scope="module")
def real_jpeg() -> tuple[np.ndarray, np.ndarray]:
    """A crop of scikit-image's bundled chelsea photo (93x141, not MCU-aligned) and its Pillow JPEG at QF 10."""
    import skimage.data

    original = np.ascontiguousarray(skimage.data.chelsea()[40:133, 100:241])
    buffer = io.BytesIO()
    Image.fromarray(original).save(buffer, format="JPEG", quality=10, subsampling=2)
    return original, np.asarray(Image.open(buffer).convert("RGB"))


def test_pixel_metrics_on_real_jpeg_artefacts(real_jpeg):
    original, decoded = real_jpeg
    target, pred = (torch.from_numpy(a.copy()).permute(2, 0, 1)[None].float() / 255 for a in (original, decoded))
    t, p = original / 255.0, decoded / 255.0
    assert psnr(pred, target).item() == pytest.approx(peak_signal_noise_ratio(original, decoded), abs=1e-4)
    expected_ssim = structural_similarity(t, p, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                          data_range=1.0, channel_axis=2)
    assert ssim(pred, target).item() == pytest.approx(expected_ssim, abs=1e-4)
    rgb_psnrb = psnrb(pred, target).item()
    assert rgb_psnrb == pytest.approx(psnrb_reference(p.transpose(2, 0, 1), t.transpose(2, 0, 1)), abs=1e-3)
    for convention in ("jfif", "bt601"):
        ty, py = numpy_y(t, convention), numpy_y(p, convention)
        assert psnr(pred, target, True, convention).item() == pytest.approx(
            peak_signal_noise_ratio(ty, py, data_range=1.0), abs=1e-4)
        assert ssim(pred, target, True, convention).item() == pytest.approx(structural_similarity(
            ty, py, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0), abs=1e-4)
        assert psnrb(pred, target, True, convention).item() == pytest.approx(
            psnrb_reference(py[None], ty[None]), abs=1e-3)
    # QF 10 blocks are visible: PSNR-B penalises them (by how much is the reference's business above)
    assert rgb_psnrb < psnr(pred, target).item() - 0.1


# ----------------------------------------------------------------------------------------- sample std


def test_sample_std_matches_numpy_and_hand_values():
    samples = torch.rand(5, 2, 3, 4, 6, generator=torch.Generator().manual_seed(0))
    result = sample_std(samples)
    expected_map = samples.double().numpy().std(axis=0, ddof=1)
    np.testing.assert_allclose(result.std_map.numpy(), expected_map, atol=1e-6)
    np.testing.assert_allclose(result.per_image.numpy(), expected_map.mean(axis=(1, 2, 3)), atol=1e-6)
    pair = torch.stack([torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)])
    assert sample_std(pair).per_image.item() == pytest.approx(math.sqrt(0.5))
    assert sample_std(pair, correction=0).per_image.item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="S, B, C, H, W"):
        sample_std(torch.rand(2, 3, 4, 4))
    with pytest.raises(ValueError, match="more than 1 samples"):
        sample_std(torch.rand(1, 1, 3, 4, 4))


# ----------------------------------------------------------------------------------------- bpp


def _zigzag() -> list[tuple[int, int]]:
    order = sorted(((r, c) for r in range(8) for c in range(8)),
                   key=lambda rc: (rc[0] + rc[1], rc[0] if (rc[0] + rc[1]) % 2 else rc[1]))
    return order


ANNEX_K_LUMA = [
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55], [14, 13, 16, 24, 40, 57, 69, 56],
    [14, 17, 22, 29, 51, 87, 80, 62], [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99],
]


def _segments(data: bytes) -> dict[int, list[bytes]]:
    """JPEG marker segments before the scan: marker byte -> payloads."""
    assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"
    found: dict[int, list[bytes]] = {}
    pos = 2
    while data[pos + 1] != 0xDA:
        marker, length = data[pos + 1], int.from_bytes(data[pos + 2 : pos + 4], "big")
        found.setdefault(marker, []).append(data[pos + 4 : pos + 2 + length])
        pos += 2 + length
    return found


@pytest.mark.parametrize("quality, subsampling, factor", [(30, "4:2:0", 0x22), (75, "4:4:4", 0x11)])
def test_jpeg_bytes_honour_quality_and_subsampling(quality, subsampling, factor):
    image = natural_like(1, 3, 16, 24)[0]
    data = jpeg_bytes(image, quality, subsampling)
    segments = _segments(data)
    luma_table = segments[0xDB][0]
    assert luma_table[0] == 0  # 8-bit precision, table 0
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    expected = [min(max((ANNEX_K_LUMA[r][c] * scale + 50) // 100, 1), 255) for r, c in _zigzag()]
    assert list(luma_table[1:65]) == expected
    sof = segments[0xC0][0]
    assert int.from_bytes(sof[1:3], "big") == 16 and int.from_bytes(sof[3:5], "big") == 24
    assert sof[5] == 3 and sof[7] == factor and sof[10] == 0x11 and sof[13] == 0x11


# JPEG Annex K.3.3 typical Huffman tables: code counts per length 1..16 (DC and AC luminance, DC chrominance).
ANNEX_K_HUFFMAN_BITS = {
    (0, 0): [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0],
    (1, 0): [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7D],
    (0, 1): [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0],
}


def _huffman_tables(data: bytes) -> dict[tuple[int, int], list[int]]:
    """(class, id) -> code counts per length of every DHT table in the file."""
    tables = {}
    for payload in _segments(data)[0xC4]:
        pos = 0
        while pos < len(payload):
            bits = list(payload[pos + 1 : pos + 17])
            tables[(payload[pos] >> 4, payload[pos] & 15)] = bits
            pos += 17 + sum(bits)
    return tables


def test_bpp_counts_the_whole_file_with_the_standard_huffman_tables():
    """bpp is ``8 * len(file) / pixels``: headers (JFIF, DQT, SOF, DHT, SOS) included, Huffman tables not optimized."""
    image = natural_like(1, 3, 16, 24, seed=8)
    data = jpeg_bytes(image[0], 40)
    assert data[2:4] == b"\xff\xe0" and data[6:11] == b"JFIF\x00"  # the JFIF header is part of the count
    assert bits_per_pixel(image, 40).item() == pytest.approx(8 * len(data) / (16 * 24))
    tables = _huffman_tables(data)
    for key, bits in ANNEX_K_HUFFMAN_BITS.items():
        assert tables[key] == bits, key
    pixels = (image[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    optimized = io.BytesIO()
    Image.fromarray(pixels).save(optimized, format="JPEG", quality=40, subsampling=2, optimize=True)
    assert len(optimized.getvalue()) < len(data)  # optimized tables would report a lower bpp


def test_bits_per_pixel_against_hand_computation(tmp_path):
    images = natural_like(2, 3, 16, 24, seed=4)
    qualities = [10, 90]
    bpp = bits_per_pixel(images, qualities)
    for i, q in enumerate(qualities):
        # Independent route: write the file to disk with Pillow, measure it, 8 bits per byte over 16*24 pixels.
        array = (images[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        path = tmp_path / f"img{i}.jpg"
        Image.fromarray(array).save(path, quality=q, subsampling=2)
        assert bpp[i].item() == pytest.approx(8 * path.stat().st_size / (16 * 24))
    assert bpp[0] < bpp[1]
    gray = bits_per_pixel(images[:, :1], torch.tensor([50, 50]))
    assert gray.shape == (2,)
    decoded = Image.open(io.BytesIO(jpeg_bytes(images[0, :1], 50)))
    assert decoded.mode == "L"
    with pytest.raises(ValueError, match="quality"):
        bits_per_pixel(images, 0)
    with pytest.raises(ValueError, match="2 images"):
        bits_per_pixel(images, [10, 20, 30])


# ----------------------------------------------------------------------------------------- consistency


def test_consistency_hand_computed_flat_images():
    """Flat gray v: Y = v, DC = 8 (v - 128), decoded = 128 + Q round(8 (v - 128) / Q) / 8."""
    from jpegrestore.metrics import jpeg_consistency

    original = torch.full((2, 3, 16, 16), 128 / 255)
    restored = torch.full((2, 3, 16, 16), 139 / 255)
    # q=50: Q_dc = 16 -> round(5.5) = 6 -> 140, RMSE 12; q=10: Q_dc = 80 -> round(1.1) = 1 -> 138, RMSE 10.
    values = jpeg_consistency(restored, original, quality=torch.tensor([50, 10]))
    assert values.tolist() == pytest.approx([12.0, 10.0], abs=1e-4)
    assert jpeg_consistency(original, original, quality=30).tolist() == [0.0, 0.0]


def _pillow_round_trip(image: torch.Tensor, quality: int) -> np.ndarray:
    array = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=quality, subsampling=2)
    return np.asarray(Image.open(buffer).convert("RGB"), dtype=np.float64)


def test_consistency_matches_pillow_jpeg():
    from jpegrestore import jpeg
    from jpegrestore.metrics import jpeg_consistency

    original = (natural_like(2, 3, 32, 48, seed=9) * 255).round() / 255
    restored = (degrade(original, 0.04, seed=10) * 255).round() / 255
    quality = 25
    ours = jpeg_consistency(restored, original, tables=jpeg.quant_tables(quality))
    for i in range(2):
        difference = _pillow_round_trip(restored[i], quality) - _pillow_round_trip(original[i], quality)
        expected = math.sqrt(np.mean(difference**2))
        assert ours[i].item() == pytest.approx(expected, abs=0.05)
    assert (ours > 1.0).all()


CUSTOM_LUMA = [(i % 7) * 3 + 8 for i in range(64)]
CUSTOM_CHROMA = [min(99, 12 + i) for i in range(64)]
CONSISTENCY_CASES = {  # Pillow save options of both JPEGs
    "custom_tables_420": dict(qtables=[CUSTOM_LUMA, CUSTOM_CHROMA], subsampling=2),
    "grayscale": dict(quality=30),
    "q30_444": dict(quality=30, subsampling=0),
    "q30_422": dict(quality=30, subsampling=1),
}


@pytest.mark.parametrize("case", list(CONSISTENCY_CASES))
def test_consistency_matches_pillow_for_custom_tables_grayscale_444_and_422(case, tmp_path):
    """Tables read from the file (custom, non-IJG) or given by quality; 37x53 images are not MCU-aligned."""
    from jpegrestore import jpeg
    from jpegrestore.metrics import jpeg_consistency

    import skimage.data

    options = CONSISTENCY_CASES[case]
    source = skimage.data.camera() if case == "grayscale" else skimage.data.coffee()
    original = np.ascontiguousarray(source[150:187, 200:253])
    noise = np.random.default_rng(0).normal(0, 6, original.shape)
    restored = np.clip(original + noise, 0, 255).round().astype(np.uint8)

    def pillow(array: np.ndarray) -> tuple[np.ndarray, bytes]:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="JPEG", **options)
        return np.asarray(Image.open(io.BytesIO(buffer.getvalue())), dtype=np.float64), buffer.getvalue()

    (reference, data), (recompressed, _) = pillow(original), pillow(restored)
    expected = math.sqrt(np.mean((recompressed - reference) ** 2))

    def tensor(array: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(array.copy()).float() / 255
        return (t[None] if t.dim() == 2 else t.permute(2, 0, 1))[None]

    subsampling = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}[options.get("subsampling", 2)]
    if "qtables" in options:
        (tmp_path / "file.jpg").write_bytes(data)
        tables = jpeg.read(tmp_path / "file.jpg").qt
        assert sorted(tables[0, 0].flatten().int().tolist()) == sorted(CUSTOM_LUMA)
        ours = jpeg_consistency(tensor(restored), tensor(original), tables=tables, subsampling=subsampling)
    else:
        ours = jpeg_consistency(tensor(restored), tensor(original), quality=options["quality"],
                                subsampling=subsampling)
    assert ours.shape == (1,) and expected > 1.0
    assert ours.item() == pytest.approx(expected, abs=1e-4)


def test_consistency_needs_quality_or_tables():
    from jpegrestore.metrics import jpeg_consistency

    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match="quality or tables"):
        jpeg_consistency(x, x)


# ----------------------------------------------------------------------------------------- LPIPS / DISTS / FID


def _reference_lpips_alex(features_state: dict[str, torch.Tensor]):
    """The lpips package's own model (its own linear-layer loading), backbone copied conv by conv."""
    import lpips

    reference = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False).eval()
    convs = [m for m in reference.net.modules() if isinstance(m, torch.nn.Conv2d)]
    conv_keys = sorted({int(k.split(".")[1]) for k in features_state}, key=int)
    assert len(convs) == len(conv_keys) == 5
    with torch.no_grad():
        for conv, index in zip(convs, conv_keys):
            conv.weight.copy_(features_state[f"features.{index}.weight"])
            conv.bias.copy_(features_state[f"features.{index}.bias"])
    return reference


def test_lpips_missing_backbone_is_a_clear_error(isolated, no_network):
    from jpegrestore.metrics import LPIPSMetric

    with pytest.raises(weights.MissingWeightsError, match="alexnet-owt-7be5be79.pth"):
        LPIPSMetric("alex")


def test_lpips_loads_the_saved_backbone_and_matches_the_lpips_package(isolated, no_network):
    from jpegrestore.metrics import LPIPSMetric

    state = save_random_features(isolated / "alexnet-owt-7be5be79.pth", "alexnet")
    metric = LPIPSMetric("alex")
    assert torch.equal(metric.model.net.slice1[0].weight, state["features.0.weight"])
    assert torch.equal(getattr(metric.model.net.slice5, "10").weight, state["features.10.weight"])
    target = natural_like(3, 3, 64, 64)
    pred = degrade(target, 0.1)
    with torch.no_grad():
        ours = metric(pred, target)
        expected = _reference_lpips_alex(state)(pred * 2 - 1, target * 2 - 1).flatten()
        singles = torch.cat([metric(pred[i : i + 1], target[i : i + 1]) for i in range(3)])
        same = metric(target, target)
    assert ours.shape == (3,)
    assert torch.allclose(ours, expected, atol=1e-6)
    assert torch.allclose(ours, singles, atol=1e-6)
    assert (ours > 0).all() and torch.allclose(same, torch.zeros(3), atol=1e-7)


def test_dists_offline_matches_piq_dists(isolated, no_network, monkeypatch):
    import piq
    import piq.perceptual
    from torchvision.models.vgg import cfgs, make_layers

    from jpegrestore.metrics import DISTSMetric

    state = save_random_features(isolated / "vgg16-397923af.pth", "vgg16", seed=1)
    g = torch.Generator().manual_seed(2)
    alpha, beta = torch.rand(1, 1475, 1, 1, generator=g), torch.rand(1, 1475, 1, 1, generator=g)
    total = alpha.sum() + beta.sum()
    torch.save({"alpha": alpha / total, "beta": beta / total}, isolated / "dists_weights.pt")
    metric = DISTSMetric()

    # Reference: piq's own constructor, its two downloads replaced by the same tensors.
    def fake_vgg16(**kwargs):
        features = make_layers(cfgs["D"])  # torchvision's VGG16 feature layout
        features.load_state_dict({k[len("features."):]: v for k, v in state.items()})
        return SimpleNamespace(features=features)

    monkeypatch.setattr(piq.perceptual, "vgg16", fake_vgg16)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url",
                        lambda *a, **k: {"alpha": alpha / total, "beta": beta / total})
    reference = piq.DISTS(reduction="none")

    target = natural_like(2, 3, 32, 32)
    pred = degrade(target, 0.1)
    with torch.no_grad():
        ours = metric(pred, target)
        expected = reference(pred, target)
        same = metric(target, target)
    assert ours.shape == (2,)
    assert torch.allclose(ours, expected, atol=1e-6)
    assert (ours > same).all() and torch.allclose(same, torch.zeros(2), atol=1e-5)


class ChannelMeans(torch.nn.Module):
    """Tiny stand-in feature extractor: per-channel mean and std, [B, 3, H, W] -> [B, 6]."""

    num_features = 6

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([images.mean(dim=(2, 3)), images.std(dim=(2, 3))], dim=1)


def test_fid_matches_scipy_frechet_distance():
    from scipy import linalg

    from jpegrestore.metrics import build_fid

    real = natural_like(16, 3, 16, 16, seed=1)
    fake = degrade(natural_like(16, 3, 16, 16, seed=2), 0.1)
    fid = build_fid(feature=ChannelMeans())
    for part in (slice(0, 8), slice(8, 16)):
        fid.update(real[part], real=True)
        fid.update(fake[part], real=False)
    features_real = ChannelMeans()(real).double().numpy()
    features_fake = ChannelMeans()(fake).double().numpy()
    mu1, mu2 = features_real.mean(0), features_fake.mean(0)
    cov1, cov2 = np.cov(features_real, rowvar=False), np.cov(features_fake, rowvar=False)
    root = linalg.sqrtm(cov1 @ cov2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(cov1 + cov2 - 2 * root)
    assert fid.compute().item() == pytest.approx(expected, rel=1e-4)


def test_fid_missing_weights_is_a_clear_error(isolated, no_network):
    from jpegrestore.metrics import build_fid

    with pytest.raises(weights.MissingWeightsError, match="pt_inception-2015-12-05-6726825d.pth"):
        build_fid()


@pytest.mark.slow
def test_fid_with_a_saved_random_inception(isolated, no_network):
    """Exercises the full offline Inception: build, strict load from the file, features, FID."""
    import piq.feature_extractors.fid_inception as fi
    from torchvision import models

    from jpegrestore.metrics import InceptionFeatures, build_fid

    class RandomFIDInception(fi.InceptionV3):
        """piq's network with random weights; keeps the full Inception to save its state dict."""

        def fid_inception_v3(self):
            inception = models.inception_v3(weights=None, num_classes=1008, aux_logits=False)
            inception.Mixed_5b = fi.FIDInceptionA(192, pool_features=32)
            inception.Mixed_5c = fi.FIDInceptionA(256, pool_features=64)
            inception.Mixed_5d = fi.FIDInceptionA(288, pool_features=64)
            inception.Mixed_6b = fi.FIDInceptionC(768, channels_7x7=128)
            inception.Mixed_6c = fi.FIDInceptionC(768, channels_7x7=160)
            inception.Mixed_6d = fi.FIDInceptionC(768, channels_7x7=160)
            inception.Mixed_6e = fi.FIDInceptionC(768, channels_7x7=192)
            inception.Mixed_7b = fi.FIDInceptionE1(1280)
            inception.Mixed_7c = fi.FIDInceptionE2(2048)
            self.full = inception
            return inception

    torch.manual_seed(0)
    reference_net = RandomFIDInception().eval()
    torch.save(reference_net.full.state_dict(), isolated / "pt_inception-2015-12-05-6726825d.pth")
    features = InceptionFeatures()
    images = natural_like(3, 3, 40, 40)
    with torch.no_grad():
        ours = features(images)
        expected = reference_net(images)[0].flatten(1)
    assert ours.shape == (3, 2048)
    assert torch.allclose(ours, expected, atol=1e-5)
    fid = build_fid()
    fid.update(images, real=True)
    fid.update(degrade(images, 0.2), real=False)
    assert math.isfinite(fid.compute().item())


# ----------------------------------------------------------------------------------------- MetricSuite


ALL_NAMES = ["psnr", "psnr_y", "ssim", "ssim_y", "psnrb", "psnrb_y", "lpips_alex", "lpips_vgg", "dists", "fid"]


def test_suite_marks_missing_weights_and_computes_the_rest(isolated, no_network):
    suite = MetricSuite(ALL_NAMES, y_convention="bt601", crop_border=2)
    assert suite.status["lpips_alex"] == "unavailable (missing alexnet-owt-7be5be79.pth)"
    assert suite.status["lpips_vgg"] == "unavailable (missing vgg16-397923af.pth)"
    assert suite.status["dists"] == "unavailable (missing dists_weights.pt, vgg16-397923af.pth)"
    assert suite.status["fid"] == "unavailable (missing pt_inception-2015-12-05-6726825d.pth)"
    assert suite.available == ALL_NAMES[:6]
    target = natural_like(4, 3, 24, 24)
    pred = degrade(target)
    values = suite.update(pred, target)
    assert set(values) == set(ALL_NAMES[:6])
    assert torch.allclose(values["psnr_y"], psnr(pred, target, True, "bt601", 2))
    assert torch.allclose(values["ssim"], ssim(pred, target, crop_border=2))
    results = suite.compute()
    assert list(results) == ALL_NAMES
    assert results["psnrb_y"] == pytest.approx(psnrb(pred, target, True, "bt601", 2).mean().item(), abs=1e-5)
    assert results["dists"] == "unavailable (missing dists_weights.pt, vgg16-397923af.pth)"


def test_suite_uses_lpips_when_the_backbone_is_in_place(isolated, no_network):
    save_random_features(isolated / "alexnet-owt-7be5be79.pth", "alexnet")
    suite = MetricSuite(["psnr", "lpips_alex", "lpips_vgg"])
    assert suite.available == ["psnr", "lpips_alex"]
    target = natural_like(2, 3, 32, 32)
    pred = degrade(target, 0.1)
    values = suite.update(pred, target)
    with torch.no_grad():
        expected = metrics.LPIPSMetric("alex")(pred, target)
    assert torch.allclose(values["lpips_alex"], expected, atol=1e-6)
    assert suite.compute()["lpips_vgg"] == "unavailable (missing vgg16-397923af.pth)"


def test_suite_reports_corrupt_weights_without_crashing(isolated, no_network):
    (isolated / "alexnet-owt-7be5be79.pth").write_bytes(b"garbage")
    suite = MetricSuite(["lpips_alex", "ssim"])
    assert suite.status["lpips_alex"].startswith("unavailable (error: cannot read weights file")
    assert "alexnet-owt-7be5be79.pth" in suite.status["lpips_alex"]
    assert suite.available == ["ssim"]


def test_suite_means_do_not_depend_on_batch_size():
    names = ["psnr", "ssim_y", "psnrb", "consistency", "bpp"]
    target = natural_like(8, 3, 16, 16, seed=3)
    pred = blocky(degrade(target, 0.03), 0.02).clamp(0, 1)
    quality = torch.tensor([10, 20, 30, 40, 50, 60, 70, 80])
    batched, single = MetricSuite(names), MetricSuite(names)
    batched.update(pred, target, quality=quality)
    for i in range(8):
        single.update(pred[i : i + 1], target[i : i + 1], quality=quality[i : i + 1])
    a, b = batched.compute(), single.compute()
    for name in names:
        assert a[name] == pytest.approx(b[name], abs=1e-5)
    assert torch.allclose(batched.values()["psnr"], single.values()["psnr"])


def test_suite_input_errors():
    with pytest.raises(ValueError, match="unknown metric"):
        MetricSuite(["psnr", "niqe"])
    suite = MetricSuite(["consistency"])
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match="'consistency' needs"):
        suite.update(x, x)
    assert MetricSuite(["psnr"]).compute() == {"psnr": "no data"}


def test_suite_passes_the_y_convention_to_every_y_metric():
    target = natural_like(2, 3, 32, 32, seed=12)
    pred = blocky(degrade(target, 0.05, seed=13), 0.03).clamp(0, 1)
    names = ["psnr_y", "ssim_y", "psnrb_y"]
    bt601 = MetricSuite(names, y_convention="bt601", crop_border=2).per_image(pred, target)
    jfif = MetricSuite(names, y_convention="jfif", crop_border=2).per_image(pred, target)
    for i in range(2):
        ty = numpy_y(hwc(target[i]), "bt601")[2:-2, 2:-2]
        py = numpy_y(hwc(pred[i]), "bt601")[2:-2, 2:-2]
        assert bt601["psnr_y"][i].item() == pytest.approx(peak_signal_noise_ratio(ty, py, data_range=1.0), abs=1e-4)
        assert bt601["ssim_y"][i].item() == pytest.approx(structural_similarity(
            ty, py, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0), abs=1e-5)
        assert bt601["psnrb_y"][i].item() == pytest.approx(psnrb_reference(py[None], ty[None], offset=2), abs=1e-3)
    # The two conventions differ by more than the tolerances above, so a suite that ignored it would fail.
    for name, tolerance in (("psnr_y", 1e-4), ("ssim_y", 1e-5), ("psnrb_y", 1e-3)):
        assert ((bt601[name] - jfif[name]).abs() > 10 * tolerance).all(), name


def test_suite_caps_psnr_of_exact_images_so_means_stay_finite():
    from jpegrestore.metrics import PSNR_CEILING_DB

    target = natural_like(2, 3, 16, 16, seed=6)
    target[0] = 0.5  # a flat patch restored exactly: MSE 0 and no blocking, so PSNR and PSNR-B are +inf
    pred = torch.stack([target[0], degrade(target[1:], 0.05)[0]])
    suite = MetricSuite(["psnr", "psnrb_y", "ssim"])
    values = suite.update(pred, target)
    assert PSNR_CEILING_DB == 100.0
    assert values["psnr"][0].item() == values["psnrb_y"][0].item() == 100.0
    assert math.isinf(psnr(pred[:1], target[:1]).item())  # the metrics themselves keep their definition
    assert math.isinf(psnrb(pred[:1], target[:1], y_channel=True).item())
    below = psnr(pred[1:], target[1:]).item()
    assert values["psnr"][1].item() == pytest.approx(below) and below < 100
    assert suite.compute()["psnr"] == pytest.approx((100.0 + below) / 2, abs=1e-5)
    assert suite.compute()["ssim"] == pytest.approx((1.0 + ssim(pred[1:], target[1:]).item()) / 2, abs=1e-6)


def test_quantize_8bit_is_the_rounding_of_the_saved_png(tmp_path):
    """Half-up rounding to levels 0..255, clamped; Pillow reads the same levels back from ``save_png``."""
    from jpegrestore.evaluation.grids import save_png
    from jpegrestore.metrics import quantize_8bit

    g = torch.Generator().manual_seed(0)
    levels = torch.randint(0, 256, (3, 10, 12), generator=g)
    offsets = (torch.rand(levels.shape, generator=g) - 0.5) * 0.8  # within +-0.4 of a level: no ties
    image = (levels + offsets) / 255
    image[0, 0, :3] = torch.tensor([-0.2, 1.3, 0.6 / 255])  # clamped to 0 and 255; 0.6 rounds up to 1
    expected = levels.clone()
    expected[0, 0, :3] = torch.tensor([0, 255, 1])
    quantized = quantize_8bit(image)
    assert quantized.dtype == torch.float32
    assert torch.equal((quantized * 255).round().long(), expected)
    assert torch.equal(quantize_8bit(quantized), quantized)  # 8-bit images are left alone
    save_png(image, tmp_path / "image.png")
    stored = np.asarray(Image.open(tmp_path / "image.png"))
    np.testing.assert_array_equal(stored, expected.permute(1, 2, 0).numpy().astype(np.uint8))
