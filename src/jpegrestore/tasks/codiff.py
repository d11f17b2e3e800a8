"""CODiff stage 2 (Guo et al., 2025, Eq. 7-10): the one-step generator against a latent discriminator.

Generator loss ``l2_weight * MSE + dists_weight * DISTS + gan_weight * L_G`` on images in [0, 1]
(paper: 1, 1, 5e-3) with ``L_G = -log D(z_gen) = softplus(-logits)``; discriminator loss
``discriminator_loss_weight * (-log D(z_HQ) - log(1 - D(z_gen)))``, real = base-VAE latents of the original.
Manual optimization: each batch does a generator pass and step, then a discriminator pass and step, both
with gradient-norm clipping; ``trainer.global_step`` therefore advances by 2 per iteration. Gradient
accumulation (``accumulate_grad_batches``) is done here (Lightning's option does not apply to manual
optimization): losses are divided by it and the optimizers step every that many batches.

Checkpoints hold only what trains (generator: LoRA, conv_in, proj, plus the CaVE; discriminator: LoRA, head,
conditioning), never the Stable Diffusion base; its folder or id is recorded in the metadata and loaded again.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from jpegrestore.losses import mse_loss, nonsaturating_discriminator_loss, nonsaturating_generator_loss
from jpegrestore.tasks.base import AdversarialTask, GridShiftedCrops
from jpegrestore.checkpoints import METADATA_KEY
from jpegrestore.utils.instantiate import instantiate_object, to_plain
from jpegrestore.utils.logging import get_logger
from jpegrestore.utils.precision import in_float32

log = get_logger(__name__)


class CODiffTask(GridShiftedCrops, AdversarialTask):
    """Stage 2 of CODiff: ``self.net`` is a :class:`jpegrestore.nn.codiff.CODiff`, ``self.discriminator`` a
    :class:`jpegrestore.nn.codiff.discriminator.LatentDiscriminator`.

    Args:
        network / discriminator: constructor configs.
        optimizer / discriminator_optimizer: AdamW configs (paper: lr 5e-5, weight decay 1e-5; the authors'
            code runs weight decay 1e-2). The discriminator's defaults to the generator's.
        scheduler / discriminator_scheduler: optional per-step LR schedules (paper: constant).
        dists_weights: DISTS weights (file or directory; None: resolved by ``jpegrestore.weights``).
        l2_weight, dists_weight, gan_weight: generator loss weights (paper: 1, 1, 5e-3).
        discriminator_loss_weight: factor on the paper's L_D, Eq. 9 (paper: 1; the authors' code uses the mean of
            the two BCE terms times 1e-2, i.e. 5e-3).
        gradient_clip: max gradient norm of each network's update (paper: 1.0).
        accumulate_grad_batches: batches per optimizer step.
        lora_dir: sub-folder of the run directory that receives :meth:`CODiff.save_lora` files at the end.
        train_crop, shift_prob: as stage 1, a ``train_crop`` square cut out of each compressed crop at a random
            offset with probability ``shift_prob`` (CODiff: 256 out of 264, 0.5), so the JPEG grid starts at a
            random phase. None: use the datamodule's crops as they are.
        pretrained, cave_checkpoint: the config's ``model.pretrained`` / ``model.cave_checkpoint``, which the
            network config interpolates (``network.pretrained`` / ``network.cave_checkpoint``); unused here.
    """

    recipe = "codiff_stage2"
    evaluation_method = "jpegrestore.evaluation.codiff.CODiffMethod"
    unsaved_prefixes = ("dists_loss.",)

    def __init__(
        self,
        network: Mapping[str, Any],
        discriminator: Mapping[str, Any],
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        discriminator_optimizer: Mapping[str, Any] | None = None,
        discriminator_scheduler: Mapping[str, Any] | None = None,
        dists_weights: str | None = None,
        l2_weight: float = 1.0,
        dists_weight: float = 1.0,
        gan_weight: float = 5e-3,
        discriminator_loss_weight: float = 1.0,
        gradient_clip: float | None = 1.0,
        accumulate_grad_batches: int = 1,
        lora_dir: str | None = "lora",
        train_crop: int | None = None,
        shift_prob: float = 0.5,
        grid_images: int = 4,
        pretrained: str | None = None,
        cave_checkpoint: str | None = None,
    ) -> None:
        super().__init__(network, optimizer, scheduler, grid_images)
        del pretrained, cave_checkpoint  # config-level aliases, already interpolated into ``network``
        if accumulate_grad_batches < 1:
            raise ValueError(f"accumulate_grad_batches must be >= 1, got {accumulate_grad_batches}")
        self.automatic_optimization = False
        self.discriminator_config = to_plain(discriminator)
        self.discriminator_optimizer_config = to_plain(discriminator_optimizer)
        self.discriminator_scheduler_config = to_plain(discriminator_scheduler)
        self.discriminator: nn.Module = instantiate_object(self.discriminator_config)
        self.dists_loss: nn.Module | None = None
        if dists_weight:
            from jpegrestore.metrics.perceptual import DISTSMetric

            self.dists_loss = DISTSMetric(dists_weights).requires_grad_(False)
        self.l2_weight, self.dists_weight, self.gan_weight = l2_weight, dists_weight, gan_weight
        self.discriminator_loss_weight = discriminator_loss_weight
        self.gradient_clip = gradient_clip
        self.accumulate_grad_batches = int(accumulate_grad_batches)
        self.lora_dir = lora_dir
        if not 0.0 <= shift_prob <= 1.0:
            raise ValueError(f"shift_prob must be in [0, 1], got {shift_prob}")
        self.train_crop = None if train_crop is None else int(train_crop)
        self.shift_prob = float(shift_prob)

    def train(self, mode: bool = True) -> "CODiffTask":
        super().train(mode)
        if self.dists_loss is not None:
            self.dists_loss.eval()
        return self

    def restore(self, batch: Mapping[str, Any]) -> torch.Tensor:
        return self.net(batch["input"])

    # ------------------------------------------------------------------ optimizers

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [self.net.get_parameter(name) for name in self.net.trained_parameter_names]

    def discriminator_parameters(self) -> list[nn.Parameter]:
        """The discriminator's trained tensors, fixed by name at construction."""
        return [self.discriminator.get_parameter(name) for name in self.discriminator.trained_parameter_names]

    # ------------------------------------------------------------------ losses

    @in_float32
    def generator_loss(self, restored: torch.Tensor, target: torch.Tensor, latent: torch.Tensor,
                       generator: torch.Generator | None = None) -> dict:
        """Terms of Eq. 7 (``total`` included) for restored / original [B, 3, H, W] in [0, 1] and the
        generated latent. Gradients reach the generator through the discriminator's logits. ``generator``
        draws the discriminator's timesteps and noise when it has no fixed timestep. Runs in float32 outside
        autocast, discriminator and DISTS included (the authors' training: only the generator is autocast)."""
        terms = {"l2": mse_loss(restored.float(), target.float()),
                 "gan": nonsaturating_generator_loss(self.discriminator(latent, generator).float())}
        total = self.l2_weight * terms["l2"] + self.gan_weight * terms["gan"]
        if self.dists_loss is not None:
            terms["dists"] = self.dists_loss(restored.float(), target.float()).mean()
            total = total + self.dists_weight * terms["dists"]
        terms["total"] = total
        return terms

    @in_float32
    def discriminator_loss(self, target: torch.Tensor, latent: torch.Tensor,
                           generator: torch.Generator | None = None) -> torch.Tensor:
        """``discriminator_loss_weight * L_D`` with real = base-VAE latent of ``target`` [0, 1], fake = ``latent``
        (detached: this loss trains only the discriminator). Runs in float32 outside autocast, the VAE encoding
        of the original included (as the authors' ``compute_gt_latents``)."""
        with torch.no_grad():
            real = self.net.encode_latent(target, lora=False)
        loss = nonsaturating_discriminator_loss(self.discriminator(real, generator).float(),
                                                self.discriminator(latent.detach(), generator).float())
        return self.discriminator_loss_weight * loss

    def _step(self, optimizer: Any, loss: torch.Tensor, update: bool) -> None:
        self.manual_backward(loss / self.accumulate_grad_batches)
        if not update:
            return
        if self.gradient_clip:
            self.clip_gradients(optimizer, gradient_clip_val=self.gradient_clip, gradient_clip_algorithm="norm")
        optimizer.step()
        optimizer.zero_grad()

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        batch = self.training_crops(batch, batch_idx)
        g_opt, d_opt = self.optimizers()
        update = (batch_idx + 1) % self.accumulate_grad_batches == 0
        restored, latent = self.net.forward_with_latent(batch["input"])

        self.toggle_optimizer(g_opt)  # the discriminator is frozen here, gradients pass through it
        g_terms = self.generator_loss(restored, batch["target"], latent, self.step_generator(batch_idx, 0))
        self._step(g_opt, g_terms["total"], update)
        self.untoggle_optimizer(g_opt)

        self.toggle_optimizer(d_opt)
        d_loss = self.discriminator_loss(batch["target"], latent, self.step_generator(batch_idx, 1))
        self._step(d_opt, d_loss, update)
        self.untoggle_optimizer(d_opt)

        if update:
            self.step_schedulers()
        self.log_dict({f"train/g_{k}": v.detach() for k, v in g_terms.items()}, prog_bar=False)
        self.log("train/d_loss", d_loss.detach(), prog_bar=True)
        self.log("train/g_loss", g_terms["total"].detach(), prog_bar=True)

    # ------------------------------------------------------------------ checkpoints and output files

    def network_spec(self) -> dict[str, Any]:
        return self.net.network_spec()

    def _stored_keys(self) -> set[str]:
        kept = {f"net.{k}" for k in self.net.trained_state_dict()}
        kept |= {f"discriminator.{n}" for n in self.discriminator.trained_parameter_names}
        return kept

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        kept = self._stored_keys()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in kept}
        checkpoint[METADATA_KEY]["pretrained"] = self.net.pretrained
        checkpoint[METADATA_KEY]["cave_source"] = self.net.cave_source

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Frozen weights are not in the checkpoint: keep those loaded from the base in ``__init__``."""
        state = checkpoint["state_dict"]
        missing = sorted(self._stored_keys() - set(state))
        if missing:
            raise ValueError(f"checkpoint lacks trained CODiff tensors, e.g. {missing[:3]}")
        for key, value in self.state_dict().items():
            state.setdefault(key, value)

    def on_train_end(self) -> None:
        if self.lora_dir and self.trainer.is_global_zero:
            out = self.net.save_lora(Path(self.trainer.default_root_dir) / self.lora_dir)
            log.info("CODiff LoRA weights (diffusers/peft safetensors): %s", out)
