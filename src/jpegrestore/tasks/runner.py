"""The body of ``train.py``: build datamodule, model, callbacks, loggers and trainer from a composed config,
fit, and report the held-out PSNR of JPEG vs the model per quality."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from jpegrestore.utils import get_logger, instantiate_callbacks, instantiate_loggers, register_resolvers

log = get_logger(__name__)
_QUALITY_KEY = re.compile(r"^val/psnr_q(\d+)$")


def quality_table(metrics: dict[str, Any]) -> list[tuple[int, float, float]]:
    """(quality, JPEG PSNR, model PSNR) for every quality with both ``val/psnr_jpeg_qN`` and ``val/psnr_qN``."""
    rows = []
    for key, value in metrics.items():
        match = _QUALITY_KEY.match(key)
        jpeg_key = f"val/psnr_jpeg_q{match.group(1)}" if match else None
        if match and jpeg_key in metrics:
            rows.append((int(match.group(1)), float(metrics[jpeg_key]), float(value)))
    return sorted(rows)


def format_results(metrics: dict[str, Any], step: int) -> str:
    """Human-readable table of :func:`quality_table` (PSNR in dB over the validation images)."""
    rows = quality_table(metrics)
    if not rows:  # recipes without per-quality PSNR (e.g. a diffusion prior's validation loss)
        other = {k: float(v) for k, v in sorted(metrics.items()) if k.startswith("val/")}
        if not other:
            return "no validation metrics were logged"
        return f"Validation after {step} steps: " + ", ".join(f"{k}={v:.5g}" for k, v in other.items())
    lines = [f"Held-out (val) PSNR after {step} steps, dB:", "   QF    JPEG   model    gain"]
    lines += [f"  {q:3d}  {j:6.2f}  {m:6.2f}  {m - j:+6.2f}" for q, j, m in rows]
    return "\n".join(lines)


def _scalars(values: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if isinstance(v, (torch.Tensor, float, int))}


@rank_zero_only
def _print(text: str) -> None:
    print(text, flush=True)


def take_recorded_paths(model_cfg: DictConfig, ckpt_path: str | None) -> None:
    """For a run resuming ``ckpt_path``: fill the task's ``resumed_paths`` (e.g. the posterior GAN's frozen MMSE
    estimator, whose weights our checkpoints do not store) in ``model_cfg`` from the hyperparameters the checkpoint
    recorded. ValueError naming both files when the config names another file than the recorded one."""
    from hydra.utils import get_class

    from jpegrestore.checkpoints import read_checkpoint

    keys = getattr(get_class(model_cfg._target_), "resumed_paths", ()) if model_cfg.get("_target_") else ()
    if not ckpt_path or not keys:
        return
    recorded = read_checkpoint(ckpt_path).get("hyper_parameters", {})
    for key in keys:
        if recorded.get(key) is None:
            continue
        given = model_cfg.get(key)
        if given is None:
            log.info("resuming %s: model.%s=%s, as recorded", ckpt_path, key, recorded[key])
            model_cfg[key] = recorded[key]
        elif Path(str(given)).resolve() != Path(str(recorded[key])).resolve():
            raise ValueError(f"model.{key}={given} is not the file the run resumed from {ckpt_path} was trained "
                             f"with ({recorded[key]}); leave model.{key} unset to use the recorded one")


def build(cfg: DictConfig, ckpt_path: str | None = None) -> tuple[pl.LightningDataModule, pl.LightningModule, pl.Trainer]:
    """Instantiate (datamodule, model, trainer) from a composed ``train.yaml`` config, for a run that resumes
    ``ckpt_path`` (default: ``cfg.ckpt_path`` resolved, see :func:`resolve_ckpt_path`) or starts fresh."""
    register_resolvers()
    if cfg.get("seed") is not None:
        pl.seed_everything(int(cfg.seed), workers=True)
    take_recorded_paths(cfg.model, ckpt_path or resolve_ckpt_path(cfg))
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model)
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    loggers = instantiate_loggers(cfg.get("logger"))
    if not loggers:  # Lightning refuses an LR monitor without a logger
        dropped = [c for c in callbacks if isinstance(c, LearningRateMonitor)]
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
        if dropped:
            log.warning("no logger configured: the learning-rate monitor is disabled")
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return datamodule, model, trainer


#: Checkpoints a run leaves that ``ckpt_path=last`` can resume: the periodic one, the one written when the run was
#: interrupted (SIGTERM, crash), and Lightning's SLURM requeue checkpoint.
RESUMABLE_CHECKPOINTS = ("checkpoints/last.ckpt", "checkpoints/interrupted.ckpt", "hpc_ckpt_*.ckpt")


def newest_checkpoint(experiment_dir: str | Path) -> Path | None:
    """The most recently written resumable checkpoint of any run under ``experiment_dir`` (e.g. logs/<task_name>)."""
    root = Path(experiment_dir)
    found = [path for pattern in RESUMABLE_CHECKPOINTS for path in root.glob(f"*/*/{pattern}")]
    return max(found, key=lambda path: path.stat().st_mtime, default=None)


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """``cfg.ckpt_path``; "last" means the newest resumable checkpoint of the same experiment
    (``paths.log_dir/task_name``), or a fresh start when there is none yet (so a requeued job can always pass it)."""
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path != "last":
        return ckpt_path
    experiment_dir = Path(cfg.paths.log_dir) / str(cfg.task_name)
    newest = newest_checkpoint(experiment_dir)
    if newest is None:
        log.info("ckpt_path=last: no checkpoint under %s yet; starting fresh", experiment_dir)
        return None
    log.info("ckpt_path=last: resuming from %s", newest)
    return str(newest)


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit (resuming from ``cfg.ckpt_path`` if set), print the PSNR table, return the final metrics.

    On SIGTERM (preemption, SLURM's time limit) the run stops at the next step boundary, the ``on_exception``
    callback saves ``checkpoints/interrupted.ckpt``, and this returns normally after saying how to resume.
    """
    ckpt_path = resolve_ckpt_path(cfg)
    datamodule, model, trainer = build(cfg, ckpt_path)
    log.info("run directory: %s", trainer.default_root_dir)
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    except SIGTERMException:
        _print(f"interrupted by SIGTERM at step {trainer.global_step}; resume with ckpt_path=last "
               f"(checkpoints in {Path(trainer.default_root_dir) / 'checkpoints'})")
        return _scalars(trainer.callback_metrics)
    metrics = _scalars(trainer.callback_metrics)
    last_validated = getattr(model, "last_validated_step", None)
    if cfg.get("validate_after_fit", True) and last_validated != trainer.global_step and not trainer.fast_dev_run:
        trainer.validate(model, datamodule=datamodule, verbose=False)
        metrics.update(_scalars(trainer.callback_metrics))
    _print(format_results(metrics, trainer.global_step))
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and getattr(checkpoint, "dirpath", None):
        _print(f"checkpoints: {checkpoint.dirpath} (best: {checkpoint.best_model_path or 'none'})")
    return metrics
