"""`jpegrestore restore` on real Pillow-written files; `--project` consistency; bad files; `weights`."""

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

from checkpoint_helpers import write_tiny_checkpoint

import numpy as np
import pytest
import torch
from PIL import Image, JpegImagePlugin

from jpegrestore import jpeg
from jpegrestore.cli import main


def _tiny_checkpoint(path: Path) -> Path:
    return write_tiny_checkpoint(path)[0]


def _photo(height=75, width=101) -> np.ndarray:
    """uint8 [H, W, 3], values kept in 20..235 so every JPEG bin is reachable without clipping."""
    import skimage.data

    array = skimage.data.astronaut()[100:100 + height, 150:150 + width].astype(np.float64)
    return (20 + array * (215 / 255)).round().astype(np.uint8)


# (file name, Pillow save options); quality <= 75 where projection is exact
CUSTOM_LUMA = [(i % 7) * 3 + 8 for i in range(64)]
CUSTOM_CHROMA = [min(99, 12 + i) for i in range(64)]
FILES = {
    "q50_420.jpg": dict(quality=50, subsampling=2),
    "q40_444.jpg": dict(quality=40, subsampling=0),
    "q30_gray.jpg": dict(quality=30, gray=True),
    "q60_progressive.jpg": dict(quality=60, progressive=True, subsampling=2),
    "custom_table.jpg": dict(qtables=[CUSTOM_LUMA, CUSTOM_CHROMA], subsampling=2),
    "q50_422.jpg": dict(quality=50, subsampling=1),
}


@pytest.fixture(scope="module")
def jpeg_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("jpegs")
    photo = _photo()
    for name, options in FILES.items():
        options = dict(options)
        image = Image.fromarray(photo)
        if options.pop("gray", False):
            image = image.convert("L")
        image.save(folder / name, format="JPEG", **options)
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return _tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt")


def _pillow_reencode(png: Path, original: Path) -> jpeg.Coefficients:
    """Re-encode PNG pixels with Pillow, using the original file's own tables and subsampling; read them back."""
    with Image.open(original) as source:
        tables = source.quantization
        options = {"qtables": tables}
        if source.mode == "RGB":
            options["subsampling"] = JpegImagePlugin.get_sampling(source)
    buffer = io.BytesIO()
    Image.open(png).save(buffer, format="JPEG", **options)
    path = png.with_suffix(".reencoded.jpg")
    path.write_bytes(buffer.getvalue())
    return jpeg.read(path)


def test_restore_writes_pngs_of_the_right_size_and_projection_is_consistent(jpeg_files, checkpoint, tmp_path, capsys):
    inputs = [jpeg_files / name for name in FILES]
    status = main(["restore", *map(str, inputs), "-o", str(tmp_path / "out"), "--ckpt", str(checkpoint),
                   "--project", "--tile", "64", "--tile-overlap", "16", "--device", "cpu", "--quiet"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "q50_422.jpg" in captured.err and "4:2:2" in captured.err  # the QGAC fallback is announced
    for source in inputs:
        png = tmp_path / "out" / f"{source.stem}.png"
        with Image.open(source) as original, Image.open(png) as restored:
            assert restored.size == original.size == (101, 75)
            assert restored.mode == ("L" if original.mode == "L" else "RGB")
        want = jpeg.read(source)
        got = _pillow_reencode(png, source)
        assert got.subsampling == want.subsampling
        for a, b in zip(got.components(), want.components()):
            assert torch.equal(a, b), f"{source.name}: projected output does not re-encode to the input"


def test_restore_without_projection_changes_pixels(jpeg_files, checkpoint, tmp_path):
    source = jpeg_files / "q50_420.jpg"
    out = tmp_path / "restored.png"
    assert main(["restore", str(source), "-o", str(out), "--ckpt", str(checkpoint), "--tile", "0", "-q"]) == 0
    restored = np.asarray(Image.open(out)).astype(int)
    decoded = np.asarray(Image.open(source).convert("RGB")).astype(int)  # libjpeg through Pillow
    assert restored.shape == decoded.shape
    assert 0 < np.abs(restored - decoded).mean() < 10
    # the PNG holds the network output rounded half up to 8 bits: the image evaluate.py scores (quantize_8bit)
    from jpegrestore.checkpoints import load_network

    with torch.no_grad():
        output = load_network(checkpoint)(jpeg.read(source))[0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(restored, np.floor(np.clip(output, 0, 1) * 255 + 0.5))


def test_a_corrupt_file_is_named_and_the_others_are_restored(jpeg_files, checkpoint, tmp_path, capsys):
    good = jpeg_files / "q50_420.jpg"
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[:600])
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not a jpeg at all")
    out = tmp_path / "out"
    status = main(["restore", str(truncated), str(good), str(garbage), str(tmp_path / "missing.jpg"),
                   "-o", str(out), "--ckpt", str(checkpoint), "-q"])
    err = capsys.readouterr().err
    assert status == 1
    for name in ("truncated.jpg", "garbage.jpg", "missing.jpg"):
        assert name in err
    assert (out / "q50_420.png").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["q50_420.png"]


def test_missing_checkpoint_is_a_clear_error(jpeg_files, tmp_path, capsys):
    status = main(["restore", str(jpeg_files / "q40_444.jpg"), "-o", str(tmp_path), "--ckpt",
                   str(tmp_path / "nope.ckpt")])
    assert status == 1
    assert "nope.ckpt" in capsys.readouterr().err


def test_without_checkpoint_the_output_is_the_libjpeg_decoding(jpeg_files, tmp_path):
    source = jpeg_files / "q40_444.jpg"
    assert main(["restore", str(source), "-o", str(tmp_path), "-q"]) == 0
    ours = np.asarray(Image.open(tmp_path / "q40_444.png"))
    assert np.array_equal(ours, np.asarray(Image.open(source).convert("RGB")))


def test_weights_command_reports_found_and_missing_files(tmp_path, monkeypatch, capsys):
    """Files placed by hand in $JPEGRESTORE_WEIGHTS and the torch hub cache are listed with their paths."""
    for var in ("XDG_CACHE_HOME", "HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    env_dir = tmp_path / "weights"
    env_dir.mkdir()
    monkeypatch.setenv("JPEGRESTORE_WEIGHTS", str(env_dir))
    (env_dir / "alexnet-owt-7be5be79.pth").write_bytes(b"")
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / "vgg16-397923af.pth").write_bytes(b"")

    assert main(["weights"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines[1:] if line.strip() and not line.startswith("searched")]
    found = {row[0]: row[-1] for row in rows}
    assert found["lpips_alex"] == str(env_dir / "alexnet-owt-7be5be79.pth")
    assert found["vgg16"] == found["lpips_vgg"] == str(hub / "vgg16-397923af.pth")
    assert found["dists"] == "MISSING"  # its VGG is there, its own dists_weights.pt is not
    assert found["fid"] == found["vgg19"] == "MISSING"
    assert "alexnet-owt-7be5be79.pth" in next(line for line in lines if line.startswith("lpips_alex"))
    assert f"$JPEGRESTORE_WEIGHTS ({env_dir})" in lines[-1] and str(hub) in lines[-1]


def test_console_script_smoke(jpeg_files, tmp_path):
    script = shutil.which("jpegrestore", path=str(Path(sys.executable).parent)) or shutil.which("jpegrestore")
    command = [script] if script else [sys.executable, "-m", "jpegrestore"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([*command, "restore", str(jpeg_files / "q30_gray.jpg"), "-o", str(tmp_path / "o")],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "o" / "q30_gray.png") as image:
        assert image.mode == "L" and image.size == (101, 75)
