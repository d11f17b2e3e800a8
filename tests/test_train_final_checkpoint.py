"""A run always ends with checkpoints/last.ckpt at its final step, whatever max_steps, max_epochs and the validation
interval are, and a run resumed from that file continues exactly; CODiff's lora/ files agree with it.

Runs go through train.py's path (compose conf/train.yaml, jpegrestore.tasks.runner.train) with tiny widths. With
TINY an epoch is 2 batches of 2 crops."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import TINY, compose_train, run_train
from jpegrestore.checkpoints import load_network
from jpegrestore.tasks.runner import build

STAGE1 = [*TINY, "experiment=qgac_stage1", "model.scheduler.step_size=3"]


def _last(out: Path) -> dict:
    path = out / "checkpoints" / "last.ckpt"
    assert path.is_file(), f"no {path}"
    return torch.load(path, weights_only=False)


def _fit(overrides: list[str], out: Path, ckpt_path: Path | None = None):
    """Fit as train.py does (build from the composed config), returning the module and the trainer."""
    datamodule, model, trainer = build(compose_train(overrides, out))
    trainer.fit(model, datamodule=datamodule, ckpt_path=None if ckpt_path is None else str(ckpt_path))
    return model, trainer


def _assert_holds_final_weights(checkpoint: dict, model: torch.nn.Module) -> None:
    state = checkpoint["state_dict"]
    for key, value in model.net.state_dict().items():
        assert torch.equal(state[f"net.{key}"], value), key


@pytest.mark.parametrize(("max_steps", "val_every"), [(7, 5), (3, 10)])
def test_iteration_based_run_ends_with_last_ckpt_at_its_final_step(tmp_path, max_steps, val_every):
    out = tmp_path / "run"
    run_train([*STAGE1, f"trainer.max_steps={max_steps}", f"trainer.val_check_interval={val_every}"], out)
    saved = _last(out)
    assert saved["global_step"] == max_steps
    assert load_network(out / "checkpoints" / "last.ckpt") is not None  # restore / evaluate.py can load it


def test_epoch_based_run_ends_with_last_ckpt_at_its_final_step(tmp_path):
    # 3 epochs of 2 batches, validation every 5th epoch: never validated during fitting.
    overrides = [*STAGE1, "trainer.max_steps=-1", "trainer.max_epochs=3", "trainer.val_check_interval=1.0",
                 "trainer.check_val_every_n_epoch=5"]
    model, trainer = _fit(overrides, tmp_path / "run")
    saved = _last(tmp_path / "run")
    assert trainer.global_step == saved["global_step"] == 6
    _assert_holds_final_weights(saved, model)


@pytest.mark.parametrize("first_steps", [pytest.param(3, marks=pytest.mark.slow), 4])  # mid-epoch / epoch's end
def test_run_resumed_from_its_final_last_ckpt_continues_exactly(tmp_path, first_steps):
    base = [*STAGE1, "trainer.val_check_interval=10"]
    full, full_trainer = _fit([*base, "trainer.max_steps=7"], tmp_path / "full")
    first, _ = _fit([*base, f"trainer.max_steps={first_steps}"], tmp_path / "first")
    saved = _last(tmp_path / "first")
    assert saved["global_step"] == first_steps
    _assert_holds_final_weights(saved, first)

    resumed, resumed_trainer = _fit([*base, "trainer.max_steps=7"], tmp_path / "resumed",
                                    tmp_path / "first" / "checkpoints" / "last.ckpt")
    assert resumed_trainer.global_step == full_trainer.global_step == 7
    assert _last(tmp_path / "resumed")["global_step"] == 7
    for key, value in full.net.state_dict().items():
        assert torch.equal(value, resumed.net.state_dict()[key]), key
    assert any(not torch.equal(saved["state_dict"][f"net.{k}"], v) for k, v in full.net.state_dict().items())


@pytest.mark.slow  # a tiny Stable Diffusion run
def test_codiff_lora_files_agree_with_last_ckpt(tmp_path, random_vgg16):
    from safetensors.torch import load_file

    from codiff_helpers import write_cave_checkpoint
    from jpegrestore.nn.codiff.generator import EXTRA_WEIGHTS_FILE, UNET_ADAPTERS, UNET_LORA_FILE
    from jpegrestore.nn.codiff.lora import merged_adapter_state_dict
    from jpegrestore.nn.codiff.pretrained import write_tiny_stable_diffusion
    from test_codiff_train import QUIET

    sd = write_tiny_stable_diffusion(tmp_path / "sd", seed=0)
    cave = write_cave_checkpoint(tmp_path / "cave.ckpt")
    out = tmp_path / "run"
    # Two optimizer steps per batch: max_steps=3 ends after 2 batches at step 4, before any validation.
    run_train(["experiment=codiff_stage2_tiny", f"model.pretrained={sd}", f"model.cave_checkpoint={cave}",
               "model.dists_weight=0", *QUIET, "trainer.max_steps=3", "trainer.val_check_interval=10"], out)
    saved = _last(out)
    assert saved["global_step"] == 4

    network = load_network(out / "checkpoints" / "last.ckpt")
    extra = load_file(out / "lora" / EXTRA_WEIGHTS_FILE)
    assert torch.equal(extra["proj.weight"], network.proj.weight)
    assert torch.equal(extra["unet_conv_in.weight"], network.unet.conv_in.get_base_layer().weight)
    lora = load_file(out / "lora" / UNET_LORA_FILE)
    expected = merged_adapter_state_dict(network.unet, UNET_ADAPTERS)
    assert len(lora) == len(expected) > 0
    for key, value in expected.items():
        assert torch.equal(lora[f"unet.{key}"], value), key
    assert any(v.abs().sum() > 0 for k, v in expected.items() if "lora_B" in k)  # trained (B starts at zero)


@pytest.mark.slow  # three 2-process train.py runs
def test_ddp_run_shorter_than_a_validation_interval_ends_with_last_ckpt_and_resumes_exactly(tmp_path):
    from test_train_ddp import _assert_ddp_resume_is_exact, _ddp_overrides

    # 2 steps per epoch on each rank; stops at step 3 (mid-epoch), before any validation.
    base = [*_ddp_overrides("qgac_stage1"), "model.scheduler.step_size=3", "trainer.val_check_interval=10"]
    _assert_ddp_resume_is_exact(base, tmp_path, stop=3, end=5)
