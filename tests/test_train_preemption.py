"""Preemption: SIGTERM to a real training process saves checkpoints/interrupted.ckpt and exits cleanly;
`ckpt_path=last` resumes the newest run of the same experiment and ends on the weights of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from conftest import REPO, TINY, compose_train
from jpegrestore.tasks.runner import build, newest_checkpoint

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


class _SignalAt(pl.Callback):
    """Sends this process SIGTERM at the end of the batch (``hook="batch"``) or epoch (``"epoch"``) that reaches
    ``step``; Lightning's handler, installed during fit, records it."""

    def __init__(self, step: int, hook: str) -> None:
        self.step, self.hook = step, hook

    def _signal(self, trainer: pl.Trainer, hook: str) -> None:
        if hook == self.hook and trainer.global_step == self.step and not trainer.received_sigterm:
            os.kill(os.getpid(), signal.SIGTERM)

    def on_train_batch_end(self, trainer, *args) -> None:
        self._signal(trainer, "batch")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._signal(trainer, "epoch")


def _fit_in_process(overrides, out, max_steps, ckpt_path=None, callback=None):
    cfg = compose_train([*overrides, f"trainer.max_steps={max_steps}"], out)
    datamodule, model, trainer = build(cfg)
    if callback is not None:
        trainer.callbacks.insert(0, callback)  # before the checkpoint callbacks
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    except SIGTERMException:
        assert callback is not None, "interrupted without a signal"
    return model


# 8 crops, batch 2: 4 batches per epoch. Validation every 3 batches (not after the last one) or every 2 (after it).
@pytest.mark.parametrize("hook, step, val_every", [
    ("batch", 2, 3),  # mid-epoch: Lightning's own stop at the batch end
    ("batch", 4, 3),  # after an epoch's last batch, no validation follows: stop at the epoch's end
    ("batch", 4, 2),  # after an epoch's last batch, validation follows: stop after it
    ("epoch", 4, 3),  # during the epoch's end hooks
    ("batch", 8, 2),  # the second epoch's last batch
])
def test_signal_anywhere_in_an_epoch_resumes_exactly(tmp_path, hook, step, val_every):
    """Lightning alone resumes a SIGTERM at an epoch's last batch one epoch too far (it counts the epoch as
    completed before it stops); PreemptionCheckpoint stops there before that happens."""
    overrides = [*TINY, "experiment=qgac_stage1", "data.samples_per_epoch=8", f"trainer.val_check_interval={val_every}"]
    _fit_in_process(overrides, tmp_path / "first", 100000, callback=_SignalAt(step, hook))
    interrupted = tmp_path / "first" / "checkpoints" / "interrupted.ckpt"
    saved = torch.load(interrupted, weights_only=False)
    assert saved["global_step"] == step and saved["epoch"] == (step - 1) // 4
    resumed = _fit_in_process(overrides, tmp_path / "resumed", step + 3, str(interrupted))
    full = _fit_in_process(overrides, tmp_path / "full", step + 3)
    for key, value in full.net.state_dict().items():
        assert torch.equal(value, resumed.net.state_dict()[key]), key
