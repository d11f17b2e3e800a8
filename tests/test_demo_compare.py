"""The demo's restore logic without a browser: outputs equal `jpegrestore restore`'s on every device, gray and
chroma layouts, clear errors naming the file, and the install hint when gradio is missing."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from checkpoint_helpers import write_tiny_checkpoint
from PIL import Image
from posterior_helpers import write_posterior_checkpoint

from jpegrestore import jpeg
from jpegrestore.cli import main
from jpegrestore.demo import INSTALL_COMMAND
from jpegrestore.demo.compare import BuildOptions, MethodBank, MethodSpec, compare, prepare_input, zoom

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _photo(height: int = 36, width: int = 44) -> np.ndarray:
    import skimage.data

    return skimage.data.astronaut()[120:120 + height, 200:200 + width].copy()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo_ckpts")
    return write_tiny_checkpoint(folder / "qgac.ckpt")[0], write_posterior_checkpoint(folder / "post.ckpt")


@pytest.mark.parametrize("device", DEVICES)
def test_compare_equals_restore(checkpoints, tmp_path, device):
    qgac, post = checkpoints
    Image.fromarray(_photo()).save(tmp_path / "clean.png")
    bank = MethodBank([MethodSpec("checkpoint", str(qgac)), MethodSpec("checkpoint", str(post))],
                      BuildOptions(device=device))
    prepared = prepare_input(tmp_path / "clean.png", tmp_path / "work", quality=20, layout="4:4:4")
    assert (prepared.layout, prepared.quality, prepared.exact_tables) == ("4:4:4", 20, True)
    results = compare(bank, bank.labels, prepared, tmp_path / "work", samples=2, seed=3)
    assert [r.label for r in results] == ["JPEG", *bank.labels]

    # The same JPEG written by Pillow (libjpeg's encoder), restored by the CLI.
    pillow_jpeg = tmp_path / "pillow.jpg"
    Image.fromarray(_photo()).save(pillow_jpeg, format="JPEG", quality=20, subsampling=0)
    assert np.array_equal(np.asarray(Image.open(pillow_jpeg)), np.asarray(Image.open(results[0].images[0])))
    assert main(["restore", str(pillow_jpeg), "-o", str(tmp_path / "cli" / "post.png"), "--ckpt", str(post),
                 "--samples", "2", "--std-map", "--seed", "3", "--device", device, "-q"]) == 0
    for k, path in enumerate(results[2].images):
        assert np.array_equal(np.asarray(Image.open(path)), np.asarray(Image.open(tmp_path / "cli" / f"post_s{k}.png")))
    assert np.array_equal(np.asarray(Image.open(results[2].std_map)),
                          np.asarray(Image.open(tmp_path / "cli" / "post_std.png")))


def test_gray_input_and_a_method_that_cannot_take_it(checkpoints, tmp_path):
    qgac, post = checkpoints
    Image.fromarray(_photo()).save(tmp_path / "clean.png")
    bank = MethodBank([MethodSpec("checkpoint", str(qgac)), MethodSpec("checkpoint", str(post))])
    prepared = prepare_input(tmp_path / "clean.png", tmp_path / "work", quality=25, layout="gray")
    results = compare(bank, bank.labels, prepared, tmp_path / "work")
    luma = Image.fromarray(_photo()).convert("L")  # Pillow's JFIF luma, as the page's gray layout
    pillow_jpeg = tmp_path / "gray.jpg"
    luma.save(pillow_jpeg, format="JPEG", quality=25)
    assert main(["restore", str(pillow_jpeg), "-o", str(tmp_path / "qgac.png"), "--ckpt", str(qgac), "-q"]) == 0
    restored = np.asarray(Image.open(results[1].images[0]))
    assert restored.ndim == 2 and np.array_equal(restored, np.asarray(Image.open(tmp_path / "qgac.png")))
    pixels, target = restored.astype(np.float64) / 255, np.asarray(luma).astype(np.float64) / 255
    assert results[1].metrics["psnr"] == pytest.approx(10 * np.log10(1 / np.mean((pixels - target) ** 2)), abs=2e-3)
    # the colour-only sampler fails on this input alone, with a message; the QGAC result stays
    assert results[2].images == [] and "expects images [B, 3, H, W]" in results[2].error


def test_zoom_is_the_same_region_magnified(tmp_path):
    image = np.arange(20 * 30 * 3, dtype=np.uint8).reshape(20, 30, 3)
    Image.fromarray(image).save(tmp_path / "a.png")
    assert np.array_equal(zoom(tmp_path / "a.png", 5, 2, 8, display=32), np.kron(image[2:10, 5:13], np.ones((4, 4, 1))))
    # clipped to the image: a region past the corner is moved inside it
    assert np.array_equal(zoom(tmp_path / "a.png", 28, 19, 8, display=8), image[12:20, 22:30])


def test_bad_inputs_are_named(checkpoints, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ValueError, match="notes.png"):
        prepare_input(text, tmp_path / "w")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.jpg: empty file"):
        prepare_input(empty, tmp_path / "w")
    truncated = tmp_path / "cut.jpg"
    Image.fromarray(_photo()).save(tmp_path / "full.jpg", quality=50)
    truncated.write_bytes((tmp_path / "full.jpg").read_bytes()[:300])
    with pytest.raises(OSError, match="cut.jpg"):
        prepare_input(truncated, tmp_path / "w")
    Image.fromarray(_photo(20, 20)).save(tmp_path / "small.png")
    with pytest.raises(ValueError, match="small.png is 20x20 but the JPEG full.jpg is 44x36"):
        prepare_input(tmp_path / "full.jpg", tmp_path / "w", reference=tmp_path / "small.png")
    Image.fromarray(_photo()).save(tmp_path / "clean.png")
    with pytest.raises(ValueError, match="quality must be an integer in 1..100"):
        prepare_input(tmp_path / "clean.png", tmp_path / "w", quality=0)
    with pytest.raises(ValueError, match="no method given"):
        MethodBank([])
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        MethodBank([MethodSpec("checkpoint", str(tmp_path / "missing.ckpt"))])
    qgac, _ = checkpoints
    bank = MethodBank([MethodSpec("checkpoint", str(qgac))] * 2)
    assert bank.labels == ["tiny_qgac · qgac.ckpt", "tiny_qgac · qgac.ckpt #2"]
    prepared = prepare_input(tmp_path / "full.jpg", tmp_path / "w")
    assert prepared.reference is None and prepared.quality == 50 and not prepared.compressed_here
    assert np.array_equal(jpeg.read(prepared.jpeg_path).y, jpeg.read(tmp_path / "full.jpg").y)
    results = compare(bank, bank.labels[:1], prepared, tmp_path / "w")
    assert results[1].metrics == {} and results[1].std_map is None


def test_demo_without_gradio_names_the_install_command(checkpoints, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio raises ImportError
    assert main(["demo", "--ckpt", str(checkpoints[0])]) == 1
    error = capsys.readouterr().err
    assert "needs gradio" in error and INSTALL_COMMAND in error


def test_page_helpers(tmp_path):
    pytest.importorskip("gradio", reason="gradio is not installed (see requirements-demo.txt)")
    import time

    from jpegrestore.demo.compare import MethodResult
    from jpegrestore.demo.page import metrics_table, new_request_folder

    made = []
    for _ in range(5):
        made.append(new_request_folder(tmp_path, keep=3))
        time.sleep(0.02)
    assert sorted(tmp_path.iterdir()) == sorted(made[-3:])
    table = metrics_table([MethodResult("JPEG", [tmp_path / "a.png"], 0.0, metrics={"psnr": 30.25}),
                           MethodResult("net", [], 0.0, error="a.jpg: gray input")])
    assert 'data-metric="psnr" data-value="30.25">30.25<' in table
    assert '<tr data-label="net"><td data-metric="method">net</td>' in table and "failed: a.jpg: gray input" in table


def test_ddrm_prior_equals_restore(tmp_path):
    from jpegrestore.sampling import write_tiny_ddpm

    prior = write_tiny_ddpm(tmp_path / "tiny-ddpm")
    Image.fromarray(_photo(24, 32)).save(tmp_path / "clean.png")
    bank = MethodBank([MethodSpec("ddrm_jpeg", str(prior))], BuildOptions(device="cpu"))
    assert bank.labels == ["ddrm_jpeg · tiny-ddpm"] and bank.stochastic["ddrm_jpeg · tiny-ddpm"]
    prepared = prepare_input(tmp_path / "clean.png", tmp_path / "work", quality=15)
    results = compare(bank, bank.labels, prepared, tmp_path / "work", samples=2, seed=4)
    assert main(["restore", str(prepared.jpeg_path), "-o", str(tmp_path / "cli" / "d.png"), "--method", "ddrm_jpeg",
                 "--prior", str(prior), "--samples", "2", "--std-map", "--seed", "4", "--device", "cpu", "-q"]) == 0
    for k, path in enumerate(results[1].images):
        assert np.array_equal(np.asarray(Image.open(path)), np.asarray(Image.open(tmp_path / "cli" / f"d_s{k}.png")))
    assert results[1].mean_std > 0
    # one draw: the method's own seed (restore --seed without --samples)
    one = compare(bank, bank.labels, prepared, tmp_path / "work1", samples=1, seed=4)[1]
    assert main(["restore", str(prepared.jpeg_path), "-o", str(tmp_path / "cli" / "one.png"), "--method",
                 "ddrm_jpeg", "--prior", str(prior), "--seed", "4", "--device", "cpu", "-q"]) == 0
    assert np.array_equal(np.asarray(Image.open(one.images[0])), np.asarray(Image.open(tmp_path / "cli" / "one.png")))
