"""Exact resume from any step: the training loader's position is saved in every checkpoint (torchdata's
StatefulDataLoader, which Lightning saves and restores), so a run stopped mid-epoch and resumed ends on the very
weights of an uninterrupted run, in one process and under trainer=ddp_sim."""

from __future__ import annotations

import torch

from conftest import TINY, compose_train
from jpegrestore.tasks.runner import build
from test_train_ddp import _assert_ddp_resume_is_exact, _ddp_overrides

# 8 crops per epoch, batch 2: an epoch is 4 steps; last.ckpt every 3 steps, so steps 3 and 6 are mid-epoch.
MIDEPOCH = [*TINY, "experiment=qgac_stage1", "model.scheduler.step_size=3", "trainer.val_check_interval=3",
            "data.samples_per_epoch=8"]


def _fit(out, max_steps, ckpt_path=None):
    cfg = compose_train([*MIDEPOCH, f"trainer.max_steps={max_steps}"], out)
    datamodule, model, trainer = build(cfg)
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    return model


def test_midepoch_resume_is_bit_identical(tmp_path):
    full = _fit(tmp_path / "full", 10)
    _fit(tmp_path / "first", 6)
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=False)
    assert saved["global_step"] == 6
    assert saved["loops"]["fit_loop"]["state_dict"]["combined_loader"], "the loader position is not in the checkpoint"
    resumed = _fit(tmp_path / "resumed", 10, str(last))
    full_state, resumed_state = full.net.state_dict(), resumed.net.state_dict()
    for key, value in full_state.items():
        assert torch.equal(value, resumed_state[key]), key


def test_midepoch_resume_under_ddp_sim(tmp_path):
    # 2 ranks x batch 2 over 12 crops: an epoch is 3 steps; last.ckpt every 2 steps (step 2 and 4 are mid-epoch).
    base = [*_ddp_overrides("qgac_stage1"), "data.samples_per_epoch=12", "trainer.val_check_interval=2"]
    _assert_ddp_resume_is_exact(base, tmp_path, stop=4, end=5)
