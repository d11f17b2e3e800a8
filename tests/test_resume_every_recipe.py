"""Exact mid-epoch resume for every recipe (QGAC stage 1, also under ddp_sim, is in test_train_resume_midepoch.py
and stage 3 in test_train.py): a run stopped inside an epoch and resumed from its last.ckpt ends on the very
weights (generator, discriminator, EMA) of an uninterrupted run. Each epoch is 4 batches of 2 crops; validation, and with it last.ckpt, comes after
batch 3 of each epoch. The first run has the same config as the full one (schedules such as a cosine over
``trainer.max_steps`` must not change) and is stopped after that checkpoint, one batch before its epoch ends."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from codiff_helpers import write_cave_checkpoint, write_random_dists
from conftest import TINY, compose_train, run_train
from jpegrestore.tasks.runner import build
from posterior_helpers import POSTERIOR_TINY, TINY_CRITIC, write_random_vgg19
from test_codiff_train import QUIET
from test_train_cave import CAVE_TINY
from test_train_ddpm_prior import DDPM_TINY

MIDEPOCH = ["data.samples_per_epoch=8", "data.batch_size=2", "trainer.val_check_interval=3"]


def _codiff_stage2(root: Path, random_vgg16: Path) -> list[str]:
    sd = root / "sd"
    if not sd.exists():
        from jpegrestore.nn.codiff.pretrained import write_tiny_stable_diffusion

        write_tiny_stable_diffusion(sd, seed=0)
        write_cave_checkpoint(root / "cave.ckpt")
        write_random_dists(root / "dists", random_vgg16)
    return ["experiment=codiff_stage2_tiny", f"model.pretrained={sd}", f"model.cave_checkpoint={root / 'cave.ckpt'}",
            f"model.dists_weights={root / 'dists'}", *QUIET]


def _posterior_gan(root: Path, random_vgg16: Path) -> list[str]:
    mmse = root / "mmse" / "checkpoints" / "last.ckpt"
    if not mmse.exists():
        run_train([*POSTERIOR_TINY, "experiment=posterior_mmse"], root / "mmse")
        write_random_vgg19(root / "vgg19.pth")
    return [*POSTERIOR_TINY, *TINY_CRITIC, "experiment=posterior_gan", f"model.mmse_checkpoint={mmse}",
            f"model.vgg_weights={root / 'vgg19.pth'}"]


def _qgac_stage2(root: Path, random_vgg16: Path) -> list[str]:
    stage1 = root / "stage1" / "checkpoints" / "last.ckpt"
    if not stage1.exists():
        run_train([*TINY, "experiment=qgac_stage1"], root / "stage1")
    return [*TINY, "experiment=qgac_stage2", f"model.y_checkpoint={stage1}"]


# recipe -> (overrides given a scratch folder and a random VGG16, optimizer steps per batch)
RECIPES = {
    "quickstart": (lambda root, vgg: [*TINY, "experiment=quickstart"], 1),
    "qgac_stage2": (_qgac_stage2, 1),
    "codiff_stage1": (lambda root, vgg: list(CAVE_TINY), 1),
    "posterior_mmse": (lambda root, vgg: [*POSTERIOR_TINY, "experiment=posterior_mmse"], 1),
    "ddpm_prior": (lambda root, vgg: [*DDPM_TINY, "model.save_diffusers=null"], 1),
    "posterior_gan": (_posterior_gan, 2),
    "codiff_stage2": (_codiff_stage2, 2),
    # the discriminator's E_t reading: t and noise drawn in every step
    "codiff_stage2_random_t": (lambda root, vgg: [*_codiff_stage2(root, vgg), "model.discriminator.timestep=null"], 2),
}


class _StopAt(pl.Callback):
    """Stops training once ``global_step`` reaches ``step`` (after that step's validation and checkpoint)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def _fit(overrides: list[str], out: Path, max_steps: int, ckpt_path: Path | None = None, stop: int | None = None):
    cfg = compose_train([*overrides, *MIDEPOCH, f"trainer.max_steps={max_steps}"], out)
    datamodule, model, trainer = build(cfg)
    if stop is not None:
        trainer.callbacks.append(_StopAt(stop))
    trainer.fit(model, datamodule=datamodule, ckpt_path=None if ckpt_path is None else str(ckpt_path))
    return model, trainer


@pytest.mark.parametrize("recipe", RECIPES)  # 2-12 s each on 2 cores
def test_midepoch_resume_is_bit_identical(recipe, tmp_path, random_vgg16):
    make_overrides, steps_per_batch = RECIPES[recipe]
    overrides = make_overrides(tmp_path / "inputs", random_vgg16)
    stop, end = 3 * steps_per_batch, 6 * steps_per_batch  # after batch 3 of epoch 0; batch 2 of epoch 1

    full, full_trainer = _fit(overrides, tmp_path / "full", end)
    _fit(overrides, tmp_path / "first", end, stop=stop)
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=False)
    assert saved["global_step"] == stop
    loops = saved["loops"]["fit_loop"]
    assert loops["epoch_loop.batch_progress"]["current"]["completed"] == 3, "the first run did not stop mid-epoch"
    assert loops["state_dict"]["combined_loader"], "the loader position is not in the checkpoint"

    resumed, resumed_trainer = _fit(overrides, tmp_path / "resumed", end, last)
    assert resumed_trainer.global_step == full_trainer.global_step == end
    full_state, resumed_state = full.state_dict(), resumed.state_dict()
    assert full_state.keys() == resumed_state.keys()
    for key, value in full_state.items():
        assert torch.equal(value, resumed_state[key]), f"{recipe}: {key}"
    moved = [k for k, v in full_state.items() if k in saved["state_dict"] and not torch.equal(saved["state_dict"][k], v)]
    assert moved, f"{recipe}: training after the stop changed nothing, so the comparison proves nothing"
