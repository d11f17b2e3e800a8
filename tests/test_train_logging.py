"""Loggers: the validation grid goes to TensorBoard / W&B (offline) as images, or to a PNG without them;
metrics reach the CSV log; runs work without any logger."""

from __future__ import annotations

import csv

import pytest

from conftest import TINY, run_train

QUICK = [*TINY, "model=qgac_joint"]


def test_tensorboard_receives_metrics_and_image_grid(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_train([*QUICK, "logger=many"], tmp_path)
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    assert "val/jpeg_restored_original" in events.Tags()["images"]
    assert {"val/psnr_q10", "val/psnr_jpeg_q10", "train/loss"} <= set(events.Tags()["scalars"])
    assert not (tmp_path / "images").exists()  # an image logger was present: no PNG fallback
    with open(tmp_path / "csv" / "metrics.csv") as handle:
        header = next(csv.reader(handle))
    assert {"val/psnr", "val/psnrb_q10", "val/ssim_jpeg_q10", "lr-Adam"} <= set(header)


def test_wandb_offline_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    metrics = run_train([*QUICK, "logger=wandb"], tmp_path)
    assert "val/psnr_q10" in metrics
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    images = list(runs[0].rglob("*.png"))
    assert images, "the validation grid should be stored with the offline run"


def test_no_logger_still_trains_and_saves_grid(tmp_path):
    metrics = run_train([*QUICK, "logger=none"], tmp_path)
    assert "val/psnr_q10" in metrics
    assert list((tmp_path / "images").glob("val_step*.png"))
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
