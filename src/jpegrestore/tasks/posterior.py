"""Training recipes of the posterior-sampling JPEG decoder (Man et al., CVPRW 2023), thin over
``jpegrestore.nn.posterior`` and ``jpegrestore.losses``.

:class:`PosteriorMMSE` ("Ours-MSE"): the generator trained with MSE and zero noise maps; it is the MMSE estimator
Xbar(Y) of the second-moment penalty. :class:`PosteriorGAN`: Eq. 8-10, alternating critic and generator updates

    critic:     max_D  V(D, G) - lambda_R1 R1(D)          (non-saturating logistic loss, R1 on real images)
    generator:  min_G  V(D, G) + lambda_C C + lambda_FM FM + lambda_P P + lambda_SM SM

with P draws of Z per input for every term. Every pixel-space term is a mean over elements on the [0, 1] scale
(see ``jpegrestore.losses``); the adversarial term has weight 1 as in Eq. 10.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from jpegrestore.losses import (
    PerceptualLoss,
    consistency_loss,
    first_moment_loss,
    mse_loss,
    nonsaturating_discriminator_loss,
    nonsaturating_generator_loss,
    r1_penalty,
    second_moment_loss,
)
from jpegrestore.tasks.base import AdversarialTask, RestorationTask
from jpegrestore.checkpoints import METADATA_KEY, checkpoint_recipe, load_network
from jpegrestore.tasks.schedules import piecewise_linear
from jpegrestore.utils.instantiate import instantiate_object, to_plain

#: Loss terms (besides the adversarial one) of each model variant of the paper.
VARIANT_TERMS = {"ffhq": ("c", "fm"), "general": ("c", "fm", "p", "sm")}
#: Seed of the single draw shown in validation metrics and grids (same Z at every validation).
VALIDATION_SEED = 0


class PosteriorMMSE(RestorationTask):
    """The MMSE estimator: ``mean (G(0, Y) - X)^2`` on [0, 1], noise maps fixed at zero (``noise=False``).

    Its checkpoints restore deterministically through the plain checkpoint method (the network is built with
    ``stochastic: false``), and ``model.mmse_checkpoint`` of :class:`PosteriorGAN` loads them frozen.
    """

    recipe = "posterior_mmse"

    def restore(self, batch: Mapping[str, Any]) -> Tensor:
        return self.net.generate(batch["input"], batch["coeffs"].qt, noise=False)

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        loss = mse_loss(self.restore(batch), batch["target"])
        self.log("train/loss", loss, prog_bar=True)
        return loss


def load_mmse_estimator(path: str) -> nn.Module:
    """The frozen MMSE generator of a ``posterior_mmse`` checkpoint (eval mode, no gradients).

    ValueError naming the file when it was written by another recipe.
    """
    recipe = checkpoint_recipe(path)
    if recipe != PosteriorMMSE.recipe:
        raise ValueError(f"model.mmse_checkpoint={path} was written by recipe {recipe!r}; the second-moment "
                         f"penalty needs a '{PosteriorMMSE.recipe}' checkpoint (python train.py "
                         "experiment=posterior_mmse)")
    network = load_network(path)
    network.requires_grad_(False)
    return network.eval()


class PosteriorGAN(AdversarialTask):
    """The posterior sampler G(Z, Y) against a critic, manual optimization (one critic and one generator step per
    batch, so ``trainer.global_step`` advances by 2 per batch).

    Args:
        network, discriminator: constructor configs of G and D.
        optimizer, scheduler / discriminator_optimizer, discriminator_scheduler: of G / of D (D falls back to G's).
        variant: "ffhq" (GAN + C + FM) or "general" (GAN + C + FM + P + SM), the paper's two models. A term
            whose weight is 0 is left out (lambda_p=0 trains "general" without the VGG19 file).
        draws: P, the draws of Z per input (>= 2 when SM is used).
        lambda_r1, lambda_fm, lambda_p, lambda_sm: weights of R1, FM, P and SM.
        lambda_c: the consistency weight's schedule, ``[[iteration, value], ...]`` piecewise linear over
            generator iterations (batches), or a single number.
        mmse_checkpoint: a ``posterior_mmse`` checkpoint, loaded frozen for SM (required by "general"). Its weights
            are not stored in our checkpoints; its path is (``hparams`` and the checkpoint metadata).
        generator_checkpoint: optional checkpoint whose generator weights G starts from (e.g. the MMSE one).
        vgg_weights: the VGG19 file for P (None: resolved offline by ``jpegrestore.weights``).
        conditional_critic: feed D the pair (image, JPEG), as the paper's conditional GAN does (True), or the
            image alone (False). ``discriminator.in_channels`` None takes the matching count (6 or 3 for RGB).
    """

    recipe = "posterior_gan"
    #: a resumed run takes this file from the checkpoint it resumes (``runner.build``), never another one
    resumed_paths = ("mmse_checkpoint",)
    evaluation_method = "jpegrestore.evaluation.posterior.PosteriorMethod"
    unsaved_prefixes = ("mmse.", "perceptual.")

    def __init__(
        self,
        network: Mapping[str, Any],
        discriminator: Mapping[str, Any],
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        discriminator_optimizer: Mapping[str, Any] | None = None,
        discriminator_scheduler: Mapping[str, Any] | None = None,
        variant: str = "general",
        draws: int = 8,
        lambda_r1: float = 0.0128,
        lambda_c: Any = 1.0,
        lambda_fm: float = 10.0,
        lambda_p: float = 1.0,
        lambda_sm: float = 1.0e3,
        mmse_checkpoint: str | None = None,
        generator_checkpoint: str | None = None,
        vgg_weights: str | None = None,
        conditional_critic: bool = True,
        grid_images: int = 4,
    ) -> None:
        super().__init__(network, optimizer, scheduler, grid_images)
        if variant not in VARIANT_TERMS:
            raise ValueError(f"model.variant must be one of {sorted(VARIANT_TERMS)}, got {variant!r}")
        # A term whose weight is 0 is not computed (and needs no VGG19 / MMSE checkpoint).
        off = {"p": lambda_p == 0, "sm": lambda_sm == 0}
        self.terms = tuple(t for t in VARIANT_TERMS[variant] if not off.get(t, False))
        minimum_draws = 2 if "sm" in self.terms else 1
        if int(draws) < minimum_draws:
            raise ValueError(f"model.draws must be >= {minimum_draws} for variant {variant!r}, got {draws}")
        self.automatic_optimization = False
        self.variant, self.draws = variant, int(draws)
        self.lambda_r1, self.lambda_fm, self.lambda_p, self.lambda_sm = lambda_r1, lambda_fm, lambda_p, lambda_sm
        self.lambda_c_points = [[0, float(lambda_c)]] if isinstance(lambda_c, (int, float)) else to_plain(lambda_c)
        piecewise_linear(self.lambda_c_points, 0)  # validates the schedule now
        self.conditional_critic = conditional_critic
        self.discriminator_optimizer_config = to_plain(discriminator_optimizer)
        self.discriminator_scheduler_config = to_plain(discriminator_scheduler)
        self.discriminator: nn.Module = instantiate_object(self._critic_config(to_plain(discriminator)))
        self.mmse_checkpoint = mmse_checkpoint
        if "sm" in self.terms and mmse_checkpoint is None:
            raise ValueError("variant 'general' uses the second-moment penalty: set model.mmse_checkpoint=<a "
                             "posterior_mmse checkpoint> (or model.variant=ffhq)")
        self.mmse = load_mmse_estimator(mmse_checkpoint) if "sm" in self.terms else None
        if generator_checkpoint is not None:
            try:
                self.net.load_state_dict(load_network(generator_checkpoint).state_dict())
            except RuntimeError as error:
                raise ValueError(f"generator weights in {generator_checkpoint} do not fit model.network: {error}")
        self.perceptual = PerceptualLoss(vgg_weights) if "p" in self.terms else None

    def _critic_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """``config`` with ``in_channels`` filled in (image channels, twice for a conditional critic), or checked."""
        expected = self.net.channels * (2 if self.conditional_critic else 1)
        given = config.get("in_channels")
        if given is None:
            return {**config, "in_channels": expected}
        if int(given) != expected:
            raise ValueError(f"model.discriminator.in_channels={given}, but a critic with conditional_critic="
                             f"{self.conditional_critic} sees {expected} channels (set it to null or {expected})")
        return config

    def train(self, mode: bool = True) -> "PosteriorGAN":
        """Switch modes but keep the frozen MMSE estimator in eval mode."""
        super().train(mode)
        if self.mmse is not None:
            self.mmse.eval()
        return self

    # ------------------------------------------------------------------ sampling

    def draw(self, batch: Mapping[str, Any], draws: int, generator: torch.Generator | None = None) -> Tensor:
        """``draws`` restorations of every input: [P, B, C, H, W] in [0, 1]."""
        image, tables = batch["input"], batch["coeffs"].qt
        flat = self.net.generate(image.repeat(draws, 1, 1, 1), tables.repeat(draws, 1, 1, 1), noise=True,
                                 generator=generator)
        return flat.view(draws, *image.shape)

    def restore(self, batch: Mapping[str, Any]) -> Tensor:
        """One draw per input, with the same Z at every call (seed ``VALIDATION_SEED``)."""
        generator = torch.Generator(device=batch["input"].device).manual_seed(VALIDATION_SEED)
        return self.draw(batch, 1, generator)[0]

    def lambda_c(self) -> float:
        """The consistency weight at the current generator iteration (``global_step // 2``)."""
        return piecewise_linear(self.lambda_c_points, self.global_step // 2)

    def _critic(self, images: Tensor, jpeg_image: Tensor) -> Tensor:
        if self.conditional_critic:
            repeats = images.shape[0] // jpeg_image.shape[0]
            images = torch.cat([images, jpeg_image.repeat(repeats, 1, 1, 1)], 1)
        return self.discriminator(images)

    # ------------------------------------------------------------------ losses

    def generator_loss(self, batch: Mapping[str, Any], samples: Tensor) -> dict[str, Tensor]:
        """Terms of Eq. 10 for draws ``samples`` [P, B, C, H, W] (``total`` included)."""
        target, jpeg_image, coeffs = batch["target"], batch["input"], batch["coeffs"]
        p = samples.shape[0]
        flat = samples.flatten(0, 1)
        terms = {"gan": nonsaturating_generator_loss(self._critic(flat, jpeg_image))}
        terms["c"] = consistency_loss(flat, jpeg_image.repeat(p, 1, 1, 1), coeffs.qt.repeat(p, 1, 1, 1),
                                      coeffs.subsampling)
        terms["fm"] = first_moment_loss(samples, target)
        weights = {"gan": 1.0, "c": self.lambda_c(), "fm": self.lambda_fm}
        if "p" in self.terms:
            terms["p"] = self.perceptual(flat, target.repeat(p, 1, 1, 1))
            weights["p"] = self.lambda_p
        if "sm" in self.terms:
            with torch.no_grad():
                mmse = self.mmse.generate(jpeg_image, coeffs.qt, noise=False)
            terms["sm"] = second_moment_loss(samples, target, mmse)
            weights["sm"] = self.lambda_sm
        terms["total"] = sum(weights[k] * terms[k] for k in weights)
        return terms

    def discriminator_loss(self, batch: Mapping[str, Any], samples: Tensor) -> dict[str, Tensor]:
        """Eq. 9 as a loss to minimize: non-saturating logistic loss + lambda_R1 * R1 on the real images."""
        real = batch["target"].detach().requires_grad_(True)
        real_logits = self._critic(real, batch["input"])
        fake_logits = self._critic(samples.detach().flatten(0, 1), batch["input"])
        terms = {"gan": nonsaturating_discriminator_loss(real_logits, fake_logits),
                 "r1": r1_penalty(real_logits, real)}
        terms["total"] = terms["gan"] + self.lambda_r1 * terms["r1"]
        return terms

    # ------------------------------------------------------------------ training

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        g_opt, d_opt = self.optimizers()
        lambda_c = self.lambda_c()

        samples = self.draw(batch, self.draws, self.step_generator(batch_idx))
        self.toggle_optimizer(d_opt)
        d_terms = self.discriminator_loss(batch, samples)
        d_opt.zero_grad()
        self.manual_backward(d_terms["total"])
        d_opt.step()
        self.untoggle_optimizer(d_opt)

        self.toggle_optimizer(g_opt)
        g_terms = self.generator_loss(batch, samples)
        g_opt.zero_grad()
        self.manual_backward(g_terms["total"])
        g_opt.step()
        self.untoggle_optimizer(g_opt)

        self.step_schedulers()
        self.log_dict({f"train/g_{k}": v.detach() for k, v in g_terms.items()})
        self.log_dict({f"train/d_{k}": v.detach() for k, v in d_terms.items()})
        self.log("train/lambda_c", lambda_c)
        self.log("train/g_loss", g_terms["total"].detach(), prog_bar=True)
        self.log("train/d_loss", d_terms["total"].detach(), prog_bar=True)

    # ------------------------------------------------------------------ checkpoints

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint[METADATA_KEY]["variant"] = self.variant
        if self.mmse_checkpoint is not None:  # frozen, not stored: where it comes from
            checkpoint[METADATA_KEY]["mmse_checkpoint"] = str(self.mmse_checkpoint)
