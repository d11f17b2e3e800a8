"""experiment=ddpm_prior through train.py: trains, validates with the EMA weights, resumes exactly, runs under
trainer=ddp_sim with identical ranks, and its checkpoint and diffusers folder load through load_prior."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import TINY, compose_train, run_train
from jpegrestore.sampling.priors import linear_alphas_cumprod, load_prior
from jpegrestore.tasks.runner import build
from test_train_ddp import _assert_identical_ranks, _train_py

# 4 crops per epoch, batch 2: an epoch is 2 steps; validation (and last.ckpt) every 2 steps.
DDPM_TINY = [
    *[o for o in TINY if not o.startswith("model/network=")],
    "experiment=ddpm_prior_quick",
    "model/network=ddpm_unet_tiny",
    "data.val_batch_size=2",
    "model.sample_grid=0",
    "model.val_timesteps=[20,400]",
    "callbacks.ema.decay=0.5",
]


def _overrides(out: Path, *extra: str) -> list[str]:
    return [*DDPM_TINY, f"model.save_diffusers={out}/diffusers_prior", *extra]


def test_trains_validates_and_loads_as_a_prior(tmp_path: Path) -> None:
    metrics = run_train(_overrides(tmp_path), tmp_path)
    assert {"train/loss", "val/loss", "val/loss_t20", "val/loss_t400"} <= set(metrics)
    # val/loss is the mean over the validation timesteps of each one's loss
    assert metrics["val/loss"] == pytest.approx((metrics["val/loss_t20"] + metrics["val/loss_t400"]) / 2, rel=1e-6)
    last = tmp_path / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)
    assert saved["jpegrestore"]["recipe"] == "ddpm_prior"
    assert saved["jpegrestore"]["evaluation_method"] == "jpegrestore.evaluation.ddrm.DDRMJPEGMethod"
    assert "trained_on" not in saved["jpegrestore"]  # a prior is not tied to the JPEG qualities of the pipeline
    # state_dict holds the EMA weights, current_model_state the raw ones; they differ after training
    ema, raw = saved["state_dict"], saved["current_model_state"]
    assert ema.keys() == raw.keys() and any(not torch.equal(ema[k], raw[k]) for k in ema)

    prior = load_prior(last)
    torch.testing.assert_close(prior.alphas_cumprod, linear_alphas_cumprod(), rtol=1e-6, atol=1e-7)
    assert (prior.channels, prior.size_multiple) == (3, 2)
    loaded = dict(prior.eps_model.net.state_dict())
    assert all(torch.equal(loaded[k], ema[f"net.{k}"]) for k in loaded)

    # the diffusers folder written at the end holds the same (final, EMA) weights
    folder = load_prior(tmp_path / "diffusers_prior")
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([100])
    with torch.no_grad():
        torch.testing.assert_close(folder.eps_model(x, t), prior.eps_model(x, t))


def test_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    def run(out: Path, steps: int, ckpt: Path | None = None):
        cfg = compose_train(_overrides(out, f"trainer.max_steps={steps}", "model.save_diffusers=null"), out)
        datamodule, model, trainer = build(cfg)
        trainer.fit(model, datamodule=datamodule, ckpt_path=None if ckpt is None else str(ckpt))
        return model

    full = run(tmp_path / "full", 4)
    run(tmp_path / "first", 2)
    resumed = run(tmp_path / "resumed", 4, tmp_path / "first" / "checkpoints" / "last.ckpt")
    full_state, resumed_state = full.net.state_dict(), resumed.net.state_dict()  # EMA weights after fit
    assert all(torch.equal(v, resumed_state[k]) for k, v in full_state.items())
    first = torch.load(tmp_path / "first" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert any(not torch.equal(first[f"net.{k}"], v) for k, v in full_state.items())


@pytest.mark.slow
def test_ddp_sim_ranks_agree(tmp_path: Path) -> None:
    overrides = [*[o for o in _overrides(tmp_path) if not o.startswith("trainer=")], "trainer=ddp_sim",
                 "data.samples_per_epoch=8"]
    _train_py(overrides, tmp_path)
    _assert_identical_ranks(tmp_path, 2, ("net.down_blocks.",))
    assert load_prior(tmp_path / "checkpoints" / "last.ckpt").channels == 3


def test_results_line_without_per_quality_psnr() -> None:
    from jpegrestore.tasks.runner import format_results

    assert format_results({"val/loss": 0.25, "train/loss": 0.5}, 3) == "Validation after 3 steps: val/loss=0.25"
    assert format_results({"train/loss": 0.5}, 3) == "no validation metrics were logged"


def test_validation_loss_of_a_zero_prediction_is_the_noise_variance(tmp_path: Path) -> None:
    """A network that predicts eps = 0 scores E[noise^2] = 1 at every timestep: the validation loss is the mean
    squared epsilon error per element (2 validation images of 3 x 32 x 32: a standard deviation of ~0.018)."""
    cfg = compose_train(_overrides(tmp_path, "model.save_diffusers=null", "callbacks.ema=null"), tmp_path)
    datamodule, model, trainer = build(cfg)
    with torch.no_grad():
        for parameter in model.net.conv_out.parameters():
            parameter.zero_()
    trainer.validate(model, datamodule=datamodule, verbose=False)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    for t in (20, 400):
        assert metrics[f"val/loss_t{t}"] == pytest.approx(1.0, abs=0.08), t
    assert metrics["val/loss"] == pytest.approx((metrics["val/loss_t20"] + metrics["val/loss_t400"]) / 2, rel=1e-6)
