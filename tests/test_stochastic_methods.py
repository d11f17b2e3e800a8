"""The optional parts of the method protocol: extra columns, per-pixel std over draws, FID on one draw, checkpoint
dispatch to a recipe's own method, and `jpegrestore restore --samples`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from jpegrestore.evaluation.methods import build_method, checkpoint_method
from jpegrestore.evaluation.runner import Evaluator
from stochastic_helpers import NoisyMethod, write_stochastic_checkpoint
from checkpoint_helpers import write_tiny_checkpoint


class _Images:
    """Two 32x48 gradient images."""

    def __init__(self) -> None:
        ramp = torch.linspace(0.1, 0.9, 48)
        self.images = [("a", ramp.expand(3, 32, 48).clone()), ("b", ramp.flip(0).expand(3, 32, 48).clone())]

    def __iter__(self):
        return iter(self.images)


class _FIDSpy:
    def __init__(self) -> None:
        self.fakes: list[torch.Tensor] = []

    def update(self, pred, target):
        self.fakes.append(pred.clone())

    def reset(self):
        pass

    def compute(self):
        return {"fid": 1.0}


def test_evaluator_reports_sample_std_nfe_and_feeds_fid_one_draw(tmp_path):
    method = NoisyMethod(samples=3, sigma=0.1)
    evaluator = Evaluator(method, metrics=["psnr"], qualities=[10], device="cpu", comparisons=0, progress=False)
    evaluator.fid = {"noisy": _FIDSpy()}
    evaluator.status["fid"] = "ok"
    target = _Images().images[0][1][None]
    rows, images = evaluator.evaluate_batch(["a"], target, 10)
    row = next(r for r in rows if r["method"] == "noisy")
    from jpegrestore.metrics import quantize_8bit

    draws = quantize_8bit(method.last_samples)  # the protocol scores the 8-bit images users get
    expected_std = draws.std(dim=0, correction=1).mean().item()
    assert row["sample_std"] == pytest.approx(expected_std, rel=1e-6)
    assert row["nfe"] == 9.0
    assert "sample_std" not in next(r for r in rows if r["method"] == "jpeg")
    # FID sees the first draw, not the mean the table scores
    assert torch.equal(evaluator.fid["noisy"].fakes[0], draws[0])
    assert not torch.allclose(evaluator.fid["noisy"].fakes[0], images["restored"])


def test_summary_and_csv_carry_the_method_columns(tmp_path):
    from jpegrestore.evaluation.runner import eval_source

    folder = tmp_path / "images"
    folder.mkdir()
    for name, image in _Images():
        Image.fromarray((image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(folder / f"{name}.png")
    result = Evaluator(NoisyMethod(samples=2), metrics=["psnr"], qualities=[10], device="cpu", comparisons=0,
                       progress=False).run(eval_source(str(folder)), tmp_path / "out")
    summary = result.files["summary"].read_text()
    assert "Per-pixel std over samples" in summary and "Network evaluations per image" in summary
    header = result.files["csv"].read_text().splitlines()[0].split(",")
    assert "sample_std" in header and "nfe" in header
    assert result.means["noisy"][10]["nfe"] == 6.0


def test_unknown_extra_column_is_an_error():
    method = NoisyMethod(samples=1)
    original = method.__call__

    class Bad(NoisyMethod):
        def __call__(self, coeffs, jpeg_image):
            out = original(coeffs, jpeg_image)
            self.extras = {"speed": torch.ones(jpeg_image.shape[0])}
            return out

    evaluator = Evaluator(Bad(samples=1), metrics=["psnr"], qualities=[10], device="cpu", progress=False)
    with pytest.raises(ValueError, match="unknown column 'speed'"):
        evaluator.evaluate_batch(["a"], _Images().images[0][1][None], 10)


def test_checkpoint_dispatch_and_options(tmp_path):
    ckpt = tmp_path / "noisy.ckpt"
    write_stochastic_checkpoint(ckpt)
    method = build_method({"name": "auto", "samples": 5, "seed": None}, ckpt, device="cpu")
    assert isinstance(method, NoisyMethod) and method.samples == 5 and str(method.ckpt) == str(ckpt)  # a read Checkpoint
    plain, _ = write_tiny_checkpoint(tmp_path / "plain.ckpt")
    with pytest.raises(ValueError, match="deterministic network.*samples"):
        checkpoint_method(plain, device="cpu", samples=4)
    with pytest.raises(ValueError, match="need a checkpoint"):
        build_method({"name": "auto", "samples": 2}, None)


def _jpeg_file(path):
    import skimage.data

    Image.fromarray(skimage.data.astronaut()[:40, :56]).save(path, quality=20)
    return path


def test_restore_cli_writes_draws_and_std_map(tmp_path, capsys):
    from jpegrestore.cli import main

    ckpt = tmp_path / "noisy.ckpt"
    write_stochastic_checkpoint(ckpt)
    source = _jpeg_file(tmp_path / "photo.jpg")
    out = tmp_path / "out"
    assert main(["restore", str(source), "-o", str(out), "--ckpt", str(ckpt), "--samples", "3", "--std-map",
                 "--seed", "7", "--device", "cpu", "-q"]) == 0
    draws = [np.asarray(Image.open(out / f"photo_s{k}.png"), dtype=np.float64) for k in range(3)]
    assert not np.array_equal(draws[0], draws[1])
    std_png = np.asarray(Image.open(out / "photo_std.png"), dtype=np.float64)
    assert std_png.shape == draws[0].shape[:2] and std_png.max() == 255
    assert "per-pixel std over 3 draws" in capsys.readouterr().err
    # same seed -> same draws
    again = tmp_path / "again"
    main(["restore", str(source), "-o", str(again), "--ckpt", str(ckpt), "--samples", "3", "--seed", "7",
          "--device", "cpu", "-q"])
    assert np.array_equal(np.asarray(Image.open(again / "photo_s2.png")), draws[2].astype(np.uint8))


def test_restore_cli_refuses_samples_for_a_deterministic_checkpoint(tmp_path, capsys):
    from jpegrestore.cli import main

    plain, _ = write_tiny_checkpoint(tmp_path / "plain.ckpt")
    source = _jpeg_file(tmp_path / "photo.jpg")
    assert main(["restore", str(source), "-o", str(tmp_path / "o"), "--ckpt", str(plain), "--samples", "2"]) == 1
    assert "deterministic method" in capsys.readouterr().err
