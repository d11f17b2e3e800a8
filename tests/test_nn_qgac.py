"""QGAC architecture: CFM, grouped RRDB, FrequencyNet, normalization stats and the full model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.fft import idctn
from torch.nn import functional as F

from jpegrestore import jpeg
from jpegrestore.nn import QGAC as QGACFromNN
from jpegrestore.nn.qgac import (
    QGAC,
    RRDB,
    ConvolutionalFilterManifold,
    DCTStats,
    DCTStatsAccumulator,
    FrequencyNet,
    blocks_to_frequencies,
    frequencies_to_blocks,
    grouped_cat,
    nearest_upsample_blocks,
)

TINY = dict(block_channels=8, freq_channels=64, color_channels=(8, 16), cfm_hidden=8, inner_channels=4, fusion_width=2)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def smooth_images(batch: int, channels: int, height: int, width: int) -> torch.Tensor:
    """Natural-ish images in [0, 1]: upsampled noise, so JPEG keeps some AC energy."""
    coarse = torch.rand(batch, channels, max(height // 6, 2), max(width // 6, 2))
    return F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)


def tables(qualities: list[int], component: int = 0) -> torch.Tensor:
    return jpeg.quant_tables(torch.tensor(qualities))[:, component : component + 1] / 255.0


# ----------------------------------------------------------------------------- size


def test_paper_width_parameter_count_is_about_259m_on_meta_device():
    with torch.device("meta"):
        net = QGAC()
    params = list(net.parameters())
    assert all(p.is_meta for p in params)
    count = sum(p.numel() for p in params)
    assert abs(count - 259e6) / 259e6 < 0.03, count
    assert QGACFromNN is QGAC
    # The 256x64 CFM weight transforms dominate, about 67M each (REFERENCE-NOTES).
    big = net.y_net.block_decoder.encode.weight_transform.weight.numel()
    assert big == 64 * (256 * 64) * 64


# ----------------------------------------------------------------------------- CFM


def test_cfm_kernels_depend_on_table_and_only_on_table():
    cfm = ConvolutionalFilterManifold(3, 5, hidden_channels=16)
    weight, bias = cfm.kernels(tables([10, 50, 10, 90]))
    assert weight.shape == (4, 5, 3, 8, 8) and bias.shape == (4, 5)
    torch.testing.assert_close(weight[0], weight[2], rtol=0, atol=0)
    torch.testing.assert_close(bias[0], bias[2], rtol=0, atol=0)
    for a, b in [(0, 1), (0, 3), (1, 3)]:
        assert (weight[a] - weight[b]).abs().max() > 1e-4 * weight[a].abs().max()
        assert (bias[a] - bias[b]).abs().max() > 0


@pytest.mark.parametrize("transposed", [False, True])
def test_cfm_batched_grouped_conv_matches_per_sample_convolution(transposed):
    cfm = ConvolutionalFilterManifold(3, 5, hidden_channels=16, transposed=transposed)
    table = tables([5, 30, 75])
    x = torch.randn(3, 3, 16, 24) if not transposed else torch.randn(3, 3, 2, 3)
    out = cfm(x, table)
    weight, bias = cfm.kernels(table)
    for i in range(3):  # reference: one ordinary convolution per sample with its own kernels
        if transposed:
            ref = F.conv_transpose2d(x[i : i + 1], weight[i].transpose(0, 1), bias[i], stride=8)
        else:
            ref = F.conv2d(x[i : i + 1], weight[i], bias[i], stride=8)
        torch.testing.assert_close(out[i : i + 1], ref, rtol=1e-5, atol=1e-5)
    assert out.shape == ((3, 5, 2, 3) if not transposed else (3, 5, 16, 24))


def test_cfm_rejects_bad_shapes():
    cfm = ConvolutionalFilterManifold(1, 4, hidden_channels=8)
    with pytest.raises(ValueError, match="multiples of 8"):
        cfm(torch.zeros(1, 1, 12, 16), tables([50]))
    with pytest.raises(ValueError, match="tables"):
        cfm(torch.zeros(2, 1, 16, 16), tables([50]))
    with pytest.raises(ValueError, match="8, 8"):
        cfm(torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 4, 4))


# ----------------------------------------------------------------------------- RRDB


def test_grouped_cat_interleaves_per_group():
    a = torch.tensor([0.0, 1.0, 2.0, 3.0]).view(1, 4, 1, 1)  # 2 groups of 2: (0, 1) (2, 3)
    b = torch.tensor([10.0, 20.0]).view(1, 2, 1, 1)  # 2 groups of 1: (10) (20)
    out = grouped_cat([a, b], groups=2).flatten().tolist()
    assert out == [0.0, 1.0, 10.0, 2.0, 3.0, 20.0]
    assert grouped_cat([a, b], groups=1).flatten().tolist() == [0.0, 1.0, 2.0, 3.0, 10.0, 20.0]


def test_grouped_rrdb_equals_independent_rrdbs_per_group():
    groups, per_group = 4, 3
    grouped = RRDB(groups * per_group, groups=groups)
    x = torch.randn(2, groups * per_group, 5, 6)
    out = grouped(x)
    convs = [m for m in grouped.modules() if isinstance(m, torch.nn.Conv2d)]
    prelus = [m for m in grouped.modules() if isinstance(m, torch.nn.PReLU)]
    for g in range(groups):
        single = RRDB(per_group)
        s_convs = [m for m in single.modules() if isinstance(m, torch.nn.Conv2d)]
        s_prelus = [m for m in single.modules() if isinstance(m, torch.nn.PReLU)]
        with torch.no_grad():
            for src, dst in zip(convs, s_convs):
                rows = slice(g * per_group, (g + 1) * per_group)
                dst.weight.copy_(src.weight[rows])
                dst.bias.copy_(src.bias[rows])
            for src, dst in zip(prelus, s_prelus):
                dst.weight.copy_(src.weight)
        sl = slice(g * per_group, (g + 1) * per_group)
        torch.testing.assert_close(out[:, sl], single(x[:, sl]), rtol=1e-5, atol=1e-6)


def test_grouped_rrdb_keeps_groups_separate():
    net = RRDB(64 * 2, groups=64)
    x = torch.randn(1, 128, 6, 6)
    bumped = x.clone()
    bumped[:, 10:12] += torch.randn(1, 2, 6, 6)  # group 5 only
    diff = (net(bumped) - net(x)).abs().amax(dim=(0, 2, 3))
    assert diff[10:12].min() > 1e-6
    assert diff[:10].max() == 0 and diff[12:].max() == 0


def test_rrdb_has_15_convs_with_dense_widths():
    net = RRDB(6)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 15
    assert [c.in_channels for c in convs[:5]] == [6, 12, 18, 24, 30]
    assert all(c.out_channels == 6 for c in convs)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())


# ----------------------------------------------------------------------------- FrequencyNet


def test_frequency_rearrangement_hand_index_and_roundtrip():
    x = torch.randn(2, 3, 16, 24)
    f = blocks_to_frequencies(x)
    assert f.shape == (2, 64 * 3, 2, 3)
    b, c, by, bx, i, j = 1, 2, 1, 2, 3, 5
    assert f[b, (8 * i + j) * 3 + c, by, bx] == x[b, c, 8 * by + i, 8 * bx + j]
    torch.testing.assert_close(frequencies_to_blocks(f), x, rtol=0, atol=0)


def test_frequencynet_keeps_frequencies_separate():
    net = FrequencyNet(in_channels=2, out_channels=3, channels=128)
    x = torch.randn(1, 2, 32, 32)
    bumped = x.clone()
    bumped[:, 1, 8 + 2, 16 + 5] += 3.0  # frequency (2, 5) of block (1, 2), channel 1
    diff = (net(bumped) - net(x)).abs().sum(dim=(0, 1))  # [32, 32]
    per_frequency = diff.reshape(4, 8, 4, 8).sum(dim=(0, 2))  # [8, 8] summed over blocks
    assert per_frequency[2, 5] > 0
    per_frequency[2, 5] = 0
    assert per_frequency.max() == 0


def test_frequencynet_needs_64_groups():
    with pytest.raises(ValueError, match="multiple of 64"):
        FrequencyNet(channels=100)


# ----------------------------------------------------------------------------- normalization


def test_accumulator_matches_numpy_over_uneven_batches():
    rng = np.random.default_rng(0)
    data = [rng.normal(5.0, 3.0, size=(n, 2, 8, 8)) * np.arange(1, 65).reshape(8, 8) for n in (1, 7, 3)]
    acc = DCTStatsAccumulator()
    for d in data:
        acc.update("cb", torch.from_numpy(d).float())
        acc.update("y", torch.from_numpy(d[:, :1]).float())
        acc.update("cr", torch.from_numpy(d).float() * 2)
    stats = acc.compute()
    everything = np.concatenate([d.reshape(-1, 8, 8) for d in data]).astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(stats.mean[1].numpy(), everything.mean(0), rtol=1e-9)
    np.testing.assert_allclose(stats.std[1].numpy(), everything.std(0), rtol=1e-9)
    np.testing.assert_allclose(stats.std[2].numpy(), 2 * everything.std(0), rtol=1e-6)
    luma = np.concatenate([d[:, :1].reshape(-1, 8, 8) for d in data]).astype(np.float32)
    np.testing.assert_allclose(stats.mean[0].numpy(), luma.astype(np.float64).mean(0), rtol=1e-9)


def test_accumulator_dequantizes_coefficients_and_reports_missing_components():
    images = smooth_images(2, 1, 32, 32)
    coeffs = jpeg.encode(images, quality=torch.tensor([20, 70]))
    acc = DCTStatsAccumulator()
    acc.update_coefficients(coeffs)
    with pytest.raises(ValueError, match="'cb'"):
        acc.compute()
    stats = acc.compute(allow_missing=True)
    deq = (coeffs.y.double() * coeffs.qt[:, 0, None, None].double()).reshape(-1, 8, 8).numpy()
    np.testing.assert_allclose(stats.mean[0].numpy(), deq.mean(0), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(stats.std[1], DCTStats.prior().std[1])


def test_stats_prior_and_normalize_roundtrip():
    prior = DCTStats.prior()
    assert prior.mean.abs().max() == 0
    assert prior.std[0, 0, 0] == pytest.approx(8 * 255 / 12**0.5)
    assert 2.0 < prior.std[0, 7, 7] < 3.0
    assert prior.std[0, 0, 1] == pytest.approx(70.0)
    stats = DCTStats(torch.randn(3, 8, 8), torch.rand(3, 8, 8) + 0.5)
    blocks = torch.randn(2, 3, 4, 8, 8)
    normalized = stats.normalize(blocks, "cr")
    torch.testing.assert_close(normalized, (blocks - stats.mean[2].float()) / stats.std[2].float())
    torch.testing.assert_close(stats.denormalize(normalized, 2), blocks)


@pytest.mark.parametrize("suffix", [".json", ".pt"])
def test_stats_save_load_roundtrip(tmp_path, suffix):
    stats = DCTStats(torch.randn(3, 8, 8), torch.rand(3, 8, 8) + 0.1)
    path = tmp_path / f"stats{suffix}"
    stats.save(path)
    loaded = DCTStats.load(path)
    torch.testing.assert_close(loaded.mean, stats.mean, rtol=0, atol=0)
    torch.testing.assert_close(loaded.std, stats.std, rtol=0, atol=0)


def test_stats_load_errors_name_the_problem(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(FileNotFoundError, match="nope.json"):
        DCTStats.load(missing)
    bad_key = tmp_path / "bad.json"
    bad_key.write_text(json.dumps({"mean": np.zeros((3, 8, 8)).tolist()}))
    with pytest.raises(ValueError, match="'std'"):
        DCTStats.load(bad_key)
    bad_shape = tmp_path / "shape.json"
    bad_shape.write_text(json.dumps({"mean": np.zeros((8, 8)).tolist(), "std": np.ones((3, 8, 8)).tolist()}))
    with pytest.raises(ValueError, match="shape.json.*mean"):
        DCTStats.load(bad_shape)
    with pytest.raises(ValueError, match="positive"):
        DCTStats(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8))


def test_model_carries_stats_in_state_dict(tmp_path):
    stats = DCTStats(torch.randn(3, 8, 8), torch.rand(3, 8, 8) + 0.5)
    path = tmp_path / "s.json"
    stats.save(path)
    net = QGAC(**TINY, stats=path)
    torch.testing.assert_close(net.stats_mean.double(), stats.mean, rtol=1e-6, atol=1e-6)
    other = QGAC(**TINY)
    other.load_state_dict(net.state_dict())
    torch.testing.assert_close(other.stats_std, net.stats_std)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        QGAC(**TINY, stats=tmp_path / "missing.pt")


# ----------------------------------------------------------------------------- full model


def reference_decode_nearest(coeffs) -> np.ndarray:
    """Independent numpy decode: per-block scipy IDCT, nearest chroma upsampling, JFIF colour, crop."""

    def plane(blocks, table):
        deq = blocks.detach().double().numpy() * table.double().numpy()[:, None, None]
        pix = idctn(deq, axes=(-2, -1), norm="ortho") + 128.0  # [B, hb, wb, 8, 8]
        b, hb, wb = pix.shape[:3]
        return pix.transpose(0, 1, 3, 2, 4).reshape(b, hb * 8, wb * 8)

    y = plane(coeffs.y, coeffs.qt[:, 0])
    if coeffs.cb is None:
        return y[:, None, : coeffs.size[0], : coeffs.size[1]] / 255.0
    chroma = []
    for i, c in ((1, coeffs.cb), (2, coeffs.cr)):
        p = plane(c, coeffs.qt[:, i])
        factor = y.shape[1] // p.shape[1]
        chroma.append(np.repeat(np.repeat(p, factor, axis=1), factor, axis=2) - 128.0)
    cb, cr = chroma
    rgb = np.stack([y + 1.402 * cr, y - 0.344136286 * cb - 0.714136286 * cr, y + 1.772 * cb], axis=1)
    return rgb[:, :, : coeffs.size[0], : coeffs.size[1]] / 255.0


def zero_residuals(net: QGAC) -> None:
    with torch.no_grad():
        last = net.y_net.fusion.net[-1]
        last.weight.zero_()
        last.bias.zero_()
        if net.color_net is not None:
            for p in net.color_net.decode.parameters():
                p.zero_()


@pytest.mark.parametrize("subsampling", ["4:2:0", "4:4:4"])
def test_zero_residual_model_is_nearest_upsampled_jpeg_decode(subsampling):
    stats = DCTStats(torch.randn(3, 8, 8) * 5, torch.rand(3, 8, 8) * 50 + 1)  # normalization must cancel
    net = QGAC(**TINY, stats=stats)
    zero_residuals(net)
    coeffs = jpeg.encode(smooth_images(2, 3, 36, 52), quality=torch.tensor([15, 60]), subsampling=subsampling)
    with torch.no_grad():
        out = net(coeffs)
        y = net.forward_y(coeffs)
    ref = reference_decode_nearest(coeffs)
    assert out.shape == (2, 3, 36, 52)
    np.testing.assert_allclose(out.numpy(), ref, atol=2e-5)
    y_ref = reference_decode_nearest(jpeg.Coefficients(coeffs.y, None, None, coeffs.qt[:, :1], "4:4:4", coeffs.size))
    np.testing.assert_allclose(y.numpy(), y_ref, atol=2e-5)


def test_nearest_upsample_blocks_matches_pixel_repeat():
    blocks = torch.randn(2, 3, 4, 8, 8, dtype=torch.float64) * 50
    up = nearest_upsample_blocks(blocks)
    assert up.shape == (2, 6, 8, 8, 8)
    pix = idctn(blocks.numpy(), axes=(-2, -1), norm="ortho").transpose(0, 1, 3, 2, 4).reshape(2, 24, 32)
    up_pix = idctn(up.numpy(), axes=(-2, -1), norm="ortho").transpose(0, 1, 3, 2, 4).reshape(2, 48, 64)
    np.testing.assert_allclose(up_pix, np.repeat(np.repeat(pix, 2, axis=1), 2, axis=2), atol=1e-9)


@pytest.mark.parametrize("subsampling", ["4:2:0", "4:4:4"])
def test_tiny_model_forward_backward(subsampling):
    net = QGAC(**TINY)
    images = smooth_images(2, 3, 40, 56).requires_grad_()
    coeffs = jpeg.encode(images, quality=torch.tensor([10, 80]), subsampling=subsampling)
    out = net(coeffs)
    assert out.shape == (2, 3, 40, 56) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    # Close to the input decode at init (small residuals), but not identical.
    assert (out - jpeg.decode(coeffs)).abs().mean() < 0.05
    (out - images.detach()).abs().mean().backward()
    assert torch.isfinite(images.grad).all()
    for name, p in net.named_parameters():
        if subsampling == "4:4:4" and name.startswith("color_net.upsample"):
            assert p.grad is None  # the learned 2x upsampling only serves 4:2:0
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # Deep parameters of both subnetworks receive gradient (the colour one only if it was used).
    assert net.y_net.block_encoder.encode.weight_transform.weight.grad.abs().sum() > 0
    assert net.color_net.chroma_encode.weight_transform.weight.grad.abs().sum() > 0
    if subsampling == "4:2:0":
        assert net.color_net.upsample.weight.grad.abs().sum() > 0


def test_forward_y_and_grayscale_inputs():
    net = QGAC(**TINY)
    gray = jpeg.encode(smooth_images(2, 1, 24, 20), quality=30)
    assert gray.cb is None
    y = net.forward_y(gray)
    assert y.shape == (2, 1, 24, 20) and torch.isfinite(y).all()
    torch.testing.assert_close(net(gray), y)
    color = jpeg.encode(smooth_images(1, 3, 24, 20), quality=30)
    assert net.forward_y(color).shape == (1, 1, 24, 20)


def test_restoration_depends_on_the_table():
    """Same dequantized coefficients, different tables: only the CFMs see the difference."""
    net = QGAC(**TINY)
    coeffs = jpeg.encode(smooth_images(1, 3, 32, 32), quality=40)
    halved = jpeg.Coefficients(coeffs.y / 2, coeffs.cb / 2, coeffs.cr / 2, coeffs.qt * 2, "4:2:0", coeffs.size)
    with torch.no_grad():
        a, b = net(coeffs), net(halved)
        zero_residuals(net)
        torch.testing.assert_close(net(coeffs), net(halved))
    assert (a - b).abs().max() > 1e-6


def test_color_free_model_and_unsupported_subsampling():
    net = QGAC(**TINY, color=False)
    assert net.color_net is None
    zero_residuals(net)
    coeffs = jpeg.encode(smooth_images(1, 3, 32, 32), quality=50)
    with torch.no_grad():
        np.testing.assert_allclose(net(coeffs).numpy(), reference_decode_nearest(coeffs), atol=2e-5)
    coeffs_422 = jpeg.encode(smooth_images(1, 3, 32, 32), quality=50, subsampling="4:2:2")
    with pytest.raises(ValueError, match="4:2:2"):
        QGAC(**TINY)(coeffs_422)
    with pytest.raises(ValueError, match="jpeg.Coefficients"):
        net(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="fused > chroma"):
        QGAC(**{**TINY, "color_channels": (8, 8)})


def test_tiny_model_under_bf16_autocast_stays_close_to_float32():
    """Tolerance: bf16 keeps 8 significant bits, about 2e-3 relative per operation; through the tiny random
    network that is at most 0.025 (6 gray levels) anywhere and 0.004 (1 gray level) on average (measured:
    0.009-0.012 and 0.0018 over three seeds)."""
    net = QGAC(**TINY).eval()
    coeffs = jpeg.encode(smooth_images(1, 3, 32, 32), quality=50)
    with torch.no_grad():
        reference = net(coeffs)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(coeffs)
    assert out.shape == (1, 3, 32, 32)
    error = (out.float() - reference).abs()
    assert error.max() <= 0.025 and error.mean() <= 0.004, (error.max(), error.mean())
