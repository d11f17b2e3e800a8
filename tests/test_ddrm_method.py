"""DDRM-JPEG as an evaluation method and in `jpegrestore restore`: the usual table plus per-pixel std and network
evaluations, with an oracle prior (whose answer is known) and with a tiny random diffusers prior."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ddrm_helpers import point_mass_prior
from jpegrestore import jpeg
from jpegrestore.evaluation.ddrm import DDRMJPEGMethod
from jpegrestore.evaluation.runner import Evaluator
from jpegrestore.metrics import quantize_8bit

ROOT = Path(__file__).resolve().parents[1]


def _photo(height: int = 40, width: int = 56) -> torch.Tensor:
    import skimage.data

    return torch.from_numpy(skimage.data.astronaut()[100:100 + height, 180:180 + width]).permute(2, 0, 1)[None] / 255


def _compose(overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="evaluate", overrides=overrides)


def test_evaluator_row_with_an_oracle_prior_reports_std_and_nfe():
    """Point-mass prior at the evaluated image: the method restores it (>= 40 dB, far above JPEG), the draws
    behind the mean are kept, and the table gets sample_std and nfe = steps x samples."""
    target = _photo()
    method = DDRMJPEGMethod(prior=point_mass_prior(target[0]), samples=3, steps=5, device="cpu")
    evaluator = Evaluator(method, metrics=["psnr"], qualities=[10], device="cpu", comparisons=0, progress=False)
    rows, images = evaluator.evaluate_batch(["a"], target, 10)
    ours = next(r for r in rows if r["method"] == "ddrm_jpeg")
    base = next(r for r in rows if r["method"] == "jpeg")
    assert ours["psnr"] >= 40 and base["psnr"] < 32
    assert ours["nfe"] == 15.0
    draws = method.last_samples
    assert draws.shape == (3, *target.shape)
    # the evaluation scores 8-bit outputs: the mean of the draws, and the spread of the 8-bit draws
    assert torch.equal(images["restored"], quantize_8bit(draws.mean(0)))
    assert ours["sample_std"] == pytest.approx(quantize_8bit(draws).std(0, correction=1).mean().item(), rel=1e-5)
    # the seed fixes every call: the same JPEG gives the same draws
    again = method(jpeg.encode(target, 10, rounding="exact"), jpeg.decode(jpeg.encode(target, 10)))
    assert torch.equal(quantize_8bit(again), images["restored"])


def test_method_errors():
    with pytest.raises(ValueError, match="needs a diffusion prior: method.prior=PATH"):
        DDRMJPEGMethod()
    with pytest.raises(ValueError, match="samples must be a positive int"):
        DDRMJPEGMethod(prior=point_mass_prior(_photo()[0]), samples=0)
    with pytest.raises(ValueError, match="steps=30 is larger than t_start=20"):
        DDRMJPEGMethod(prior=point_mass_prior(_photo()[0]), steps=30, t_start=20)


def test_config_composes_with_the_papers_defaults():
    cfg = _compose(["method=ddrm_jpeg", "method.prior=/some/prior", "method.samples=8"])
    m = cfg.method
    assert m._target_ == "jpegrestore.evaluation.ddrm.DDRMJPEGMethod"
    assert (m.prior, m.samples, m.steps, m.t_start, m.eta, m.eta_b) == ("/some/prior", 8, 20, 300, 1.0, 0.4)
    assert m.tile == cfg.tile


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory) -> Path:
    from jpegrestore.sampling import write_tiny_ddpm

    return write_tiny_ddpm(tmp_path_factory.mktemp("prior") / "tiny-ddpm")


@pytest.fixture(scope="module")
def two_images(tmp_path_factory) -> Path:
    import skimage.data

    folder = tmp_path_factory.mktemp("images")
    Image.fromarray(skimage.data.astronaut()[80:120, 200:250]).save(folder / "a.png")
    Image.fromarray(skimage.data.coffee()[100:133, 150:191]).save(folder / "b.png")  # odd size
    return folder


def test_evaluate_config_with_a_tiny_diffusers_prior(tiny_prior, two_images, tmp_path):
    from jpegrestore.evaluation import evaluate_config

    cfg = _compose(["method=ddrm_jpeg", f"method.prior={tiny_prior}", "method.samples=2", "method.steps=3",
                    f"data.source={two_images}", "qf=[10]", "metrics=[psnr,consistency]", "device=cpu",
                    "progress=false", "comparisons=0"])
    result = evaluate_config(cfg, tmp_path / "out")
    means = result.means["ddrm_jpeg"][10]
    assert means["nfe"] == 6.0 and means["sample_std"] > 0
    summary = result.files["summary"].read_text()
    assert "Network evaluations per image" in summary and "Per-pixel std over samples" in summary
    assert len([r for r in result.rows if r["method"] == "ddrm_jpeg"]) == 2


def test_restore_cli_with_a_prior(tiny_prior, tmp_path, capsys):
    from jpegrestore.cli import main

    import skimage.data

    source = tmp_path / "photo.jpg"
    Image.fromarray(skimage.data.astronaut()[:37, :53]).save(source, quality=15)
    gray = tmp_path / "gray.jpg"
    Image.fromarray(skimage.data.camera()[:24, :24]).save(gray, quality=15)
    out = tmp_path / "out"
    code = main(["restore", str(source), str(gray), "-o", str(out), "--method", "ddrm_jpeg", "--prior",
                 str(tiny_prior), "--samples", "2", "--std-map", "--device", "cpu", "-q"])
    err = capsys.readouterr().err
    assert code == 0, err
    for name in ("photo_s0.png", "photo_s1.png", "photo_std.png"):
        assert np.asarray(Image.open(out / name)).shape[:2] == (37, 53)
    assert np.asarray(Image.open(out / "photo_s0.png")).shape == (37, 53, 3)
    assert np.asarray(Image.open(out / "gray_s1.png")).shape == (24, 24)  # restored through the RGB prior's luma
    assert main(["restore", str(source), "-o", str(tmp_path / "o2"), "--method", "ddrm_jpeg", "--prior",
                 str(tmp_path / "no-such-prior"), "-q"]) == 1
    assert "no-such-prior" in capsys.readouterr().err
    assert main(["restore", str(source), "-o", str(tmp_path / "o3"), "--prior", str(tiny_prior), "-q"]) == 1
    assert "add --method ddrm_jpeg" in capsys.readouterr().err


def test_projection_option_makes_draws_consistent():
    target = _photo(32, 48)
    coeffs = jpeg.encode(target, 10, rounding="exact")
    plain = DDRMJPEGMethod(prior=point_mass_prior(torch.full((3, 1, 1), 0.5)), samples=2, steps=2, device="cpu")
    projected = DDRMJPEGMethod(prior=point_mass_prior(torch.full((3, 1, 1), 0.5)), samples=2, steps=2,
                               device="cpu", project=True)
    jpeg_image = jpeg.decode(coeffs, rounding="exact")
    assert not bool(jpeg.is_consistent(plain(coeffs, jpeg_image), coeffs).all())
    projected(coeffs, jpeg_image)
    assert all(bool(jpeg.is_consistent(draw, coeffs).all()) for draw in projected.last_samples)


def test_a_trained_ddpm_prior_checkpoint_plugs_into_evaluate_and_restore(two_images, tmp_path, capsys):
    """experiment=ddpm_prior_quick trained for two steps: its checkpoint names DDRM-JPEG as its method."""
    from conftest import TINY, run_train
    from jpegrestore.cli import main
    from jpegrestore.evaluation import evaluate_config

    run_train([*[o for o in TINY if not o.startswith("model/network=")], "experiment=ddpm_prior_quick",
               "model/network=ddpm_unet_tiny", "data.val_batch_size=2", "model.sample_grid=0",
               "model.save_diffusers=null"], tmp_path / "train")
    ckpt = tmp_path / "train" / "checkpoints" / "last.ckpt"
    # method=auto: the options go to the method the checkpoint names
    cfg = _compose([f"ckpt={ckpt}", "method.samples=2", "+method.steps=2", f"data.source={two_images}", "qf=[10]",
                    "metrics=[psnr]", "device=cpu", "progress=false", "comparisons=0"])
    result = evaluate_config(cfg, tmp_path / "eval")
    assert result.method == "ddrm_jpeg" and result.means["ddrm_jpeg"][10]["nfe"] == 4.0
    source = tmp_path / "photo.jpg"
    Image.fromarray((_photo(24, 40)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(source, quality=20)
    assert main(["restore", str(source), "-o", str(tmp_path / "out"), "--ckpt", str(ckpt), "--samples", "2",
                 "--device", "cpu", "-q"]) == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "photo_s1.png").is_file()
