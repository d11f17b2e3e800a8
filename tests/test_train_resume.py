"""Resuming from last.ckpt continues at the saved step with the same optimizer state and LR, and ends on the
same weights as an uninterrupted run with the same seed (the data stream is a function of seed, epoch, index)."""

from __future__ import annotations

import lightning.pytorch as pl
import torch

from conftest import TINY, compose_train
from jpegrestore.tasks.runner import build

# 4 crops per epoch, batch 2: an epoch is 2 steps; validation (and last.ckpt) every 2 steps.
# StepLR halves the LR every 3 steps so the schedule state matters.
RESUME = [*TINY, "experiment=qgac_stage1", "model.scheduler.step_size=3", "trainer.val_check_interval=2"]


class StartRecorder(pl.Callback):
    """Remembers the step and learning rate at which fitting starts."""

    def on_train_start(self, trainer, pl_module):
        self.step = trainer.global_step
        self.lr = trainer.optimizers[0].param_groups[0]["lr"]
        self.exp_avg = [s["exp_avg"].clone() for s in trainer.optimizers[0].state.values()]


def _run(out, max_steps, ckpt_path=None):
    cfg = compose_train([*RESUME, f"trainer.max_steps={max_steps}"], out)
    datamodule, model, trainer = build(cfg)
    recorder = StartRecorder()
    trainer.callbacks.append(recorder)
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    return model, trainer, recorder


def test_resume_matches_uninterrupted_run(tmp_path):
    full_model, full_trainer, _ = _run(tmp_path / "full", 8)
    _, first_trainer, _ = _run(tmp_path / "first", 4)
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)
    assert saved["global_step"] == 4
    resumed_model, resumed_trainer, recorder = _run(tmp_path / "resumed", 8, ckpt_path=str(last))

    # Continues at step 4 with the saved optimizer state and the scheduled LR (1e-3 halved once at step 3).
    assert recorder.step == 4
    assert recorder.lr == first_trainer.optimizers[0].param_groups[0]["lr"] == 5e-4
    saved_exp_avg = [s["exp_avg"] for s in saved["optimizer_states"][0]["state"].values()]
    assert len(saved_exp_avg) == len(recorder.exp_avg) > 0
    assert all(torch.equal(a, b) for a, b in zip(saved_exp_avg, recorder.exp_avg))

    # Ends where the uninterrupted run ends.
    assert resumed_trainer.global_step == full_trainer.global_step == 8
    assert resumed_trainer.optimizers[0].param_groups[0]["lr"] == full_trainer.optimizers[0].param_groups[0]["lr"]
    full_state, resumed_state = full_model.net.state_dict(), resumed_model.net.state_dict()
    for key, value in full_state.items():
        assert torch.equal(value, resumed_state[key]), key
    # ... and training did move the weights (the comparison above is not vacuous).
    first_state = torch.load(last, weights_only=True)["state_dict"]
    assert any(not torch.equal(first_state[f"net.{k}"], v) for k, v in full_state.items())
