"""The DCT-statistics command and the network-interpolation command."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from hydra.utils import instantiate

from conftest import REPO, TINY, compose_train, run_train
from jpegrestore.nn.qgac import DCTStats
from jpegrestore.tasks.dct_stats import compute_dct_stats
from jpegrestore.utils import asset_path

SMALL_DATA = ["data.crop_size=32", "data.batch_size=3", "data.samples_per_epoch=6", "data.quality=[10,50]"]


def test_dct_stats_match_direct_computation(tmp_path):
    cfg = compose_train(SMALL_DATA, tmp_path)
    stats = compute_dct_stats(instantiate(cfg.data), max_batches=2, min_std=1e-6)
    # Independent: the same two batches, dequantized and reduced with torch directly.
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    planes = {0: [], 1: [], 2: []}
    for i, batch in enumerate(datamodule.train_dataloader()):
        if i == 2:
            break
        coeffs = datamodule.on_after_batch_transfer(batch, 0)["coeffs"]
        for c, plane in enumerate((coeffs.y, coeffs.cb, coeffs.cr)):
            planes[c].append((plane.double() * coeffs.qt[:, c, None, None].double()).reshape(-1, 8, 8))
    for c in range(3):
        blocks = torch.cat(planes[c])
        assert torch.allclose(stats.mean[c], blocks.mean(0), atol=1e-6)
        assert torch.allclose(stats.std[c], blocks.std(0, unbiased=False).clamp(min=1e-6), atol=1e-6)
    assert stats.mean[0, 0, 0] < 0  # level-shifted DC of these photos sits below mid-grey
    assert stats.std[0, 0, 0] > stats.std[0, 7, 7]


def test_dct_stats_command_writes_loadable_file(tmp_path):
    out = tmp_path / "stats.json"
    result = subprocess.run(
        [sys.executable, "-m", "jpegrestore.tasks.dct_stats", *SMALL_DATA, "max_batches=1", f"out={out}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    stats = DCTStats.load(out)
    assert stats.std.min() >= 1.0  # the default floor


def test_dct_stats_rejects_unknown_file_type(tmp_path):
    from omegaconf import OmegaConf

    from jpegrestore.tasks.dct_stats import run

    with pytest.raises(ValueError, match="x.txt"):
        run(OmegaConf.create({"out": str(tmp_path / "x.txt"), "data": {}}))


def test_packaged_sample_stats_are_plausible():
    stats = DCTStats.load(asset_path("qgac_dct_stats_sample.json"))
    assert stats.std.min() >= 1.0
    assert 200 < stats.std[0, 0, 0] < 800  # Y DC spread of 8-bit photos (Flickr2K: ~496)
    assert -300 < stats.mean[0, 0, 0] < 100


def test_interpolate_command(tmp_path):
    from jpegrestore.checkpoints import load_network
    from jpegrestore.tasks.interpolate import main

    run_train([*TINY, "model=qgac_joint", "seed=1"], tmp_path / "a")
    run_train([*TINY, "model=qgac_joint", "seed=2"], tmp_path / "b")
    a, b = tmp_path / "a" / "checkpoints" / "last.ckpt", tmp_path / "b" / "checkpoints" / "last.ckpt"
    main([str(a), str(b), str(tmp_path / "mix.ckpt"), "--alpha", "0.25"])
    mix, net_a, net_b = (load_network(p).state_dict() for p in (tmp_path / "mix.ckpt", a, b))
    for key in mix:
        assert torch.allclose(mix[key], 0.75 * net_a[key] + 0.25 * net_b[key], atol=1e-6), key
    with pytest.raises(ValueError, match="alpha"):
        main([str(a), str(b), str(tmp_path / "bad.ckpt"), "--alpha", "1.5"])
