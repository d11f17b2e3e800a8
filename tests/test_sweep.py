"""Quality sweep: sweep.csv numbers and real PNG plots, in process and through scripts/sweep_qf.py."""

import csv
import os
import subprocess
import sys
from pathlib import Path

from checkpoint_helpers import write_tiny_checkpoint

import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PLOTS = ("psnr_vs_quality.png", "ssim_vs_quality.png", "lpips_vs_quality.png", "psnr_gain_vs_quality.png",
         "rate_distortion_psnr_bpp.png")


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    import skimage.data

    folder = tmp_path_factory.mktemp("images")
    Image.fromarray(skimage.data.astronaut()[100:164, 180:260]).save(folder / "a.png")
    Image.fromarray(skimage.data.chelsea()[60:108, 100:164]).save(folder / "b.png")
    return folder


def _checkpoint(path: Path) -> Path:
    return write_tiny_checkpoint(path)[0]


def _check_plots(folder: Path) -> None:
    for name in PLOTS:
        with Image.open(folder / name) as image:
            image.load()
            assert image.format == "PNG"
            assert image.width > 300 and image.height > 200, name
            pixels = image.convert("L").getextrema()
            assert pixels[0] < pixels[1], f"{name} is blank"


def test_sweep_writes_csv_and_plots(tiny_folder, tmp_path):
    from hydra import compose, initialize_config_dir

    from jpegrestore.evaluation.sweep import run_sweep

    ckpt = _checkpoint(tmp_path / "tiny.ckpt")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="sweep_qf", overrides=[
            f"ckpt={ckpt}", f"data.source={tiny_folder}", "qf=[10,50,90]", "device=cpu", "progress=false"])
    assert list(cfg.qf) == [10, 50, 90] and cfg.task_name == "sweep_qf"
    result = run_sweep(cfg, tmp_path / "out")
    _check_plots(tmp_path / "out")
    with open(tmp_path / "out" / "sweep.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["method"], r["quality"]) for r in rows] == [
        ("jpeg", "10"), ("jpeg", "50"), ("jpeg", "90"), ("tiny_qgac", "10"), ("tiny_qgac", "50"), ("tiny_qgac", "90")]
    jpeg_rows, model_rows = rows[:3], rows[3:]
    psnr = [float(r["psnr"]) for r in jpeg_rows]
    bpp = [float(r["bpp"]) for r in jpeg_rows]
    assert psnr == sorted(psnr) and bpp == sorted(bpp)  # quality up: better and bigger
    for j, m in zip(jpeg_rows, model_rows):
        assert float(m["gain_psnr"]) == pytest.approx(float(m["psnr"]) - float(j["psnr"]))
        assert float(m["bpp"]) == pytest.approx(float(j["bpp"]))  # the model restores the same files
    per_image = [r for r in result.rows if r["method"] == "jpeg" and r["quality"] == 10]
    assert float(jpeg_rows[0]["psnr"]) == pytest.approx(sum(r["psnr"] for r in per_image) / 2)


def test_sweep_script_plain_jpeg(tiny_folder, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "scripts/sweep_qf.py", f"data.source={tiny_folder}", "qf=[20,80]", "progress=false",
         "metrics=[psnr,ssim,bpp]", f"hydra.run.dir={out}"],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    _check_plots(out)
    assert (out / "sweep.csv").is_file() and (out / "summary.md").is_file()
