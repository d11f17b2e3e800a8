"""trainer=ddp_sim (2 CPU processes over gloo) through train.py, QGAC stage 1 (automatic optimization): both
ranks end with identical weights. The GAN recipe is in test_train_ddp_gan.py."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from conftest import REPO, TINY


def _train_py(overrides: list[str], out) -> subprocess.CompletedProcess:
    """Run train.py with every rank dumping its final parameters to ``out/ranks``."""
    dump = ["+callbacks.rank_weights._target_=jpegrestore.utils.callbacks.SaveRankWeights",
            f"+callbacks.rank_weights.dirpath={out}/ranks"]
    command = [sys.executable, "train.py", *overrides, *dump, f"hydra.run.dir={out}", f"paths.log_dir={out}"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def _assert_identical_ranks(out, expected_step: int, prefixes: tuple[str, ...]) -> None:
    ranks = [torch.load(out / "ranks" / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [r["global_step"] for r in ranks] == [expected_step, expected_step]
    params = [r["parameters"] for r in ranks]
    assert params[0].keys() == params[1].keys()
    for prefix in prefixes:
        assert any(k.startswith(prefix) for k in params[0]), prefix
    for key in params[0]:
        assert torch.equal(params[0][key], params[1][key]), f"{key} differs between ranks"


def _assert_ddp_resume_is_exact(base: list[str], out, stop: int, end: int) -> None:
    """Train ``base`` to ``end`` steps, then to ``stop`` and on from its last.ckpt to ``end``: both ranks of the
    resumed run end with the uninterrupted run's weights."""
    _train_py([*base, f"trainer.max_steps={end}"], out / "full")
    _train_py([*base, f"trainer.max_steps={stop}"], out / "first")
    last = out / "first" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == stop
    _train_py([*base, f"trainer.max_steps={end}", f"ckpt_path={last}"], out / "resumed")
    for rank in (0, 1):
        full = torch.load(out / "full" / "ranks" / f"rank{rank}.pt", weights_only=True)
        resumed = torch.load(out / "resumed" / "ranks" / f"rank{rank}.pt", weights_only=True)
        assert full["global_step"] == resumed["global_step"] == end
        for key, value in full["parameters"].items():
            assert torch.equal(value, resumed["parameters"][key]), f"rank {rank}: {key}"


def _ddp_overrides(experiment: str) -> list[str]:
    # data.samples_per_epoch=8 with batch 2 on 2 ranks: 2 steps per epoch, each rank sees different crops.
    return [*[o for o in TINY if not o.startswith("trainer=")], f"experiment={experiment}", "trainer=ddp_sim",
            "data.samples_per_epoch=8"]


def test_ddp_sim_stage1_ranks_agree(tmp_path):
    result = _train_py(_ddp_overrides("qgac_stage1"), tmp_path)
    _assert_identical_ranks(tmp_path, 2, ("net.y_net.",))
    assert result.stdout.count("Held-out (val) PSNR") == 1  # rank 0 prints the table, rank 1 stays quiet
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    # dct_stats=null: rank 0 computed the DCT statistics at setup and both ranks normalize with them
    from jpegrestore.nn.qgac import DCTStats

    written = DCTStats.load(tmp_path / "dct_stats.json")
    for rank in (0, 1):
        buffers = torch.load(tmp_path / "ranks" / f"rank{rank}.pt", weights_only=True)["buffers"]
        assert DCTStats(buffers["net.stats_mean"], buffers["net.stats_std"]).allclose(written, rtol=1e-6), rank
    assert (result.stderr + result.stdout).count("computing the DCT statistics") == 1  # on rank 0 only
