"""Config composition: every group and experiment composes; paper hyperparameters are the defaults; typos fail."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException, InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import CONF, REPO, TINY, compose_train

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def test_experiment_files_are_global_packages():
    assert set(EXPERIMENTS) >= {"quickstart", "qgac_stage1", "qgac_stage2", "qgac_stage3"}
    for name in EXPERIMENTS:
        assert (CONF / "experiment" / f"{name}.yaml").read_text().startswith("# @package _global_")


def test_default_is_quickstart_on_cpu(tmp_path):
    cfg = compose_train([], tmp_path)
    assert cfg.task_name == "quickstart"
    assert cfg.trainer.accelerator == "cpu"
    assert cfg.model._target_ == "jpegrestore.tasks.QGACColor" and cfg.model.freeze_y is False
    assert 10 in cfg.data.val_qualities
    assert cfg.dct_stats.endswith("qgac_dct_stats_sample.json")  # the packaged stats file resolves


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_and_resolves(name, tmp_path):
    required = {"qgac_stage2": ["model.y_checkpoint=y.ckpt"], "qgac_stage3": ["model.generator_checkpoint=g.ckpt"],
                "codiff_stage2": ["model.cave_checkpoint=c.ckpt"],
                "codiff_stage2_tiny": ["model.cave_checkpoint=c.ckpt", "model.pretrained=sd"]}
    cfg = compose_train([f"experiment={name}", *required.get(name, [])], tmp_path)
    container = OmegaConf.to_container(cfg, resolve=True)
    assert container["task_name"] == name
    for group in ("data", "model", "trainer"):
        assert "_target_" in container[group]


def test_stage1_paper_hyperparameters(tmp_path):
    cfg = compose_train(["experiment=qgac_stage1"], tmp_path)
    assert cfg.model.optimizer._target_ == "torch.optim.Adam" and cfg.model.optimizer.lr == 1e-3
    assert cfg.model.scheduler._target_.endswith("StepLR")
    assert (cfg.model.scheduler.step_size, cfg.model.scheduler.gamma) == (100000, 0.5)
    assert cfg.trainer.max_steps == 400000 and cfg.model.ssim_weight == 0.05
    assert (cfg.data.batch_size, cfg.data.crop_size) == (32, 256)
    assert list(cfg.data.quality) == list(range(10, 101, 10))
    assert cfg.model.network.color is False and cfg.data.grayscale is True
    assert (cfg.model.network.block_channels, cfg.model.network.freq_channels) == (256, 256)


def test_stage2_paper_hyperparameters(tmp_path):
    cfg = compose_train(["experiment=qgac_stage2", "model.y_checkpoint=y.ckpt"], tmp_path)
    assert cfg.model.freeze_y is True and cfg.model.y_checkpoint == "y.ckpt"
    assert cfg.model.scheduler._target_.endswith("CosineAnnealingLR")
    assert (cfg.model.optimizer.lr, cfg.model.scheduler.T_max, cfg.model.scheduler.eta_min) == (1e-3, 100000, 1e-6)
    assert cfg.trainer.max_steps == 100000


def test_stage2_requires_y_checkpoint(tmp_path):
    cfg = compose_train(["experiment=qgac_stage2"], tmp_path)
    with pytest.raises(Exception, match="y_checkpoint"):
        OmegaConf.to_container(cfg.model, resolve=True, throw_on_missing=True)


def test_stage3_paper_hyperparameters(tmp_path):
    cfg = compose_train(["experiment=qgac_stage3", "model.generator_checkpoint=g.ckpt"], tmp_path)
    m = cfg.model
    assert (m.gan_weight, m.l1_weight, m.texture_weight) == (5e-3, 1e-2, 1.0)
    assert m.discriminator._target_.endswith("DCGANDiscriminator")
    for opt, sched in ((m.optimizer, m.scheduler), (m.discriminator_optimizer, m.discriminator_scheduler)):
        assert opt.lr == 1e-4 and sched.T_max == 100000 and sched.eta_min == 1e-6
    assert cfg.trainer.max_steps == 200000  # G + D steps per batch: 100k iterations
    assert cfg.ddp_find_unused_parameters is True


@pytest.mark.parametrize("trainer", ["default", "cpu", "gpu", "ddp", "ddp_sim"])
def test_trainer_configs_compose(trainer, tmp_path):
    cfg = compose_train([f"trainer={trainer}"], tmp_path)
    assert cfg.trainer._target_ == "lightning.pytorch.Trainer"
    if trainer.startswith("ddp"):
        strategy = instantiate(cfg.trainer.strategy)
        assert type(strategy).__name__ == "DDPStrategy"
        assert strategy._process_group_backend == ("gloo" if trainer == "ddp_sim" else "nccl")
    if trainer == "ddp_sim":
        assert (cfg.trainer.accelerator, cfg.trainer.devices) == ("cpu", 2)


def test_ddp_sim_trainer_instantiates_on_cpu(tmp_path):
    cfg = compose_train(["trainer=ddp_sim"], tmp_path)
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    assert trainer.num_devices == 2 and trainer.strategy.root_device.type == "cpu"


@pytest.mark.parametrize("logger", ["csv", "tensorboard", "wandb", "many"])
def test_logger_configs_instantiate(logger, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_train([f"logger={logger}"], tmp_path)
    from jpegrestore.utils import instantiate_loggers

    loggers = instantiate_loggers(cfg.logger)
    expected = {"csv": ["CSVLogger"], "tensorboard": ["TensorBoardLogger"], "wandb": ["WandbLogger"],
                "many": ["CSVLogger", "TensorBoardLogger"]}[logger]
    assert sorted(type(lg).__name__ for lg in loggers) == expected


@pytest.mark.parametrize("data", ["sample", "folder", "hf"])
def test_data_configs_compose(data, tmp_path):
    cfg = compose_train([f"data={data}"], tmp_path)
    assert cfg.data._target_ == "jpegrestore.data.RestorationDataModule"


def test_folder_data_names_missing_folder(tmp_path):
    cfg = compose_train(["data=folder", f"data.train_source={tmp_path}/nope", f"data.val_source={tmp_path}"],
                        tmp_path)
    datamodule = instantiate(cfg.data)
    with pytest.raises(FileNotFoundError, match="nope"):
        datamodule.setup("fit")


def test_model_configs_instantiate_tiny(tmp_path):
    cfg = compose_train([*TINY, "model=qgac_stage1"], tmp_path)
    model = instantiate(cfg.model)
    assert type(model).__name__ == "QGACLuma" and model.net.color_net is None


def test_override_typo_fails_naming_the_key(tmp_path):
    with pytest.raises(ConfigCompositionException, match="max_stepz"):
        compose_train(["trainer.max_stepz=3"], tmp_path)
    with pytest.raises(ConfigCompositionException, match="quickstrt"):
        compose_train(["experiment=quickstrt"], tmp_path)


def test_unknown_constructor_argument_fails_naming_it(tmp_path):
    cfg = compose_train([*TINY, "+model.ssim_wieght=0.1"], tmp_path)
    with pytest.raises(InstantiationException, match="ssim_wieght"):
        instantiate(cfg.model)


def test_train_py_typo_exits_with_hydra_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "train.py", "trainer.max_stepz=1", f"paths.log_dir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    assert "max_stepz" in result.stderr
