"""Hydra multirun on SLURM: `hydra/launcher=submitit_slurm` and our preset `hydra/launcher=slurm` compose with the
training config (hydra-submitit-launcher is installed and found)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from conftest import CONF


def _launcher(choice: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"hydra/launcher={choice}", "experiment=qgac_stage1"],
                      return_hydra_config=True)
    return cfg.hydra.launcher


def test_submitit_slurm_composes():
    launcher = _launcher("submitit_slurm")
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"


def test_slurm_preset_composes_with_our_values():
    launcher = _launcher("slurm")
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.tasks_per_node, launcher.gpus_per_node, launcher.signal_delay_s) == (4, 4, 90)
    assert launcher.max_num_timeout == 20


def test_unknown_launcher_is_an_error():
    with pytest.raises(Exception, match="slurmm"):
        _launcher("slurmm")
