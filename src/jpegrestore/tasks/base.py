"""Shared behaviour of every training recipe: validation metrics per quality, image grids, optimizer/schedule
construction from configs, self-describing checkpoints and data-skip reporting.

Batches (after the datamodule's ``on_after_batch_transfer``) are dicts with ``target`` float [B, C, H, W] in
[0, 1], ``input`` the JPEG-decoded image (same shape), ``quality`` Long[B] in 1..100 and ``coeffs`` a
``jpeg.Coefficients``; validation batches may also carry ``name``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from jpegrestore.data.shift import shifted_crop
from jpegrestore.metrics.protocol import quantize_8bit
from jpegrestore.checkpoints import FORMAT_VERSION, METADATA_KEY
from jpegrestore.tasks.validation import QualityBinnedMean
from jpegrestore.utils.instantiate import instantiate_object, to_plain
from jpegrestore.utils.logging import get_logger
from jpegrestore.utils.precision import in_float32
from jpegrestore.utils.seeding import keyed_generator

log = get_logger(__name__)

METRIC_NAMES = ("psnr", "psnrb", "ssim")


@in_float32
def _per_image_metrics(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] pairs in [0, 1] -> [B, 3] columns PSNR, PSNR-B (both capped), SSIM (float32, input device)."""
    from jpegrestore import metrics

    return torch.stack([metrics.cap_psnr(metrics.psnr(pred, target)), metrics.cap_psnr(metrics.psnrb(pred, target)),
                        metrics.ssim(pred, target)], 1)


def skipped_file_count(datamodule: Any) -> int:
    """Files the datamodule skipped: ``skipped_files`` ({split: {reason: n}}) or ``skipped`` ({file: reason})."""
    per_split = getattr(datamodule, "skipped_files", None)
    if isinstance(per_split, Mapping):
        return int(sum(sum(reasons.values()) for reasons in per_split.values()))
    return len(getattr(datamodule, "skipped", None) or {})


class RestorationTask(pl.LightningModule):
    """Base LightningModule: builds ``self.net`` from a ``{"_target_": ..., **kwargs}`` config.

    Subclasses implement ``training_step`` and :meth:`restore`; they may override :meth:`evaluation_views`
    (e.g. to compare luma only) and set ``recipe`` / ``state_carried_kwargs``.

    Args:
        network: constructor config of the restoration network (kept verbatim for checkpoints).
        optimizer: ``{"_target_": "torch.optim.Adam", "lr": ...}``, called with the trainable parameters.
        scheduler: optional ``{"_target_": "torch.optim.lr_scheduler.StepLR", ...}``, stepped every batch.
        grid_images: how many validation images go into the logged JPEG / restored / original grid (0: none).
    """

    recipe: str = "restoration"
    #: "module.Class" of the evaluation method for this recipe's checkpoints (None: the network alone, through
    #: ``evaluation.methods.CheckpointMethod``); see ``evaluation.methods.checkpoint_method``.
    evaluation_method: str | None = None
    #: for recipes whose checkpoints do not restore JPEGs: what they are for instead (the evaluation refuses them).
    not_a_restorer: str | None = None
    #: network kwargs whose values live in the state dict (buffers), dropped from the checkpoint spec.
    state_carried_kwargs: tuple[str, ...] = ()
    #: prefixes of frozen helper modules (e.g. a VGG inside a loss) that checkpoints need not store.
    unsaved_prefixes: tuple[str, ...] = ()

    def __init__(
        self,
        network: Mapping[str, Any],
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        grid_images: int = 4,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)  # init args of the whole class chain
        self.hparams.update(to_plain(dict(self.hparams)))  # plain containers: checkpoints load weights_only
        self.network_config: dict[str, Any] = to_plain(network)
        self.optimizer_config = to_plain(optimizer)
        self.scheduler_config = to_plain(scheduler)
        self.grid_images = grid_images
        self.net: nn.Module = instantiate_object(self.network_config)
        self.last_validated_step: int | None = None
        self.val_metrics = QualityBinnedMean([f"{m}{suffix}" for suffix in ("", "_jpeg") for m in METRIC_NAMES])

    # ------------------------------------------------------------------ restoration interface

    def restore(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """Restored image for a batch. -> float [B, C, H, W] (C as in :meth:`evaluation_views`)."""
        raise NotImplementedError

    def forward(self, batch: Mapping[str, Any]) -> torch.Tensor:
        return self.restore(batch)

    def evaluation_views(
        self, batch: Mapping[str, Any], restored: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(restored, JPEG input, target) in the space the metrics compare, each [B, C, H, W] in [0, 1]."""
        return restored, batch["input"], batch["target"]

    # ------------------------------------------------------------------ optimizers

    def step_generator(self, batch_idx: int, *keys: int, device: torch.device | str | None = None) -> torch.Generator:
        """The generator for random draws inside a training step, seeded by (global step, batch index, rank,
        ``keys``): a resumed run draws what the uninterrupted one drew. ``device`` defaults to the module's."""
        return keyed_generator(self.global_step, batch_idx, self.global_rank, *keys,
                               device=self.device if device is None else device)

    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        """Parameters the main optimizer updates (default: every trainable parameter of ``self.net``)."""
        return [p for p in self.net.parameters() if p.requires_grad]

    def build_optimizer(self, config: Mapping[str, Any] | None, params: Iterable[nn.Parameter]) -> dict[str, Any]:
        """Optimizer (+ per-step scheduler) dict for ``configure_optimizers`` from ``config``."""
        if config is None:
            raise ValueError(f"{type(self).__name__} needs an optimizer config (model.optimizer)")
        optimizer_cfg = dict(config)
        scheduler_cfg = optimizer_cfg.pop("scheduler", None)
        optimizer = instantiate_object(optimizer_cfg, list(params))
        result: dict[str, Any] = {"optimizer": optimizer}
        if scheduler_cfg is not None:
            result["lr_scheduler"] = {"scheduler": instantiate_object(scheduler_cfg, optimizer), "interval": "step"}
        return result

    def configure_optimizers(self) -> Any:
        if self.optimizer_config is None:
            return self.build_optimizer(None, [])
        config = {**self.optimizer_config, "scheduler": self.scheduler_config}
        return self.build_optimizer(config, self.trainable_parameters())

    # ------------------------------------------------------------------ validation

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        # Scored as the 8-bit image a user would save, like evaluate.py (jpegrestore.metrics.protocol).
        restored = quantize_8bit(self.restore(batch).float())
        restored, jpeg_input, target = self.evaluation_views(batch, restored)
        values = torch.cat([_per_image_metrics(restored, target), _per_image_metrics(jpeg_input.float(), target)], 1)
        self.val_metrics.update(batch["quality"], values)
        if batch_idx == 0 and not self.trainer.sanity_checking:
            self._log_image_grid(jpeg_input, restored, target)

    def on_validation_epoch_end(self) -> None:
        results = self.val_metrics.compute()
        self.val_metrics.reset()
        if self.trainer.sanity_checking:
            return
        self.last_validated_step = self.global_step
        for name, value in results.items():
            self.log(f"val/{name}", value, sync_dist=True, prog_bar=name in ("psnr", "psnr_jpeg"))
        if "psnr" in results:
            self.log("val/psnr_gain", results["psnr"] - results["psnr_jpeg"], sync_dist=True)

    def _log_image_grid(self, jpeg_input: torch.Tensor, restored: torch.Tensor, target: torch.Tensor) -> None:
        """Rows JPEG / restored / original of the first images; to TensorBoard, W&B, or a PNG in the run dir."""
        n = min(self.grid_images, target.shape[0])
        if n == 0 or self.global_rank != 0:
            return
        from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
        from torchvision.utils import make_grid, save_image

        rows = torch.cat([jpeg_input[:n].float(), restored[:n].float(), target[:n].float()]).clamp(0, 1)
        grid = make_grid(rows.detach().cpu(), nrow=n, padding=2, pad_value=1.0)
        tag, step = "val/jpeg_restored_original", self.global_step
        logged = False
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(tag, grid, step)
                logged = True
            elif isinstance(logger, WandbLogger):
                hwc = (grid.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
                logger.log_image(key=tag, images=[hwc], step=step)
                logged = True
        if not logged:
            out = Path(self.trainer.default_root_dir) / "images" / f"val_step{step:07d}.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            save_image(grid, out)

    # ------------------------------------------------------------------ data reporting

    def on_train_epoch_end(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "skip_summary"):
            return
        log.info("epoch %d data: %s", self.current_epoch, datamodule.skip_summary())
        self.log("data/skipped_files", float(skipped_file_count(datamodule)), sync_dist=True, reduce_fx="max")

    # ------------------------------------------------------------------ checkpoints

    def network_spec(self) -> dict[str, Any]:
        """``{"_target_": ..., **kwargs}`` that rebuilds ``self.net`` (weights come from the state dict)."""
        return {k: v for k, v in self.network_config.items() if k not in self.state_carried_kwargs}

    def checkpoint_extras(self) -> dict[str, Any]:
        """Recipe facts added to ``checkpoint["jpegrestore"]`` (e.g. where normalization statistics came from)."""
        return {}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[METADATA_KEY] = {
            "format": FORMAT_VERSION,
            "recipe": self.recipe,
            "network": self.network_spec(),
            "state_dict_prefix": "net.",
            **self.checkpoint_extras(),
        }
        if self.evaluation_method:
            checkpoint[METADATA_KEY]["evaluation_method"] = self.evaluation_method
        if self.not_a_restorer:
            checkpoint[METADATA_KEY]["not_a_restorer"] = self.not_a_restorer
        domain = self.training_domain()
        if domain is not None:
            checkpoint[METADATA_KEY]["trained_on"] = domain
        if self.unsaved_prefixes:
            state = checkpoint["state_dict"]
            for key in [k for k in state if k.startswith(self.unsaved_prefixes)]:
                del state[key]

    def training_domain(self) -> dict[str, list] | None:
        """Qualities and chroma layouts of the training data (``datamodule.training_domain()``), or the ones the
        checkpoint this run resumed from recorded; None when neither is known."""
        trainer = self._trainer
        datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
        if datamodule is not None and hasattr(datamodule, "training_domain"):
            return datamodule.training_domain()
        return getattr(self, "_loaded_training_domain", None)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._loaded_training_domain = checkpoint.get(METADATA_KEY, {}).get("trained_on")
        if self.unsaved_prefixes:  # frozen helpers were not saved: keep the ones built in __init__
            state = checkpoint["state_dict"]
            for key, value in self.state_dict().items():
                if key.startswith(self.unsaved_prefixes):
                    state.setdefault(key, value)


class GridShiftedCrops:
    """For a :class:`RestorationTask` with ``train_crop`` and ``shift_prob`` (CODiff stages 1 and 2): training
    crops cut from the compressed crops at a random offset, so the JPEG grid starts at a random phase
    (``data.shift.shifted_crop``). Offsets come from :meth:`RestorationTask.step_generator`."""

    train_crop: int | None
    shift_prob: float

    def training_crops(self, batch: Mapping[str, Any], batch_idx: int = 0) -> Mapping[str, Any]:
        """``batch`` with ``input`` / ``target`` cut to ``train_crop`` (unchanged when ``train_crop`` is None)."""
        if self.train_crop is None:
            return batch
        return shifted_crop(batch, self.train_crop, self.shift_prob, self.step_generator(batch_idx, device="cpu"))


class AdversarialTask(RestorationTask):
    """A recipe with a generator (``self.net``) and a discriminator, each with its own optimizer (manual
    optimization). Subclasses set ``self.discriminator``, ``self.discriminator_optimizer_config`` (None: the
    generator's) and ``self.discriminator_scheduler_config``; optimizer 0 is the generator's, 1 the discriminator's.
    """

    def discriminator_parameters(self) -> Iterable[nn.Parameter]:
        """Parameters the discriminator's optimizer updates (default: its trainable ones)."""
        return [p for p in self.discriminator.parameters() if p.requires_grad]

    def configure_optimizers(self) -> Any:
        generator = self.build_optimizer({**(self.optimizer_config or {}), "scheduler": self.scheduler_config},
                                         self.trainable_parameters())
        discriminator_config = self.discriminator_optimizer_config or self.optimizer_config
        discriminator = self.build_optimizer(
            {**(discriminator_config or {}), "scheduler": self.discriminator_scheduler_config},
            self.discriminator_parameters(),
        )
        self._check_schedule_lengths([generator, discriminator])
        return [generator, discriminator]

    def _check_schedule_lengths(self, optimizers: list[dict[str, Any]]) -> None:
        """Warn about a scheduler whose ``T_max`` equals ``trainer.max_steps``: it is stepped once per batch while
        ``global_step`` counts two steps per batch, so it would end halfway (use ``${jr_floordiv:...,2}``)."""
        max_steps = getattr(self._trainer, "max_steps", -1) if self._trainer is not None else -1
        for entry in optimizers:
            scheduler = entry.get("lr_scheduler", {}).get("scheduler")
            if max_steps > 0 and getattr(scheduler, "T_max", None) == max_steps:
                log.warning("%s has T_max = trainer.max_steps = %d, but it is stepped once per batch and "
                            "trainer.max_steps counts 2 steps per batch: it will stop halfway. Use "
                            "T_max: ${jr_floordiv:${trainer.max_steps},2}", type(scheduler).__name__, max_steps)

    def step_schedulers(self) -> None:
        """Step both learning-rate schedulers once (manual optimization does not step them)."""
        schedulers = self.lr_schedulers()
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers] if schedulers else []:
            scheduler.step()
