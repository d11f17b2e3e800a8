"""Training on a folder that holds corrupt, truncated, CMYK, 16-bit, tiny and non-image files: the run
finishes, skips exactly those files and reports how many it skipped."""

from __future__ import annotations

import logging

import numpy as np
from PIL import Image

from conftest import TINY, run_train


def _photo(seed: int, size=(48, 48)) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, size[0] * size[1] * 3).reshape(size[0], size[1], 3)
    return Image.fromarray(np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8))


def _make_folder(root) -> int:
    """Three good images plus one bad file per kind. -> number of bad files."""
    root.mkdir(parents=True)
    for i in range(3):
        _photo(i).save(root / f"good{i}.png")
    _photo(10).save(root / "full.jpg", quality=90)
    data = (root / "full.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "full.jpg").unlink()
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 50)
    (root / "notes.jpg").write_text("this is not an image")
    _photo(11).convert("CMYK").save(root / "cmyk.jpg")
    Image.fromarray(np.full((48, 48), 40000, dtype=np.uint16)).save(root / "deep16.png")
    _photo(12, size=(16, 16)).save(root / "tiny.png")
    return 6


def test_folder_with_bad_files_trains_and_reports_skips(tmp_path, caplog):
    train_dir, val_dir = tmp_path / "train", tmp_path / "val"
    bad = _make_folder(train_dir)
    val_dir.mkdir()
    _photo(20).save(val_dir / "val0.png")
    with caplog.at_level(logging.INFO):
        metrics = run_train([*TINY, "model=qgac_joint", "data=folder", f"data.train_source={train_dir}",
                             f"data.val_source={val_dir}", "data.num_workers=0"], tmp_path / "run")
    assert metrics["data/skipped_files"] == bad
    assert np.isfinite(metrics["train/loss"]) and "val/psnr_q10" in metrics
    summary = " ".join(r.getMessage() for r in caplog.records if "skipped" in r.getMessage())
    assert f"skipped {bad} of {bad + 3} files" in summary
    for reason in ("truncated", "cmyk", "16-bit", "smaller than crop"):
        assert reason in summary, reason
