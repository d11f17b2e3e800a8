"""Sampling from a posterior checkpoint: seeds, noise keyed per image (independent of batch size and order),
projection (-P) at QF 10 and 50, averaging (-A), the evaluation's per-pixel std / consistency / FID columns, FID
repeated over K draws (mean and std), and `jpegrestore restore --samples --std-map`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from posterior_helpers import write_posterior_checkpoint
from jpegrestore import jpeg
from jpegrestore.evaluation.methods import build_method
from jpegrestore.evaluation.posterior import PosteriorMethod, coefficients_key
from jpegrestore.utils.seeding import keyed_generator


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_posterior_checkpoint(tmp_path_factory.mktemp("posterior") / "posterior.ckpt")


def _jpeg(quality: int, size=(24, 40)):
    """A crop of a natural photo (astronaut), compressed exactly: (coefficients, decoded image)."""
    import skimage.data

    crop = skimage.data.astronaut()[100:100 + size[0], 180:180 + size[1]]
    image = torch.from_numpy(crop.copy()).permute(2, 0, 1)[None].float() / 255
    coeffs = jpeg.encode(image, quality=quality, rounding="exact")
    return coeffs, jpeg.decode(coeffs, rounding="exact")


def test_same_seed_same_sample_other_seed_other_sample(ckpt):
    method = PosteriorMethod(ckpt, device="cpu")
    coeffs, image = _jpeg(10)
    a = method.sample(coeffs, image, 2, torch.Generator().manual_seed(3))
    b = method.sample(coeffs, image, 2, torch.Generator().manual_seed(3))
    c = method.sample(coeffs, image, 1, torch.Generator().manual_seed(4))
    assert a.shape == (2, *image.shape) and torch.equal(a, b)
    assert (a[0] - a[1]).abs().mean() > 1e-3 and (a[0] - c[0]).abs().mean() > 1e-3
    # The call restarts from method.seed: the same image gets the same draws every time.
    assert torch.equal(method(coeffs, image), method(coeffs, image))


@pytest.mark.parametrize("quality", [10, 50])
def test_projected_samples_reencode_to_the_input_coefficients(ckpt, quality):
    coeffs, image = _jpeg(quality)
    raw = PosteriorMethod(ckpt, device="cpu").sample(coeffs, image, 3, torch.Generator().manual_seed(0))
    assert not jpeg.is_consistent(raw.flatten(0, 1), coeffs.to("cpu")[[0, 0, 0]]).all()  # G alone is not
    projected = PosteriorMethod(ckpt, device="cpu", project=True).sample(coeffs, image, 3,
                                                                         torch.Generator().manual_seed(0))
    for draw in projected:
        assert bool(jpeg.is_consistent(draw, coeffs).all())
    assert (projected[0] - projected[1]).abs().mean() > 1e-3  # still different restorations


def test_average_of_samples_and_last_samples(ckpt):
    method = build_method({"name": "auto", "samples": 3, "project": True, "seed": 5}, ckpt, device="cpu")
    assert isinstance(method, PosteriorMethod) and method.name == "posterior-P-A3"
    coeffs, image = _jpeg(10)
    mean = method(coeffs, image)
    assert method.last_samples.shape == (3, *image.shape)
    assert torch.allclose(mean, method.last_samples.mean(0))
    # Draw s is the generator's output for Z from keyed_generator(seed, the image's key, s, tile 0), projected.
    key = coefficients_key(coeffs, 0)
    for s in range(3):
        z = method.network.draw_noise(1, *image.shape[-2:], generator=keyed_generator(5, key, s, 0))
        expected = jpeg.project(method.network(coeffs, z=z), coeffs)
        assert torch.equal(method.last_samples[s], expected)
    with pytest.raises(ValueError, match="samples"):
        PosteriorMethod(ckpt, device="cpu", samples=0)
    with pytest.raises(ValueError, match="fid_repeats=4 .*samples=2"):
        PosteriorMethod(ckpt, device="cpu", samples=2, fid_repeats=4)


def test_evaluation_reports_std_consistency_and_fid_status(ckpt, tmp_path, monkeypatch):
    from jpegrestore import weights
    from jpegrestore.evaluation.runner import Evaluator

    for var in ("XDG_CACHE_HOME", "HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    for var, folder in (("HOME", "home"), ("TORCH_HOME", "torch"), (weights.ENV_VAR, "weights")):
        (tmp_path / folder).mkdir()
        monkeypatch.setenv(var, str(tmp_path / folder))

    class Images:  # a two-image source
        where = "random"

        def __len__(self):
            return 2

        def name(self, index):
            return f"img{index}.png"

    method = build_method({"name": "auto", "samples": 2, "project": True}, ckpt, device="cpu")
    evaluator = Evaluator(method, metrics=["psnr", "consistency", "fid"], qualities=[10], device="cpu",
                          comparisons=0, progress=False)
    batch = (torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(9)) * 255).round() / 255
    rows, _ = evaluator.evaluate_batch(["img0.png"], batch, 10)
    row = next(r for r in rows if r["method"] == method.name)
    eight_bit = (method.last_samples * 255).round() / 255  # the evaluation measures the 8-bit outputs
    assert row["sample_std"] == pytest.approx(eight_bit.std(0).mean().item(), rel=1e-5)
    assert row["sample_std"] > 0
    # The mean of two projected draws stays close to consistent (each draw is exactly consistent).
    jpeg_row = next(r for r in rows if r["method"] == "jpeg")
    assert row["consistency"] < max(jpeg_row["consistency"], 1.0) + 1.0
    # FID is a set metric: no per-image value; with no Inception file (weights isolated above) it is reported
    # unavailable, naming the file, and the other metrics are still computed.
    assert "fid" not in row and {"psnr", "consistency"} <= set(row)
    assert evaluator.status == {"psnr": "ok", "consistency": "ok",
                                "fid": "unavailable (missing pt_inception-2015-12-05-6726825d.pth)"}


def test_restore_cli_writes_several_samples_and_a_std_map(ckpt, tmp_path, capsys):
    from jpegrestore.cli import main

    source = tmp_path / "photo.jpg"
    rgb = (np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(source, quality=20)
    out = tmp_path / "out"
    assert main(["restore", str(source), "-o", str(out), "--ckpt", str(ckpt), "--samples", "4", "--std-map",
                 "--project", "--device", "cpu", "-q"]) == 0
    draws = [np.asarray(Image.open(out / f"photo_s{k}.png")) for k in range(4)]
    assert all(d.shape == (40, 56, 3) for d in draws) and not np.array_equal(draws[0], draws[3])
    assert np.asarray(Image.open(out / "photo_std.png")).shape == (40, 56)
    assert "per-pixel std over 4 draws" in capsys.readouterr().err
    coeffs = jpeg.read(source)
    for draw in draws:  # --project: each PNG re-encodes to the file's coefficients
        image = torch.from_numpy(draw).permute(2, 0, 1)[None].float() / 255
        assert bool(jpeg.is_consistent(image, coeffs).all())
    # Draws are keyed by the file's content and the seed: draw 0 is what one sample gives.
    assert main(["restore", str(source), "-o", str(tmp_path / "one"), "--ckpt", str(ckpt), "--project",
                 "--device", "cpu", "-q"]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "one" / "photo.png")), draws[0])


def _photos(count: int, size=(24, 40)) -> tuple[list[str], torch.Tensor]:
    """``count`` different crops of a natural photo: names and [count, 3, H, W] in [0, 1] (8-bit values)."""
    import skimage.data

    photo = torch.from_numpy(skimage.data.coffee().copy()).permute(2, 0, 1).float() / 255
    crops = [photo[:, 40 * i:40 * i + size[0], 30 * i:30 * i + size[1]] for i in range(count)]
    return [f"photo{i}.png" for i in range(count)], torch.stack(crops)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("tile", [None, 16])
def test_each_image_draws_the_same_noise_in_any_batch_and_order(ckpt, tile, device, monkeypatch):
    """An image's Z depends on its key and the seed only: batches of 3, reversed, and of 1 draw the same Z (also
    tile by tile) and restore the same image up to float rounding; another key (another image, or the same pixels
    at another quality) draws another Z."""
    names, images = _photos(3)
    keys = [f"{n}@q10" for n in names]
    coeffs = jpeg.encode(images.to(device), quality=10, rounding="exact")
    decoded = jpeg.decode(coeffs, rounding="exact")
    method = PosteriorMethod(ckpt, device=device, samples=1, fid_repeats=2, tile=tile, tile_overlap=8, seed=3)
    seen: list[list[torch.Tensor]] = []  # Z of every network call: [B, 1, h, w] per level
    generate = method.network.generate

    def recording(image, tables, noise=None, generator=None, z=None):
        seen.append(z)
        return generate(image, tables, noise, generator, z)

    monkeypatch.setattr(method.network, "generate", recording)

    def draws(index, order_keys):
        seen.clear()
        method(coeffs[index], decoded[index], keys=order_keys)
        return method.last_samples, [[level.clone() for level in z] for z in seen]

    together, z_together = draws([0, 1, 2], keys)
    calls = len(z_together)
    assert calls == 2 * (1 if tile is None else 3)  # 2 draws x tiles (24x40 in 16-px tiles: 1 x 3)
    reversed_, z_reversed = draws([2, 1, 0], keys[::-1])
    torch.testing.assert_close(reversed_, together[:, [2, 1, 0]], rtol=0, atol=1e-5)
    for a, b in zip(z_together, z_reversed):
        assert all(torch.equal(x[[2, 1, 0]], y) for x, y in zip(a, b))
    for i in range(3):
        alone, z_alone = draws([i], keys[i:i + 1])
        torch.testing.assert_close(alone, together[:, i:i + 1], rtol=0, atol=1e-5)
        for a, b in zip(z_together, z_alone):
            assert all(torch.equal(x[i:i + 1], y) for x, y in zip(a, b))
    # Other keys draw other Z, and the two draws of an image differ.
    other, z_other = draws([0], ["photo0.png@q20"])
    assert not torch.equal(z_other[0][-1], z_together[0][-1][:1])
    assert (other - together[:, :1]).abs().mean() > 1e-3
    assert not torch.equal(z_together[0][-1][0], z_together[0][-1][1])
    assert (together[0] - together[1]).abs().mean() > 1e-3


class _ChannelStats(torch.nn.Module):
    """Tiny stand-in for the Inception: per-channel mean, std and corner value, [B, 3, H, W] -> [B, 9]."""

    num_features = 9

    def __init__(self, *args, **kwargs) -> None:
        super().__init__()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([images.mean(dim=(2, 3)), images.std(dim=(2, 3)), images[:, :, 0, 0]], dim=1)


def test_fid_repeats_report_the_mean_and_std_of_k_single_draw_fids(ckpt, tmp_path, monkeypatch):
    """method.fid_repeats=K: the reported FID is the mean of K FIDs, FID k over draw k of every image, each computed
    here separately with torchmetrics' FrechetInceptionDistance; fid_std their standard deviation. Batch size 3
    over 8 images gives the same numbers as batch size 1."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    import jpegrestore.metrics.fid as fid_module
    from jpegrestore.evaluation.runner import Evaluator, eval_source
    from jpegrestore.metrics import quantize_8bit

    monkeypatch.setattr(fid_module, "InceptionFeatures", _ChannelStats)
    names, images = _photos(8)
    folder = tmp_path / "images"
    folder.mkdir()
    for name, image in zip(names, images):
        Image.fromarray((image.permute(1, 2, 0) * 255).round().byte().numpy()).save(folder / name)
    from hydra import compose, initialize_config_dir

    from conftest import CONF

    repeats = 3
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):  # the documented override
        cfg = compose(config_name="evaluate", overrides=[f"ckpt={ckpt}", f"method.fid_repeats={repeats}",
                                                         "method.seed=1"])
    results = []
    for batch_size in (3, 1):
        method = build_method(cfg.method, ckpt, device="cpu")
        evaluator = Evaluator(method, metrics=["psnr", "fid"], qualities=[10], device="cpu", batch_size=batch_size,
                              comparisons=0, progress=False)
        results.append(evaluator.run(eval_source(str(folder)), tmp_path / f"out{batch_size}").means[method.name][10])
    assert results[0] == pytest.approx(results[1], rel=1e-9)

    coeffs = jpeg.encode(images, quality=10, rounding="exact")
    method = PosteriorMethod(ckpt, device="cpu", fid_repeats=repeats, seed=1)
    method(coeffs, jpeg.decode(coeffs, rounding="exact"), keys=[f"{n}@q10" for n in names])
    draws = quantize_8bit(method.last_samples)
    single = []
    for k in range(repeats):
        reference = FrechetInceptionDistance(feature=_ChannelStats())
        reference.update(images, real=True)
        reference.update(draws[k], real=False)
        single.append(float(reference.compute()))
    assert results[0]["fid"] == pytest.approx(float(np.mean(single)), rel=1e-6)
    assert results[0]["fid_std"] == pytest.approx(float(np.std(single, ddof=1)), rel=1e-5)
    assert len(set(single)) == repeats  # the draws differ
    summary = (tmp_path / "out3" / "summary.md").read_text()
    assert "FID std over repeats" in summary and f"mean and std over {repeats} repeats" in summary
