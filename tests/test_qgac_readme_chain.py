"""The QGAC stage 1 -> 2 -> 3 commands of docs/qgac.md run through train.py as written (sample data, tiny widths, a few
steps each): every stage trains with the statistics stage 1 measured, and stage 3 with the MINC texture network."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO, TINY
from jpegrestore.nn.qgac import DCTStats

pytestmark = pytest.mark.slow

#: tiny widths and few steps; trainer=cpu instead of the experiments' gpu
SMALL = [*TINY, "trainer.max_steps=4", "trainer.val_check_interval=2"]
TINY_D = ["model.discriminator.base_channels=8", "model.discriminator.num_layers=2"]


def _train_py(arguments: list[str], run_dir) -> subprocess.CompletedProcess:
    command = [sys.executable, "train.py", *arguments, *SMALL, f"hydra.run.dir={run_dir}", f"paths.log_dir={run_dir}"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def _carried(ckpt) -> tuple[DCTStats, dict]:
    checkpoint = torch.load(ckpt, weights_only=True)
    state = checkpoint["state_dict"]
    return DCTStats(state["net.stats_mean"], state["net.stats_std"]), checkpoint["jpegrestore"]


def test_readme_stage_commands_train_with_real_statistics(tmp_path, random_minc_vgg16):
    s1, s2, s3 = tmp_path / "s1", tmp_path / "s2", tmp_path / "s3"
    result = _train_py(["experiment=qgac_stage1", "data=sample"], s1)
    assert "computing the DCT statistics" in result.stdout + result.stderr
    measured = DCTStats.load(s1 / "dct_stats.json")
    assert not measured.is_prior()
    _train_py(["experiment=qgac_stage2", f"model.y_checkpoint={s1 / 'checkpoints' / 'last.ckpt'}"], s2)
    _train_py(["experiment=qgac_stage3", f"model.generator_checkpoint={s2 / 'checkpoints' / 'last.ckpt'}",
               f"model.vgg_weights={random_minc_vgg16}", *TINY_D], s3)
    for run, recipe in ((s1, "qgac_stage1"), (s2, "qgac_stage2"), (s3, "qgac_stage3")):
        stats, meta = _carried(run / "checkpoints" / "last.ckpt")
        assert meta["recipe"] == recipe
        assert stats.allclose(measured, rtol=1e-6), recipe  # Y, Cb and Cr from stage 1's training data
        assert meta["dct_stats"].startswith("computed from the training data"), meta["dct_stats"]
        assert meta["network"]["frequency_grouping"] == "isolated"
    assert meta["texture_network"] == "minc_vgg16"
    assert not (s2 / "dct_stats.json").exists() and not (s3 / "dct_stats.json").exists()  # computed once
