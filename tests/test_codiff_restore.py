"""A tiny CODiff checkpoint through evaluate.py and `jpegrestore restore`; the method against the generator itself;
`jpegrestore tiny-model sd`."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from codiff_helpers import TINY_CAVE
from jpegrestore import jpeg
from jpegrestore.cli import main
from jpegrestore.evaluation.codiff import CODiffMethod
from jpegrestore.nn.codiff.pretrained import write_tiny_stable_diffusion
from jpegrestore.nn.codiff.tiling import tile_starts

ROOT = Path(__file__).resolve().parents[1]
SMALL_TILES = dict(latent_tile=8, latent_overlap=4, encoder_tile=64, encoder_overlap=32, decoder_tile=8,
                   decoder_overlap=4)


def _photo(height: int, width: int, gray: bool = False) -> np.ndarray:
    import skimage.data

    image = skimage.data.astronaut()[80:80 + height, 120:120 + width]
    return image.mean(axis=2).round().astype(np.uint8) if gray else image


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(tiny SD folder, CODiff checkpoint recording it, the network) written as the stage-2 task writes them."""
    from jpegrestore.nn.codiff.generator import CODiff

    root = tmp_path_factory.mktemp("codiff_restore")
    sd = write_tiny_stable_diffusion(root / "sd")
    torch.manual_seed(0)
    net = CODiff(pretrained=str(sd), cave=dict(TINY_CAVE)).eval()
    with torch.no_grad():  # trained-looking LoRA: B != 0
        for name, p in net.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    ckpt = root / "codiff.ckpt"
    torch.save({
        "state_dict": {f"net.{k}": v for k, v in net.trained_state_dict().items()},
        "jpegrestore": {"format": 1, "recipe": "codiff_stage2", "state_dict_prefix": "net.",
                        "network": net.network_spec(), "pretrained": net.pretrained,
                        "evaluation_method": "jpegrestore.evaluation.codiff.CODiffMethod"},
    }, ckpt)
    return sd, ckpt, net


def _jpeg(image: np.ndarray, quality: int = 20) -> tuple[jpeg.Coefficients, torch.Tensor]:
    x = torch.from_numpy(image).float().div(255)
    x = x[None, None] if x.ndim == 2 else x.permute(2, 0, 1)[None]
    coeffs = jpeg.encode(x, quality, rounding="exact")
    return coeffs, jpeg.decode(coeffs, rounding="exact")


def test_method_is_the_generator_forward_plus_the_colour_fix(tiny):
    from jpegrestore.nn.codiff.colorfix import adain_color_fix

    _, ckpt, net = tiny
    coeffs, image = _jpeg(_photo(44, 60))  # not a multiple of 8: padded and cropped
    plain = CODiffMethod(network=net, color_fix=False, device="cpu")
    fixed = CODiffMethod(ckpt, color_fix=True, device="cpu")  # rebuilt from the checkpoint
    with torch.no_grad():
        expected = net(image)
    assert torch.allclose(plain(coeffs, image), expected.clamp(0, 1), atol=1e-6)
    assert torch.allclose(fixed(coeffs, image), adain_color_fix(expected, image), atol=1e-5)
    assert fixed.name == "codiff"
    # a checkpoint trained here records no authors' options: float colour fix, CaVE padded to 32
    assert fixed.quantization == "float" and fixed.network.cave.pad_multiple == 32
    with pytest.raises(ValueError, match=r"quantization must be one of \['float', 'authors'\] or None, got 'round'"):
        CODiffMethod(network=net, quantization="round", device="cpu")


def test_seeded_latent_sample_is_repeatable_and_differs_from_the_mode(tiny):
    _, _, net = tiny
    coeffs, image = _jpeg(_photo(32, 48))
    mode = CODiffMethod(network=net, latent="mode", color_fix=False, device="cpu")(coeffs, image)
    first = CODiffMethod(network=net, latent="sample", seed=1, color_fix=False, device="cpu")(coeffs, image)
    again = CODiffMethod(network=net, latent="sample", seed=1, color_fix=False, device="cpu")(coeffs, image)
    other = CODiffMethod(network=net, latent="sample", seed=2, color_fix=False, device="cpu")(coeffs, image)
    assert torch.equal(first, again)
    assert not torch.equal(first, other) and not torch.equal(first, mode)
    net.latent = "mode"


def test_tiled_method_on_the_tiny_model(tiny):
    """Tiles that fit give exactly the untiled result; with small tiles every stage is tiled, and away from
    any overlap the result is that tile's own output. (The random tiny model normalises and attends over
    each tile, so tiled and untiled differ there; blending without seams is tested on local stand-ins in
    test_codiff_tiling.py.)"""
    _, _, net = tiny
    coeffs, image = _jpeg(_photo(64, 160))
    untiled = CODiffMethod(network=net, color_fix=False, tile=0, device="cpu")(coeffs, image)
    fits = CODiffMethod(network=net, color_fix=False, device="cpu")(coeffs, image)  # default tiles: one tile
    assert torch.equal(untiled, fits)
    method = CODiffMethod(network=net, color_fix=False, device="cpu", **SMALL_TILES)
    tiled = method(coeffs, image)
    assert tiled.shape == untiled.shape and torch.isfinite(tiled).all()
    assert (tiled - untiled).abs().mean() > 1e-3  # tiling really happened
    # latent tiles along the width start at 0, 4, ..., 12 (latent width 20): latent columns 0..3 belong to
    # the first tile only, so the denoised latent there is the first tile's own
    assert tile_starts(20, 8, 4) == [0, 4, 8, 12]
    with torch.no_grad():
        cond = net.condition(image)
        z = torch.randn(1, 4, 8, 20)
        from jpegrestore.nn.codiff.tiling import tiled_apply

        blended = tiled_apply(lambda t: net.denoise_latent(t, cond), z, 8, 4)
        first = net.denoise_latent(z[..., :8, :8], cond)
    assert (blended[..., :, :2] - first[..., :, :2]).abs().max() < 1e-3 * first.abs().max()


def test_authors_cave_padding_with_tiles(tiny):
    """With the authors' CaVE padding the whole image is embedded once, whatever the tiles: every UNet tile attends
    to the same floor(H8/32) x floor(W8/32) tokens (2x3 at 88x120), as in their latent tiling."""
    _, _, net = tiny
    coeffs, image = _jpeg(_photo(88, 120))
    seen = []
    original_embed = net.cave.embed

    def embed(x):
        seen.append(tuple(x.shape[-2:]))
        tokens = original_embed(x)
        seen.append(tokens.shape[1])
        return tokens

    net.cave.pad_multiple, net.cave.embed = 8, embed
    try:
        tiled = CODiffMethod(network=net, color_fix=False, device="cpu", **SMALL_TILES)(coeffs, image)
    finally:
        net.cave.pad_multiple = 32
        del net.cave.embed
    assert seen == [(88, 120), 6]
    assert tiled.shape == image.shape and torch.isfinite(tiled).all()


def test_evaluate_py_on_a_codiff_checkpoint(tiny, tmp_path):
    from hydra import compose, initialize_config_dir

    from jpegrestore.evaluation import evaluate_config

    sd, ckpt, _ = tiny
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(_photo(40, 56)).save(folder / "photo.png")
    common = ["qf=[10]", f"data.source={folder}", "metrics=[psnr]", "progress=false", "comparisons=0"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        auto = compose(config_name="evaluate", overrides=[f"ckpt={ckpt}", *common])
        explicit = compose(config_name="evaluate", overrides=[
            "method=codiff", f"ckpt={ckpt}", f"pretrained={sd}", "method.color_fix=false", "method.name=codiff_nofix",
            *common])
    result = evaluate_config(auto, tmp_path / "auto")
    assert result.method == "codiff"
    psnr = {r["method"]: r["psnr"] for r in result.rows}
    assert set(psnr) == {"jpeg", "codiff"} and np.isfinite(psnr["codiff"])
    result = evaluate_config(explicit, tmp_path / "explicit")
    assert {r["method"] for r in result.rows} == {"jpeg", "codiff_nofix"}


def test_pretrained_override_and_a_missing_base(tiny, tmp_path):
    from jpegrestore.nn.codiff.pretrained import MissingBaseModelError

    sd, ckpt, net = tiny
    moved = tmp_path / "moved-sd"
    shutil.copytree(sd, moved)
    checkpoint = torch.load(ckpt, weights_only=True)
    checkpoint["jpegrestore"]["network"]["pretrained"] = str(tmp_path / "gone")
    torch.save(checkpoint, tmp_path / "elsewhere.ckpt")
    with pytest.raises(MissingBaseModelError, match="gone does not exist"):
        CODiffMethod(tmp_path / "elsewhere.ckpt", device="cpu")
    method = CODiffMethod(tmp_path / "elsewhere.ckpt", pretrained=str(moved), color_fix=False, device="cpu")
    coeffs, image = _jpeg(_photo(32, 32))
    with torch.no_grad():
        assert torch.allclose(method(coeffs, image), net(image).clamp(0, 1), atol=1e-6)


def test_restore_command_with_codiff_options(tiny, tmp_path, capsys):
    sd, ckpt, _ = tiny
    Image.fromarray(_photo(40, 72)).save(tmp_path / "colour.jpg", quality=15)
    Image.fromarray(_photo(40, 72, gray=True)).save(tmp_path / "gray.jpg", quality=15)
    out = tmp_path / "out"
    args = ["restore", str(tmp_path / "colour.jpg"), str(tmp_path / "gray.jpg"), "-o", str(out), "--ckpt", str(ckpt),
            "--device", "cpu", "-q"]
    assert main([*args, "--pretrained", str(sd), "--no-color-fix", "--latent", "sample", "--seed", "3"]) == 0
    colour, gray = np.asarray(Image.open(out / "colour.png")), np.asarray(Image.open(out / "gray.png"))
    assert colour.shape == (40, 72, 3) and gray.shape == (40, 72)
    # by default the colour fix moves the output's channel means to the JPEG's (up to clipping at 0 and 255)
    assert main([*args, "-o", str(tmp_path / "fixed")]) == 0
    target = np.asarray(Image.open(tmp_path / "colour.jpg").convert("RGB")).astype(float).mean(axis=(0, 1))
    fixed = np.asarray(Image.open(tmp_path / "fixed" / "colour.png")).astype(float).mean(axis=(0, 1))
    unfixed = colour.astype(float).mean(axis=(0, 1))
    assert np.abs(fixed - target).max() < 0.2 * np.abs(unfixed - target).max()
    # --quantization authors (their test script): the two truncations lower the output by about half a level
    assert main([*args, "-o", str(tmp_path / "authors"), "--quantization", "authors"]) == 0
    authors = np.asarray(Image.open(tmp_path / "authors" / "colour.png")).astype(float).mean()
    assert 0.2 < fixed.mean() - authors < 0.8


def test_codiff_options_with_another_checkpoint_are_an_error(tmp_path, capsys):
    from checkpoint_helpers import write_tiny_checkpoint

    from jpegrestore.evaluation.codiff import load_codiff

    qgac = write_tiny_checkpoint(tmp_path / "qgac.ckpt")[0]
    Image.fromarray(_photo(32, 32)).save(tmp_path / "a.jpg", quality=20)
    assert main(["restore", str(tmp_path / "a.jpg"), "-o", str(tmp_path / "o"), "--ckpt", str(qgac),
                 "--pretrained", "x", "--device", "cpu"]) == 1
    assert "deterministic network (tiny_qgac); it takes no method options ['pretrained']" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not a CODiff generator"):
        load_codiff(qgac)


def test_tiny_model_command(tmp_path, capsys):
    from jpegrestore.nn.codiff.pretrained import load_stable_diffusion

    assert main(["tiny-model", "sd", str(tmp_path / "sd")]) == 0
    printed = capsys.readouterr().out
    assert "experiment=codiff_stage2_tiny" in printed and f"model.pretrained={tmp_path / 'sd'}" in printed
    vae, unet, scheduler = load_stable_diffusion(tmp_path / "sd")
    assert unet.config.in_channels == vae.config.latent_channels == 4
    assert scheduler.config.prediction_type == "epsilon"
