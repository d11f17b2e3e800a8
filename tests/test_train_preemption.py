"""Preemption: SIGTERM to a real training process saves checkpoints/interrupted.ckpt and exits cleanly;
`ckpt_path=last` resumes the newest run of the same experiment and ends on the weights of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import torch

from conftest import REPO, TINY
from jpegrestore.tasks.runner import newest_checkpoint

DUMP = "+callbacks.rank_weights._target_=jpegrestore.utils.callbacks.SaveRankWeights"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _command(logs, max_steps, *extra):
    overrides = [*TINY, "experiment=qgac_stage1", "task_name=preempt", f"paths.log_dir={logs}",
                 f"trainer.max_steps={max_steps}", "data.samples_per_epoch=8", *extra]
    return [sys.executable, "train.py", *overrides]


def test_sigterm_saves_and_ckpt_path_last_resumes(tmp_path):
    logs = tmp_path / "logs"
    process = subprocess.Popen(_command(logs, 100000), cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while newest_checkpoint(logs / "preempt") is None:  # last.ckpt after the first validation: training runs
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.time() < deadline, "training never wrote a checkpoint"
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    assert "interrupted by SIGTERM at step" in stdout
    interrupted = next(logs.rglob("interrupted.ckpt"))
    step = torch.load(interrupted, weights_only=False)["global_step"]
    assert step >= 2

    time.sleep(1.1)  # a new run directory (runs are named by the second)
    resumed = subprocess.run(
        _command(logs, step + 3, "ckpt_path=last", DUMP, f"+callbacks.rank_weights.dirpath={tmp_path}/resumed"),
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {interrupted}" in resumed.stderr + resumed.stdout
    full = subprocess.run(
        _command(tmp_path / "full_logs", step + 3, DUMP, f"+callbacks.rank_weights.dirpath={tmp_path}/full"),
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert full.returncode == 0, full.stderr[-3000:]
    a = torch.load(tmp_path / "resumed" / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "full" / "rank0.pt", weights_only=True)
    assert a["global_step"] == b["global_step"] == step + 3
    for key, value in b["parameters"].items():
        assert torch.equal(value, a["parameters"][key]), key


def test_ckpt_path_last_without_checkpoints_starts_fresh(tmp_path):
    result = subprocess.run(_command(tmp_path / "logs", 2, "ckpt_path=last"), cwd=REPO, env=ENV,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no checkpoint under" in result.stderr + result.stdout
    # a normal end removes the interrupt checkpoint and keeps last.ckpt
    assert not list((tmp_path / "logs").rglob("interrupted.ckpt"))
    assert list((tmp_path / "logs").rglob("last.ckpt"))
