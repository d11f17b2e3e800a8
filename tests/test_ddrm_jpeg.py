"""DDRM-JPEG against oracle priors whose noise prediction is known in closed form, and against its update rule
written out literally."""

import numpy as np
import pytest
import torch

from jpegrestore import jpeg
from jpegrestore.jpeg.sampling import pad_edge
from jpegrestore.sampling import DDRMJPEG, QuantizationMeasurement
from ddrm_helpers import MixturePrior, OraclePrior, linear_alphas_cumprod, point_mass_prior, psnr
from jpeg_helpers import photo, pillow_jpeg, reference_float_decode, reference_float_encode, to_tensor

CASES = [("4:2:0", (97, 130)), ("4:4:4", (97, 130)), ("gray", (97, 130)), ("4:2:0", (48, 64)), ("4:2:2", (41, 70))]


def real_jpeg(tmp_path, layout: str, size: tuple[int, int], quality: int = 10, left: int = 200):
    """(original [1, C, H, W] in [0, 1], Coefficients read from a libjpeg file of it)."""
    if layout == "gray":
        img = photo("camera", *size, 100, left)
        data = pillow_jpeg(img, quality)
    else:
        img = photo("astronaut", *size, 150, left)
        data = pillow_jpeg(img, quality, layout)
    path = tmp_path / f"{layout.replace(':', '')}_{left}.jpg"
    path.write_bytes(data)
    return to_tensor(img), jpeg.read(path)


def test_schedule_is_the_papers():
    sampler = DDRMJPEG(lambda x, t: x, linear_alphas_cumprod())
    schedule = sampler.timesteps()
    assert len(schedule) == 20
    assert schedule[0] == (285, 270) and schedule[1] == (270, 255) and schedule[-1] == (0, -1)
    assert DDRMJPEG(lambda x, t: x, linear_alphas_cumprod(), steps=7).timesteps()[0] == (252, 210)
    assert sampler.abar(-1) == 1.0


@pytest.mark.parametrize("layout, size", CASES)
def test_point_mass_prior_returns_the_image(tmp_path, layout, size):
    """Prior = point mass at x*: from the libjpeg file of x* at QF 10 the sampler returns x* (>= 53 dB: 53.7 to
    58.1 dB over these cases), for every layout and odd sizes; the JPEG itself is far below. The floor is what
    separates a right operator from a wrong one: chroma decimated by keeping the top-left pixel of each 2x2
    group instead of their average gives 43-49 dB in the subsampled layouts."""
    x, y = real_jpeg(tmp_path, layout, size)
    prior = point_mass_prior(x[0], learned_sigma=True)
    sampler = DDRMJPEG.from_prior(prior)
    out = sampler(y, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and 0 <= float(out.min()) and float(out.max()) <= 1
    assert psnr(out, x) >= 53
    assert psnr(jpeg.decode(y), x) < 32
    assert sampler.network_evaluations == 20 and prior.eps_model.calls == 20


def test_grayscale_jpeg_with_an_rgb_prior_is_measured_through_luma(tmp_path):
    """An RGB point-mass prior at x*, the JPEG of the luma of x*: the result is 1-channel and equals luma(x*)."""
    from jpegrestore.sampling.measurements import luma

    x, _ = real_jpeg(tmp_path, "4:4:4", (45, 61))
    gray = luma(x)
    y = jpeg.encode(gray, 10, rounding="exact")
    sampler = DDRMJPEG.from_prior(point_mass_prior(x[0]))
    out = sampler(y, num_samples=2, generator=torch.Generator().manual_seed(0), return_samples=True)
    assert out.shape == (2, 1, 1, 45, 61)
    assert psnr(out.mean(0), gray) >= 40 and psnr(jpeg.decode(y), gray) < 32


@pytest.mark.parametrize("layout, size", CASES[:4])
def test_two_image_mixture_returns_the_component_the_jpeg_came_from(tmp_path, layout, size):
    x1, y1 = real_jpeg(tmp_path, layout, size, left=200)
    x2, y2 = real_jpeg(tmp_path, layout, size, left=260)  # a neighbouring crop: same statistics, other content
    abar = linear_alphas_cumprod()
    prior = OraclePrior(MixturePrior(torch.cat([x1, x2]) * 2 - 1, abar), abar, x1.shape[1], size_multiple=8)
    sampler = DDRMJPEG.from_prior(prior)
    both = jpeg.Coefficients.cat([y1, y2])
    draws = sampler(both, num_samples=2, generator=torch.Generator().manual_seed(3), return_samples=True)
    assert draws.shape == (2, 2, *x1.shape[1:])
    for draw in draws:
        assert psnr(draw[:1], x1) >= 40 and psnr(draw[:1], x2) < 25
        assert psnr(draw[1:], x2) >= 40 and psnr(draw[1:], x1) < 25


def _toy_eps(x, t):
    """A toy eps with learned-variance channels appended (which must be dropped)."""
    e = 0.5 * torch.tanh(x) + 1e-3 * t.view(-1, 1, 1, 1).to(x.dtype)
    return torch.cat([e, 5 + e], 1)


@pytest.mark.parametrize("layout, size, multiple", [("4:2:0", (97, 130), 32), ("4:4:4", (40, 24), 1),
                                                    ("gray", (97, 130), 16)])
def test_steps_equal_the_update_written_out_literally(tmp_path, layout, size, multiple):
    _, y = real_jpeg(tmp_path, layout, size)
    abar = linear_alphas_cumprod()
    eta, eta_b = 0.7, 0.4
    sampler = DDRMJPEG(_toy_eps, abar, steps=2, t_start=300, eta=eta, eta_b=eta_b, size_multiple=multiple)
    out = sampler(y, generator=torch.Generator().manual_seed(5))

    # The same, by hand: timesteps 150 -> 0 -> (abar = 1); images on [-1, 1]; the canvas padded to the multiple.
    g = torch.Generator().manual_seed(5)
    yf = y.to(torch.float32)
    ch, cw = jpeg.mcu_canvas(y.size, y.subsampling, y.num_components)
    hn, wn = -(-ch // multiple) * multiple, -(-cw // multiple) * multiple

    def decode(c):
        return pad_edge(jpeg.float_decode(c) * 2 - 1, hn, wn)

    def encode(v):
        return jpeg.float_encode((v[..., :ch, :cw] + 1) / 2, tables=yf.qt, subsampling=yf.subsampling, size=y.size)

    yhat = decode(yf)
    c = y.num_components
    a150, a0 = float(abar[150]), float(abar[0])
    x = a150 ** 0.5 * yhat + (1 - a150) ** 0.5 * torch.randn(1, c, hn, wn, generator=g)
    e = _toy_eps(x, torch.tensor([150]))[:, :c]
    x0 = (x - (1 - a150) ** 0.5 * e) / a150 ** 0.5
    xp = x0 - decode(encode(x0)) + yhat
    n = torch.randn(x.shape, generator=g)
    x = a0 ** 0.5 * (eta_b * xp + (1 - eta_b) * x0) + (1 - a0) ** 0.5 * (eta * n + (1 - eta) * e)
    e = _toy_eps(x, torch.tensor([0]))[:, :c]
    x0 = (x - (1 - a0) ** 0.5 * e) / a0 ** 0.5
    xp = x0 - decode(encode(x0)) + yhat
    expected = ((eta_b * xp + (1 - eta_b) * x0)[..., : size[0], : size[1]] + 1) / 2
    assert torch.allclose(out, expected.clamp(0, 1), atol=1e-5)
    # The measurement-consistent part really is consistent: H(xp) == y.
    for a, b in zip(encode(xp).components(), yf.components()):
        assert torch.equal(a, b)
    # And the operator used above is JPEG's: H (unrounded) and H+ equal a second implementation (numpy/scipy
    # from T.871) on the values this run met, so the check above does not rest on jpeg.float_encode alone.
    canvas = (x0[..., :ch, :cw] + 1) / 2
    unrounded = jpeg.float_encode(canvas, tables=yf.qt, subsampling=yf.subsampling, size=y.size, quantize=False)
    for ours, theirs in zip(unrounded.components(), reference_float_encode(canvas, yf.qt, yf.subsampling)):
        assert np.allclose(ours.double().numpy(), theirs, atol=1e-3)
    ref_yhat = reference_float_decode(yf.components(), yf.qt, yf.subsampling) * 2 - 1
    assert np.allclose(yhat[..., :ch, :cw].double().numpy(), ref_yhat, atol=1e-5)


def test_mean_over_samples_and_generator_reproducibility(tmp_path):
    _, y = real_jpeg(tmp_path, "4:2:0", (32, 48))
    sampler = DDRMJPEG(_toy_eps, linear_alphas_cumprod(), steps=3)
    draws = sampler(y, num_samples=3, generator=torch.Generator().manual_seed(1), return_samples=True)
    mean = sampler(y, num_samples=3, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(mean, draws.mean(0))
    assert not torch.allclose(draws[0], draws[1])
    assert sampler.network_evaluations == 18


def test_tiles_agree_with_the_whole_image(tmp_path):
    """Prior = point mass at a flat gray image (the same for every tile): then the output at each pixel depends
    only on its own block (0.6 c + 0.4 (c - H+H(c) + H+(y))), so MCU-aligned tiles must reproduce the untiled
    result exactly, whatever noise each tile draws."""
    _, y = real_jpeg(tmp_path, "4:2:0", (97, 130))
    prior = point_mass_prior(torch.full((3, 1, 1), 0.3))
    whole = DDRMJPEG.from_prior(prior, steps=4)(y, generator=torch.Generator().manual_seed(0))
    tiled = DDRMJPEG.from_prior(prior, steps=4, tile=48, tile_overlap=16)
    out = tiled(y, num_samples=2, generator=torch.Generator().manual_seed(1), return_samples=True)
    assert out.shape == (2, *whole.shape)
    assert torch.allclose(out[0], whole, atol=1e-5) and torch.allclose(out[1], whole, atol=1e-5)
    assert tiled.network_evaluations == 2 * 4 * 3 * 4  # samples x steps x (3 x 4 tiles of the 112x144 canvas)
    # By hand on the 0..1 scale: c + eta_b (Decode(y) - Decode(Encode(c))), cropped.
    flat = torch.full((1, 3, 112, 144), 0.3)
    yf = y.to(torch.float32)
    expected = 0.3 + 0.4 * (jpeg.float_decode(yf) - jpeg.float_decode(
        jpeg.float_encode(flat, tables=yf.qt, subsampling="4:2:0", size=y.size)))
    assert torch.allclose(whole, expected[..., :97, :130].clamp(0, 1), atol=1e-5)


def test_fixed_image_size_pads_small_images_and_tiles_large_ones(tmp_path):
    _, y = real_jpeg(tmp_path, "4:4:4", (40, 70))
    prior = point_mass_prior(torch.full((3, 1, 1), 0.6))
    seen = []

    def eps(v, t):
        seen.append(tuple(v.shape[-2:]))
        return prior.eps_model(v, t)

    whole = DDRMJPEG(prior.eps_model, prior.alphas_cumprod, steps=2)(y, generator=torch.Generator().manual_seed(0))
    fixed = DDRMJPEG(eps, prior.alphas_cumprod, steps=2, image_size=64)
    assert fixed.tile == 48 and fixed.tile_overlap == 24
    out = fixed(y, generator=torch.Generator().manual_seed(0))
    assert set(seen) == {(64, 64)} and len(seen) == 2 * 2  # two tiles across the 72-pixel-wide canvas
    assert torch.allclose(out, whole, atol=1e-5)


@pytest.mark.parametrize("layout", ["rgb", "gray"])
def test_dequantization_variant(layout):
    """8 levels per channel (3 bits): the measurement of the lower edges is exact, and the mixture oracle
    returns the image whose levels were observed."""
    img1 = photo("astronaut", 37, 45, 150, 200) if layout == "rgb" else photo("camera", 37, 45, 100, 200)
    img2 = photo("astronaut", 37, 45, 150, 260) if layout == "rgb" else photo("camera", 37, 45, 100, 260)
    x1, x2 = to_tensor(img1), to_tensor(img2)
    abar = linear_alphas_cumprod()
    prior = OraclePrior(MixturePrior(torch.cat([x1, x2]) * 2 - 1, abar), abar, x1.shape[1], size_multiple=16)
    sampler = DDRMJPEG.from_prior(prior, mode="dequantize")
    out = sampler(torch.cat([x1, x2]), num_samples=2, generator=torch.Generator().manual_seed(0))
    levels = QuantizationMeasurement(torch.cat([x1, x2])).y
    assert psnr(out[:1], x1) >= 40 and psnr(out[1:], x2) >= 40
    assert psnr((levels[:1] + 1) / 2, x1) < 25  # the lower edges themselves are far off


def test_dequantization_levels_are_robust_at_bin_edges():
    op = QuantizationMeasurement(torch.zeros(1, 3, 2, 2))
    k = torch.arange(8, dtype=torch.float32)
    edges = k * (2 * 32 / 255) - 1  # the lower edges on [-1, 1], as the measurement holds them
    assert torch.equal(op.level(edges), k)
    assert torch.equal(op.forward(op.pinv(op.forward(edges))), op.forward(edges))
    below = (32 * k[1:] - 0.01) * (2 / 255) - 1  # a hundredth of a gray level under an edge: the level below
    assert torch.equal(op.level(below), k[:-1])
    assert torch.equal(op.level(torch.tensor([-1.5, 1.0, 1.5])), torch.tensor([0.0, 7.0, 7.0]))
    img = torch.tensor([0, 31, 32, 63, 64, 255], dtype=torch.float32).view(1, 1, 2, 3) / 255
    assert torch.equal(QuantizationMeasurement(img).level(img * 2 - 1).flatten(), torch.tensor([0.0, 0, 1, 1, 2, 7]))


def test_clear_errors(tmp_path):
    _, y = real_jpeg(tmp_path, "gray", (16, 16))
    abar = linear_alphas_cumprod()
    with pytest.raises(ValueError, match="steps=40 is larger than t_start=30"):
        DDRMJPEG(_toy_eps, abar, steps=40, t_start=30)
    with pytest.raises(ValueError, match="alphas_cumprod is missing"):
        DDRMJPEG(_toy_eps, None)
    with pytest.raises(ValueError, match="non-increasing"):
        DDRMJPEG(_toy_eps, torch.linspace(1e-4, 0.02, 1000))  # betas passed by mistake
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        DDRMJPEG(_toy_eps, abar - 1)
    with pytest.raises(ValueError, match="exceeds the prior's 100 diffusion timesteps"):
        DDRMJPEG(_toy_eps, abar[:100])
    with pytest.raises(ValueError, match="mode must be one of"):
        DDRMJPEG(_toy_eps, abar, mode="jpeg2000")
    _, colour = real_jpeg(tmp_path, "4:2:0", (16, 16))
    with pytest.raises(ValueError, match="models 1-channel images but the measurement has 3"):
        DDRMJPEG(_toy_eps, abar, channels=1)(colour)
    with pytest.raises(ValueError, match="predicts 3 channels for 1-channel images"):
        DDRMJPEG(lambda x, t: x.repeat(1, 3, 1, 1), abar, steps=2)(y)
    with pytest.raises(ValueError, match="does not fit the prior's image_size 32"):
        DDRMJPEG(_toy_eps, abar, image_size=32, mode="dequantize")(torch.rand(1, 1, 40, 40))
    with pytest.raises(ValueError, match="mode='jpeg' measures jpeg.Coefficients"):
        DDRMJPEG(_toy_eps, abar)(torch.rand(1, 3, 16, 16))
