"""CODiff stage 1 (CaVE) end to end on a tiny model: train.py with experiment=codiff_stage1, the three learning
modes, per-quality QF error against an independent recomputation, checkpoint rebuild, resume, and (slow)
trainer=ddp_sim."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY, compose_train, run_train
from jpegrestore.nn.cave import CaVE
from jpegrestore.checkpoints import checkpoint_recipe, load_network
from jpegrestore.tasks.runner import build

# The shared tiny overrides without the QGAC network, crop and quality settings: CODiff's quality mixture,
# 40 px compressed crops cut to 32 px at a shifted grid, validation at QF 5 and 10.
_REPLACED = ("model/network=", "data.crop_size=", "data.quality=", "data.val_qualities=")
CAVE_TINY = [
    *[o for o in TINY if not o.startswith(_REPLACED)],
    "experiment=codiff_stage1",
    "model/network=cave_tiny",
    "data.crop_size=40",
    "model.train_crop=32",
    "data.val_qualities=[5,10]",
    "model.optimizer.lr=1e-3",  # tiny model, few steps: make the updates visible
]


def _fit(overrides: list[str], out, max_steps: int = 2, ckpt_path: str | None = None):
    cfg = compose_train([*CAVE_TINY, *overrides, f"trainer.max_steps={max_steps}"], out)
    datamodule, model, trainer = build(cfg)
    initial = {k: v.detach().clone() for k, v in model.net.state_dict().items()}
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    return datamodule, model, trainer, initial


@pytest.fixture(scope="module")
def dual(tmp_path_factory):
    out = tmp_path_factory.mktemp("cave_dual")
    return out, *_fit([], out)


def test_paper_defaults_compose() -> None:
    cfg = compose_train(["experiment=codiff_stage1"])
    assert cfg.model.learning == "dual" and cfg.model.rec_weight == 1000.0
    assert cfg.model.optimizer.lr == 2e-5 and cfg.data.batch_size == 128 and cfg.trainer.max_steps == 200000
    assert cfg.model.train_crop == 256 and cfg.data.crop_size == 264 and cfg.model.shift_prob == 0.5
    assert cfg.data.quality._target_.endswith("CODiffQuality") and cfg.data.quality.uniform_prob == 0.25
    assert list(cfg.model.network.channels) == [64, 128, 256, 512] and cfg.model.network.blocks == 4


def test_dual_training_updates_both_heads_and_writes_a_cave_checkpoint(dual) -> None:
    out, _, model, trainer, initial = dual
    assert trainer.global_step == 2
    state = model.net.state_dict()
    for prefix in ("m_head.", "qf_pred.", "m_up1."):
        assert any(not torch.equal(state[k], initial[k]) for k in state if k.startswith(prefix)), prefix
    last = out / "checkpoints" / "last.ckpt"
    assert checkpoint_recipe(last) == "cave"
    net = load_network(last)
    assert isinstance(net, CaVE) and net.token_dim == 16 and not net.training
    x = torch.rand(2, 3, 40, 72)
    model.eval()
    with torch.no_grad():
        tokens, quality = net(x)
        expected_tokens, expected_quality = model.net(x)
    assert tokens.shape == (2, 2 * 3, 16)
    assert torch.equal(tokens, expected_tokens) and torch.equal(quality, expected_quality)


def test_evaluation_and_restore_refuse_a_cave_checkpoint(dual, tmp_path, capsys) -> None:
    from jpegrestore.cli import main
    from jpegrestore.evaluation.methods import checkpoint_method

    last = dual[0] / "checkpoints" / "last.ckpt"
    with pytest.raises(ValueError, match=r"last.ckpt is a cave checkpoint, not a JPEG restorer: .*codiff_stage2"):
        checkpoint_method(last)
    photo = tmp_path / "photo.jpg"
    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(photo, quality=50)
    assert main(["restore", str(photo), "-o", str(tmp_path / "out"), "--ckpt", str(last)]) != 0
    assert "not a JPEG restorer" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_validation_logs_qf_error_per_quality(dual) -> None:
    out, datamodule, model, trainer, _ = dual
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    net = load_network(out / "checkpoints" / "last.ckpt")
    errors: dict[int, list[float]] = {5: [], 10: []}
    with torch.no_grad():
        for batch in datamodule.val_dataloader():
            batch = datamodule.on_after_batch_transfer(batch, 0)
            predicted_qf = 100 - 100 * net(batch["input"])[1]  # independent of the task's helpers
            for q, p in zip(batch["quality"].tolist(), predicted_qf.tolist()):
                errors[q].append(p - q)
    for q in (5, 10):
        assert len(errors[q]) == 2  # the two val photos
        assert metrics[f"val/qf_mae_q{q}"] == pytest.approx(np.mean(np.abs(errors[q])), rel=1e-4)
        assert metrics[f"val/qf_mse_q{q}"] == pytest.approx(np.mean(np.square(errors[q])), rel=1e-4)
        assert np.isfinite(metrics[f"val/psnr_q{q}"]) and np.isfinite(metrics[f"val/psnr_jpeg_q{q}"])
    assert metrics["val/qf_mae"] == pytest.approx(np.mean(np.abs(errors[5] + errors[10])), rel=1e-4)


@pytest.mark.parametrize("learning, frozen", [("explicit", "m_up1."), ("implicit", "qf_pred.")])
def test_single_objective_modes_freeze_the_other_head(learning, frozen, tmp_path) -> None:
    _, model, trainer, initial = _fit([f"model.learning={learning}"], tmp_path)
    state = model.net.state_dict()
    trained = "qf_pred." if learning == "explicit" else "m_up1."
    assert all(torch.equal(state[k], initial[k]) for k in state if k.startswith(frozen)), frozen
    assert any(not torch.equal(state[k], initial[k]) for k in state if k.startswith(trained)), trained
    optimized = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    frozen_params = [p for n, p in model.net.named_parameters() if n.startswith(frozen)]
    assert frozen_params and not optimized & {id(p) for p in frozen_params}
    logged = trainer.callback_metrics
    assert ("train/rec_loss" in logged) == (learning == "implicit")
    assert ("train/qf_loss" in logged) == (learning == "explicit")


def test_training_uses_grid_shifted_crops(dual) -> None:
    _, datamodule, model, _, _ = dual
    batch = datamodule.on_after_batch_transfer(next(iter(datamodule.train_dataloader())), 0)
    assert batch["input"].shape[-1] == 40
    cropped = model.training_crops(batch)
    assert cropped["input"].shape[-2:] == (32, 32) and cropped["target"].shape[-2:] == (32, 32)


def test_train_crop_larger_than_the_data_crop_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(ValueError, match="data.crop_size"):
        _fit(["model.train_crop=48"], tmp_path)


class _StartRecorder(pl.Callback):
    def on_train_start(self, trainer, pl_module):
        self.step = trainer.global_step
        self.exp_avg = [s["exp_avg"].clone() for s in trainer.optimizers[0].state.values()]


def test_resume_matches_uninterrupted_run(tmp_path) -> None:
    common = ["trainer.val_check_interval=2"]
    _, full, full_trainer, _ = _fit(common, tmp_path / "full", max_steps=4)
    _fit(common, tmp_path / "first", max_steps=2)
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)
    assert saved["global_step"] == 2

    cfg = compose_train([*CAVE_TINY, *common, "trainer.max_steps=4"], tmp_path / "resumed")
    datamodule, resumed, trainer = build(cfg)
    recorder = _StartRecorder()
    trainer.callbacks.append(recorder)
    trainer.fit(resumed, datamodule=datamodule, ckpt_path=str(last))
    assert recorder.step == 2
    saved_exp_avg = [s["exp_avg"] for s in saved["optimizer_states"][0]["state"].values()]
    assert len(saved_exp_avg) == len(recorder.exp_avg) > 0
    assert all(torch.equal(a, b) for a, b in zip(saved_exp_avg, recorder.exp_avg))
    assert trainer.global_step == full_trainer.global_step == 4
    full_state, resumed_state = full.net.state_dict(), resumed.net.state_dict()
    for key, value in full_state.items():  # weights and BatchNorm statistics
        assert torch.equal(value, resumed_state[key]), key
    first_state = saved["state_dict"]
    assert any(not torch.equal(first_state[f"net.{k}"], v) for k, v in full_state.items())


def test_train_py_prints_the_reconstruction_table(tmp_path) -> None:
    metrics = run_train([*CAVE_TINY, "+trainer.fast_dev_run=true"], tmp_path)
    assert np.isfinite(metrics["train/loss"]) and np.isfinite(metrics["train/qf_loss"])
    assert "val/qf_mae_q5" in metrics and "val/psnr_q10" in metrics


@pytest.mark.slow  # two processes over gloo: about 40 s on 2 cores
def test_ddp_sim_ranks_agree(tmp_path) -> None:
    from test_train_ddp import _assert_identical_ranks, _train_py

    # 8 crops per epoch, batch 2 on 2 ranks: 2 steps, each rank sees different crops and grid shifts.
    overrides = [*[o for o in CAVE_TINY if not o.startswith("trainer=")], "trainer=ddp_sim",
                 "data.samples_per_epoch=8"]
    result = _train_py(overrides, tmp_path)
    _assert_identical_ranks(tmp_path, 2, ("net.m_head.", "net.qf_pred.", "net.m_tail."))
    assert result.stdout.count("Held-out (val) PSNR") == 1
    assert checkpoint_recipe(tmp_path / "checkpoints" / "last.ckpt") == "cave"


@pytest.mark.parametrize("shift_prob", [0.0, 0.5, 1.0])
def test_training_step_sees_grids_shifted_at_the_configured_rate(shift_prob) -> None:
    """The crops the training step feeds CaVE's encoder (40 px compressed crops cut to 32): at (0, 0) unless
    shifted, shifted at the configured rate over 200 draws, to offsets covering 0..8 on both axes."""
    from hydra.utils import instantiate

    from codiff_helpers import assert_grid_shifts_follow, crops_seen_by_training_step

    model = instantiate(compose_train([*CAVE_TINY, f"model.shift_prob={shift_prob}"]).model)
    offsets, shape = crops_seen_by_training_step(model, "encode", size=40)
    assert shape == (32, 32) and offsets.shape == (200, 2)
    assert_grid_shifts_follow(offsets, shift_prob, margin=8)
