"""evaluate.py: the JPEG baseline on the sample set, a checkpoint rebuilt from itself, the report files."""

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio

from jpegrestore import jpeg

ROOT = Path(__file__).resolve().parents[1]
from checkpoint_helpers import write_tiny_checkpoint as _tiny_checkpoint


def _compose(overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="evaluate", overrides=overrides)


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# Independent references: libjpeg through Pillow, NumPy luma, scikit-image PSNR, all on uint8 arrays.
def _pillow_round_trip(array: np.ndarray, quality: int) -> np.ndarray:
    """uint8 [H, W, 3] -> Pillow's JPEG (4:2:0) decoded by Pillow, uint8 [H, W, 3]."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=quality, subsampling=2)
    return np.asarray(Image.open(buffer).convert("RGB"))


def _luma(array: np.ndarray) -> np.ndarray:
    """JFIF Y of uint8 [H, W, 3] in [0, 1], float64."""
    return (array / 255.0) @ np.array([0.299, 0.587, 0.114])


def _reference_metrics(original: np.ndarray, output: np.ndarray, quality: int) -> dict[str, float]:
    """psnr, psnr_y and consistency (RMSE in gray levels of the two JPEGs) of 8-bit ``output``."""
    difference = _pillow_round_trip(output, quality).astype(float) - _pillow_round_trip(original, quality)
    return {
        "psnr": peak_signal_noise_ratio(original, output, data_range=255),
        "psnr_y": peak_signal_noise_ratio(_luma(original), _luma(output), data_range=1.0),
        "consistency": float(np.sqrt(np.mean(difference**2))),
    }


def _summary_cells(summary: str, quality: int, label: str) -> list[float]:
    """Numbers in the summary row starting with ``label`` in the table of ``quality``."""
    section = summary.split(f"## Quality {quality} ")[1].split("## Quality")[0]
    row = next(line for line in section.splitlines() if line.startswith(f"| {label}"))
    return [float(cell) for cell in row.strip("|").split("|")[1:]]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """Two small PNGs (one with an odd size) cut from scikit-image photos."""
    import skimage.data

    folder = tmp_path_factory.mktemp("images")
    Image.fromarray(skimage.data.astronaut()[80:160, 200:296]).save(folder / "a.png")
    Image.fromarray(skimage.data.coffee()[100:171, 150:251]).save(folder / "b.png")
    return folder


def test_evaluate_py_jpeg_baseline_on_the_sample_set(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "evaluate.py", "method=jpeg", "qf=[10,40]", "progress=false", f"hydra.run.dir={out}"],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("metrics.csv", "metrics.json", "summary.md"):
        assert (out / name).is_file(), name
    panels = sorted(p.name for p in (out / "comparisons").glob("*.png"))
    assert panels == ["astronaut_q10.png", "astronaut_q40.png", "camera_q10.png", "camera_q40.png"]
    with Image.open(out / "comparisons" / "astronaut_q10.png") as panel:
        assert panel.width > 2 * 512 and panel.height > 512

    rows = _read_csv(out / "metrics.csv")
    assert [(r["image"], r["quality"], r["method"]) for r in rows] == [
        ("astronaut", "10", "jpeg"), ("camera", "10", "jpeg"), ("astronaut", "40", "jpeg"), ("camera", "40", "jpeg")]
    assert {r["y_convention"] for r in rows} == {"Y (JFIF full range)"}
    assert "lpips_alex" not in rows[0]  # unavailable here: no weights; reported instead
    # independent reference: libjpeg through Pillow (4:2:0) and scikit-image's PSNR
    import skimage.data

    for row in rows:
        original = getattr(skimage.data, row["image"])()
        original = original if original.ndim == 3 else np.repeat(original[..., None], 3, 2)
        buffer = io.BytesIO()
        Image.fromarray(original).save(buffer, format="JPEG", quality=int(row["quality"]), subsampling=2)
        decoded = np.asarray(Image.open(buffer).convert("RGB"))
        expected = _reference_metrics(original, decoded, int(row["quality"]))
        for name in ("psnr", "psnr_y", "consistency"):
            assert float(row[name]) == pytest.approx(expected[name], abs=1e-3), (row["image"], name)
        assert float(row["bpp"]) == pytest.approx(8 * len(buffer.getvalue()) / original.shape[0] / original.shape[1])

    summary = (out / "summary.md").read_text()
    assert "Y (JFIF full range)" in summary and "PSNR [RGB]" in summary
    assert "metrics on 8-bit rounded outputs" in summary and "capped at 100 dB" in summary
    assert "LPIPS (Alex): unavailable (missing" in summary
    assert "## Quality 10 (2 images)" in summary and "## Quality 40 (2 images)" in summary
    info = json.loads((out / "metrics.json").read_text())
    assert info["method"] == "jpeg" and info["qualities"] == [10, 40]
    assert info["metric_status"]["lpips_alex"].startswith("unavailable (missing")
    mean_q10 = np.mean([float(r["psnr"]) for r in rows if r["quality"] == "10"])
    assert info["means"]["jpeg"]["10"]["psnr"] == pytest.approx(mean_q10)
    assert len(info["per_image"]) == 4


def test_evaluate_rebuilds_a_checkpoint_and_reports_it_beside_jpeg(tiny_folder, tmp_path):
    from jpegrestore.evaluation import evaluate_config

    ckpt, net = _tiny_checkpoint(tmp_path / "tiny.ckpt")
    cfg = _compose([f"ckpt={ckpt}", "qf=[10,30]", f"data.source={tiny_folder}", "metrics=[psnr,psnr_y,consistency]",
                    "tile=0", "device=cpu", "progress=false", "comparisons=1"])
    result = evaluate_config(cfg, tmp_path / "out")
    assert result.method == "tiny_qgac"
    rows = _read_csv(tmp_path / "out" / "metrics.csv")
    assert len(rows) == 2 * 2 * 2  # images x qualities x (jpeg, model)
    assert {r["method"] for r in rows} == {"jpeg", "tiny_qgac"}
    # reference: the same network run directly on the exact JPEG of each image, rounded to 8 bits as the PNG
    # writer does; plain JPEG through Pillow; every metric recomputed with NumPy / scikit-image / Pillow
    metric_names = ("psnr", "psnr_y", "consistency")
    expected_means = {}
    for row in rows:
        quality = int(row["quality"])
        original = np.asarray(Image.open(tiny_folder / row["image"]).convert("RGB"))
        if row["method"] == "tiny_qgac":
            x = torch.from_numpy(original.copy()).permute(2, 0, 1)[None].float() / 255
            with torch.no_grad():
                restored = net(jpeg.encode(x, quality, rounding="exact"))[0].permute(1, 2, 0).numpy()
            output = np.floor(np.clip(restored, 0, 1) * 255 + 0.5).astype(np.uint8)
        else:
            output = _pillow_round_trip(original, quality)
        expected = _reference_metrics(original, output, quality)
        for name in metric_names:
            assert float(row[name]) == pytest.approx(expected[name], abs=1e-3), (row["image"], row["method"], name)
            expected_means.setdefault((row["method"], quality, name), []).append(expected[name])
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| Metric | JPEG | tiny_qgac | Gain |" in summary
    assert "metrics on 8-bit rounded outputs" in summary
    labels = {"psnr": "PSNR [RGB]", "psnr_y": "PSNR [Y (JFIF full range)]", "consistency": "Consistency RMSE"}
    for quality in (10, 30):
        for name in metric_names:
            base, model = (np.mean(expected_means[(m, quality, name)]) for m in ("jpeg", "tiny_qgac"))
            cells = _summary_cells(summary, quality, labels[name])
            assert cells == pytest.approx([base, model, model - base], abs=0.006), (quality, name)
    assert f"checkpoint: {ckpt}" in summary
    assert sorted(p.name for p in (tmp_path / "out" / "comparisons").iterdir()) == ["a_q10.png", "a_q30.png"]


def test_tiled_evaluation_matches_untiled_closely(tiny_folder, tmp_path):
    from jpegrestore.evaluation import evaluate_config

    ckpt, _ = _tiny_checkpoint(tmp_path / "tiny.ckpt")
    common = [f"ckpt={ckpt}", "qf=[20]", f"data.source={tiny_folder}", "metrics=[psnr]", "progress=false",
              "comparisons=0", "device=cpu"]
    untiled = evaluate_config(_compose([*common, "tile=0"]), tmp_path / "a")
    tiled = evaluate_config(_compose([*common, "tile=48", "tile_overlap=16"]), tmp_path / "b")
    for a, b in zip(untiled.rows, tiled.rows):
        assert a["image"] == b["image"]
        assert b["psnr"] == pytest.approx(a["psnr"], abs=0.05)


def test_method_checkpoint_without_ckpt_is_a_clear_error(tmp_path):
    from jpegrestore.evaluation import evaluate_config

    with pytest.raises(ValueError, match="ckpt"):
        evaluate_config(_compose(["method=checkpoint", "progress=false"]), tmp_path)


def test_bad_qualities_and_missing_folder_are_reported(tmp_path):
    from jpegrestore.evaluation import evaluate_config

    with pytest.raises(ValueError, match="qf"):
        evaluate_config(_compose(["qf=[0,10]", "progress=false"]), tmp_path)
    with pytest.raises(FileNotFoundError, match="no_such_folder"):
        evaluate_config(_compose([f"data.source={tmp_path / 'no_such_folder'}", "progress=false"]), tmp_path)


def test_exact_images_are_capped_so_means_stay_finite(tiny_folder, tmp_path):
    from jpegrestore.evaluation import Evaluator, JPEGDecode, eval_source

    folder = tmp_path / "images"
    folder.mkdir()
    Image.open(tiny_folder / "a.png").save(folder / "a.png")
    Image.fromarray(np.full((32, 48, 3), 128, np.uint8)).save(folder / "flat.png")  # JPEG codes it exactly
    evaluator = Evaluator(JPEGDecode(), metrics=["psnr", "psnrb_y", "ssim"], qualities=[50], device="cpu",
                          comparisons=0, progress=False)
    result = evaluator.run(eval_source(str(folder)), tmp_path / "out")
    flat = next(r for r in result.rows if r["image"] == "flat.png")
    assert flat["psnr"] == flat["psnrb_y"] == 100.0 and flat["ssim"] == pytest.approx(1.0)
    photo = next(r for r in result.rows if r["image"] == "a.png")
    original = np.asarray(Image.open(folder / "a.png").convert("RGB"))
    expected = peak_signal_noise_ratio(original, _pillow_round_trip(original, 50), data_range=255)
    assert photo["psnr"] == pytest.approx(expected, abs=1e-3) and photo["psnr"] < 100
    assert result.means["jpeg"][50]["psnr"] == pytest.approx((100 + expected) / 2, abs=1e-3)
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "rows at the PSNR ceiling of 100 dB: 1" in summary
    assert _summary_cells(summary, 50, "PSNR [RGB]") == pytest.approx([(100 + expected) / 2], abs=0.006)
    info = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert info["means"]["jpeg"]["50"]["psnrb_y"] is not None  # finite, so not nulled in the JSON
