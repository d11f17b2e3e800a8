"""Training our own unconditional diffusion prior (Ho et al., "Denoising Diffusion Probabilistic Models", 2020) on
the clean crops of the data pipeline, for DDRM-JPEG (:mod:`jpegrestore.sampling`).

Network: a diffusers ``UNet2DModel``; noise: a diffusers ``DDPMScheduler`` (linear betas 1e-4..0.02 over 1000
steps). Loss (the DDPM "simple" loss): with x0 = 2 target - 1 in [-1, 1], t ~ U{0..T-1}, n ~ N(0, I),
``|| n - net(sqrt(abar_t) x0 + sqrt(1 - abar_t) n, t) ||^2``. EMA weights come from Lightning's
``EMAWeightAveraging`` callback (``callbacks.ema`` in ``experiment=ddpm_prior``): it validates with them, writes
them to ``checkpoint["state_dict"]`` (the raw weights go to ``current_model_state`` for resuming), and copies them
into the model when training ends. :func:`jpegrestore.sampling.load_prior` loads the checkpoint (EMA weights,
schedule from the metadata); ``save_diffusers`` also writes a diffusers pipeline folder at the end.

Timesteps, noise and flips come from ``step_generator`` (seeded by step, batch index, rank and ``noise_seed``), so a
resumed run continues exactly like an uninterrupted one, and DDP ranks and accumulated micro-batches draw
different noise for their different crops. Validation noise is fixed per (``noise_seed``, batch, rank).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from jpegrestore.sampling.priors import DDPM_PRIOR_RECIPE, LINEAR_SCHEDULE
from jpegrestore.tasks.base import RestorationTask
from jpegrestore.checkpoints import METADATA_KEY
from jpegrestore.utils.logging import get_logger
from jpegrestore.utils.precision import float32_region
from jpegrestore.utils.seeding import keyed_generator

log = get_logger(__name__)


class DDPMPrior(RestorationTask):
    """Epsilon-prediction DDPM training of ``self.net`` (a ``UNet2DModel``) on ``batch["target"]``.

    Args:
        network: ``{"_target_": "diffusers.UNet2DModel", **config}``.
        noise_schedule: ``DDPMScheduler`` arguments (``num_train_timesteps``, ``beta_start``, ``beta_end``,
            ``beta_schedule``); stored in checkpoints as the prior's scheduler config.
        optimizer, scheduler: as in :class:`RestorationTask` (the learning-rate schedule).
        hflip: random horizontal flips of the crops (p = 1/2). The data pipeline's ``flips`` also flip vertically
            and its rotations turn photos on their side, which a prior of natural images should not learn; the
            recipe turns them off and flips here.
        val_timesteps: timesteps at which the validation loss is measured (fixed noise per batch).
        noise_seed: seed of the training draws (combined with the step and the rank).
        save_diffusers: directory for a diffusers ``DDPMPipeline`` folder of the final (EMA) weights, written by
            rank 0 when training ends (None: none).
        sample_grid: number of images the final prior samples (1000-step DDPM ancestral sampling) into
            ``<save_diffusers>/samples.png`` (0: none).
    """

    recipe = DDPM_PRIOR_RECIPE
    evaluation_method = "jpegrestore.evaluation.ddrm.DDRMJPEGMethod"

    def __init__(
        self,
        network: Mapping[str, Any],
        noise_schedule: Mapping[str, Any] | None = None,
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        hflip: bool = True,
        val_timesteps: Sequence[int] = (50, 150, 300, 500, 800),
        noise_seed: int = 0,
        save_diffusers: str | None = None,
        sample_grid: int = 0,
        grid_images: int = 0,
    ) -> None:
        super().__init__(network, optimizer, scheduler, grid_images)
        from diffusers import DDPMScheduler

        self.noise_schedule = dict(noise_schedule or LINEAR_SCHEDULE)
        self.noise_scheduler = DDPMScheduler(**self.noise_schedule)
        self.num_timesteps = int(self.noise_scheduler.config.num_train_timesteps)
        bad = [t for t in val_timesteps if not 0 <= int(t) < self.num_timesteps]
        if bad:
            raise ValueError(f"val_timesteps {bad} outside 0..{self.num_timesteps - 1}")
        self.hflip = bool(hflip)
        self.val_timesteps = [int(t) for t in val_timesteps]
        self.noise_seed = int(noise_seed)
        self.save_diffusers = save_diffusers
        self.sample_grid = int(sample_grid)
        self._val_sum: list[torch.Tensor] = []

    # ------------------------------------------------------------------ loss

    def diffusion_loss(self, images: torch.Tensor, timesteps: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Per-image mean squared epsilon error. images [B, C, H, W] in [0, 1], timesteps Long[B] -> [B]."""
        x0 = images.float() * 2 - 1
        noisy = self.noise_scheduler.add_noise(x0, noise, timesteps)
        predicted = self.net(noisy, timesteps).sample  # under autocast in mixed precision; the loss is not
        with float32_region():
            return F.mse_loss(predicted.float(), noise, reduction="none").mean(dim=(1, 2, 3))

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        images = batch["target"]
        generator = self.step_generator(batch_idx, self.noise_seed)
        b = images.shape[0]
        if self.hflip:
            flip = torch.rand(b, generator=generator, device=self.device) < 0.5
            images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        timesteps = torch.randint(0, self.num_timesteps, (b,), generator=generator, device=self.device)
        noise = torch.randn(images.shape, generator=generator, device=self.device)
        loss = self.diffusion_loss(images, timesteps, noise).mean()
        self.log("train/loss", loss, prog_bar=True)
        return loss

    # ------------------------------------------------------------------ validation: loss at fixed timesteps

    def restore(self, batch: Mapping[str, Any]) -> torch.Tensor:
        raise NotImplementedError(
            "a diffusion prior restores JPEGs through DDRM-JPEG: python evaluate.py method=ddrm_jpeg "
            "method.prior=<this checkpoint>"
        )

    def on_validation_epoch_start(self) -> None:
        self._val_sum = []

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        images = batch["target"]
        generator = keyed_generator(self.noise_seed, -1, batch_idx, self.global_rank, device=self.device)
        noise = torch.randn(images.shape, generator=generator, device=self.device)
        losses = []
        for t in self.val_timesteps:
            timesteps = torch.full((images.shape[0],), t, dtype=torch.long, device=self.device)
            losses.append(self.diffusion_loss(images, timesteps, noise))
        self._val_sum.append(torch.stack(losses, 1))  # [B, len(val_timesteps)]

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or not self._val_sum:
            return
        self.last_validated_step = self.global_step
        per_timestep = torch.cat(self._val_sum).mean(0)
        self.log("val/loss", per_timestep.mean(), sync_dist=True, prog_bar=True)
        for t, value in zip(self.val_timesteps, per_timestep):
            self.log(f"val/loss_t{t}", value, sync_dist=True)

    # ------------------------------------------------------------------ checkpoints and export

    def training_domain(self) -> None:
        """None: the prior never sees JPEGs, so its checkpoints record no JPEG qualities or layouts."""
        return None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint[METADATA_KEY]["scheduler"] = {"_class_name": "DDPMScheduler", **self.noise_schedule}

    def pipeline(self):
        """A diffusers ``DDPMPipeline`` over ``self.net`` and the training noise schedule."""
        from diffusers import DDPMPipeline, DDPMScheduler

        return DDPMPipeline(unet=self.net, scheduler=DDPMScheduler(**self.noise_schedule))

    def on_train_end(self) -> None:
        # Lightning's EMA callback has copied the averaged weights into the model before this hook runs.
        if not self.save_diffusers or self.global_rank != 0:
            return
        out = Path(self.save_diffusers)
        self.pipeline().save_pretrained(out)
        log.info("diffusers prior (EMA weights) written to %s", out)
        if self.sample_grid > 0:
            save_sample_grid(self.pipeline(), out / "samples.png", self.sample_grid)


def save_sample_grid(pipeline: Any, path: str | Path, count: int, seed: int = 0) -> Path:
    """Draw ``count`` images with ``pipeline`` (full ancestral sampling) and save them as one PNG grid."""
    from torchvision.utils import make_grid, save_image

    was_training = pipeline.unet.training
    pipeline.unet.eval()
    generator = torch.Generator(device=pipeline.unet.device).manual_seed(seed)
    with torch.no_grad():
        images = pipeline(batch_size=count, generator=generator, output_type="np").images  # [N, H, W, C] in [0, 1]
    pipeline.unet.train(was_training)
    grid = make_grid(torch.from_numpy(images).permute(0, 3, 1, 2), nrow=int(count**0.5 + 0.999), padding=2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, path)
    return path
