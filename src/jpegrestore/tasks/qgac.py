"""QGAC training recipes (Ehrlich et al., ECCV 2020), thin over ``jpegrestore.nn.qgac`` and ``losses``.

Stage 1 (:class:`QGACLuma`): the Y network on luma, ``L1 - 0.05 SSIM``, Adam 1e-3 halved every 100k.
Stage 2 (:class:`QGACColor`): the colour network with the stage-1 Y network loaded and frozen, cosine
1e-3 -> 1e-6; with ``freeze_y=False`` and no checkpoint it trains the whole model end to end (quickstart).
Stage 3 (:class:`QGACGAN`): both networks against a DCGAN discriminator with texture + RaGAN + L1 losses,
manual optimization; :func:`export_interpolated` blends the stage-2 and stage-3 weights (alpha 0.7).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from jpegrestore import jpeg
from jpegrestore.losses import L1SSIMLoss, TextureLoss, l1_loss, ragan_discriminator_loss, ragan_generator_loss
from jpegrestore.tasks.base import AdversarialTask, RestorationTask
from jpegrestore.nn.qgac import DCTStats
from jpegrestore.checkpoints import (
    FORMAT_VERSION,
    METADATA_KEY,
    checkpoint_metadata,
    load_network,
    network_state_dict,
    read_checkpoint,
)
from jpegrestore.tasks.dct_stats import (
    HOW_TO_COMPUTE,
    PRIOR,
    PRIOR_ORIGIN,
    checkpoint_dct_stats,
    compute_dct_stats,
)
from jpegrestore.utils.instantiate import instantiate_object, to_plain
from jpegrestore.utils.logging import get_logger
from jpegrestore.utils.precision import in_float32

log = get_logger(__name__)


@in_float32
def luma(images: torch.Tensor) -> torch.Tensor:
    """JFIF luma of RGB images: [B, 3, H, W] in [0, 1] -> [B, 1, H, W] in [0, 1]; [B, 1, H, W] passes through."""
    if images.shape[1] == 1:
        return images
    return jpeg.rgb_to_ycbcr(images * 255.0)[:, :1] / 255.0


class _QGACTask(RestorationTask):
    """QGAC tasks: the DCT statistics live in the network's buffers (not in the spec) and travel with checkpoints.

    Where they come from (``network.stats``, i.e. ``dct_stats`` in train.yaml; see ``jpegrestore.tasks.dct_stats``):
    the checkpoint the run starts from (stages 2 and 3; a disagreeing file is an error), a file, or, with
    neither, computed from the training data at setup. ``prior`` is refused by the paper recipes
    (``paper_recipe``). ``dct_stats_origin`` records the choice in every checkpoint.
    """

    state_carried_kwargs = ("stats",)
    paper_recipe: bool = True

    def _init_dct_stats(self, source_checkpoint: str | Path | None, dct_stats_batches: int) -> None:
        """Settle the statistics (call at the end of ``__init__``, once ``recipe`` and ``paper_recipe`` are set)."""
        self.dct_stats_batches = int(dct_stats_batches)
        setting = self.network_config.get("stats")
        origin: str | None = None  # None: compute from the training data in setup()
        if isinstance(setting, str) and setting == PRIOR:
            if self.paper_recipe:
                raise ValueError(f"dct_stats=prior is for the quickstart and tests only; {self.recipe} needs measured "
                                 f"DCT statistics: {HOW_TO_COMPUTE}")
            log.warning("dct_stats=prior: %s normalizes with the data-independent prior DCT statistics (chroma spread "
                        "3-10x too wide for photos); fine for a smoke test, not for results", self.recipe)
            origin = PRIOR_ORIGIN
        elif setting is not None:
            origin = f"file {setting}"
        if source_checkpoint is not None:
            inherited, source_origin = checkpoint_dct_stats(source_checkpoint)
            if source_origin == PRIOR_ORIGIN and self.paper_recipe:
                raise ValueError(f"{source_checkpoint} carries the data-independent prior DCT statistics, not measured "
                                 f"ones, and {self.recipe} inherits them; {HOW_TO_COMPUTE}, and retrain from stage 1")
            if setting is not None and not self.net.stats.allclose(inherited):
                raise ValueError(f"dct_stats={setting} disagrees with the DCT statistics carried by "
                                 f"{source_checkpoint} ({source_origin}); {self.recipe} inherits the statistics of "
                                 "the checkpoint it starts from: drop the dct_stats override")
            self.net.set_stats(inherited)
            origin = f"{source_origin}; inherited from {source_checkpoint}"
        self.dct_stats_origin = origin

    def setup(self, stage: str) -> None:
        """Compute the DCT statistics from the training data when none were given (rank 0, broadcast)."""
        if stage != "fit" or self.dct_stats_origin is not None or self.trainer.ckpt_path:
            return  # given, inherited, or restored with the resumed checkpoint's buffers and metadata
        trainer = self.trainer
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "statistics_dataloader"):
            raise ValueError(f"{self.recipe}: no DCT statistics were given and there is no RestorationDataModule to "
                             f"compute them from; {HOW_TO_COMPUTE}")
        payload = None
        if trainer.is_global_zero:
            log.info("dct_stats=null: computing the DCT statistics from %d batches of the training data",
                     self.dct_stats_batches)
            payload = compute_dct_stats(datamodule, self.dct_stats_batches, progress=True).to_dict()
        stats = DCTStats.from_dict(trainer.strategy.broadcast(payload, src=0), source="rank 0")
        self.net.set_stats(stats)
        self.dct_stats_origin = f"computed from the training data at setup (up to {self.dct_stats_batches} batches)"
        if trainer.is_global_zero:
            out = Path(trainer.default_root_dir) / "dct_stats.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            stats.save(out)
            log.info("DCT statistics written to %s (reuse with dct_stats=%s)", out, out)

    def checkpoint_extras(self) -> dict[str, Any]:
        return {"dct_stats": self.dct_stats_origin}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        origin = (checkpoint.get(METADATA_KEY) or {}).get("dct_stats")
        if origin is not None:
            self.dct_stats_origin = str(origin)


class QGACLuma(_QGACTask):
    """Stage 1: the Y network. Inputs are the JPEG's Y coefficients; targets the luma of the originals.

    Loss: ``L1 - ssim_weight * SSIM`` on Y in [0, 1] (``distance="mse"``: MSE instead of L1). Validation
    metrics compare luma.
    """

    recipe = "qgac_stage1"

    def __init__(
        self,
        network: Mapping[str, Any],
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        ssim_weight: float = 0.05,
        distance: str = "l1",
        grid_images: int = 4,
        dct_stats_batches: int = 200,
    ) -> None:
        super().__init__(network, optimizer, scheduler, grid_images)
        self.loss = L1SSIMLoss(ssim_weight, distance=distance)
        self._init_dct_stats(None, dct_stats_batches)

    def restore(self, batch: Mapping[str, Any]) -> torch.Tensor:
        return self.net.forward_y(batch["coeffs"])

    def evaluation_views(self, batch, restored):
        return restored, luma(batch["input"].float()), luma(batch["target"].float())

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self.loss(self.net.forward_y(batch["coeffs"]), luma(batch["target"]))
        self.log("train/loss", loss, prog_bar=True)
        return loss


def load_luma_network(model: nn.Module, y_checkpoint: str | Path) -> None:
    """Copy the Y network (``y_net.*``) of a stage-1 checkpoint into ``model`` (statistics: ``_init_dct_stats``)."""
    source = load_network(y_checkpoint)
    try:
        model.y_net.load_state_dict(source.y_net.state_dict())
    except (RuntimeError, AttributeError) as error:
        raise ValueError(f"the Y network in {y_checkpoint} does not fit this model's y_net: {error}") from error


class QGACColor(_QGACTask):
    """Stage 2: colour network guided by a frozen stage-1 Y network (``freeze_y=True``, the paper).

    y_checkpoint: a stage-1 checkpoint whose Y network and DCT statistics (all three components) are loaded.
    With ``freeze_y`` the Y network has ``requires_grad=False``, stays in eval mode and is left out of the
    optimizer. With ``freeze_y=False`` (and optionally no checkpoint) the whole model trains end to end.
    Loss: ``L1 - ssim_weight * SSIM`` on RGB in [0, 1] (``distance="mse"``: MSE instead of L1).
    """

    def __init__(
        self,
        network: Mapping[str, Any],
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        y_checkpoint: str | None = None,
        freeze_y: bool = True,
        ssim_weight: float = 0.05,
        distance: str = "l1",
        grid_images: int = 4,
        dct_stats_batches: int = 200,
    ) -> None:
        super().__init__(network, optimizer, scheduler, grid_images)
        if freeze_y and y_checkpoint is None:
            raise ValueError("model.y_checkpoint is required when model.freeze_y=true (a stage-1 checkpoint path)")
        if y_checkpoint is not None:
            load_luma_network(self.net, y_checkpoint)
        self.freeze_y = freeze_y
        if freeze_y:
            self.net.y_net.requires_grad_(False)
            self.net.y_net.eval()
        self.recipe = "qgac_stage2" if freeze_y else "qgac_joint"
        self.paper_recipe = freeze_y  # the end-to-end quickstart recipe may use the prior statistics
        self.loss = L1SSIMLoss(ssim_weight, distance=distance)
        self._init_dct_stats(y_checkpoint, dct_stats_batches)

    def train(self, mode: bool = True) -> "QGACColor":
        """Switch modes but keep a frozen Y network in eval mode."""
        super().train(mode)
        if self.freeze_y:
            self.net.y_net.eval()
        return self

    def restore(self, batch: Mapping[str, Any]) -> torch.Tensor:
        return self.net(batch["coeffs"])

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self.loss(self.net(batch["coeffs"]), batch["target"])
        self.log("train/loss", loss, prog_bar=True)
        return loss


class QGACGAN(AdversarialTask, _QGACTask):
    """Stage 3: GAN fine-tuning of the whole generator (QGAC eq. 3), manual optimization.

    Generator loss ``texture_weight * |VGG16_conv5_3(x) - VGG16_conv5_3(y)|_1 + gan_weight * L_G^Ra
    + l1_weight * |x - y|_1`` (paper: 1, 5e-3, 1e-2); discriminator loss ``L_D^Ra``. Each batch does one
    generator step, then one discriminator step, and steps both schedulers (so ``trainer.global_step``
    advances by 2 per batch: set ``max_steps`` to twice the number of iterations).

    generator_checkpoint: stage-2 checkpoint the generator starts from (and that :meth:`export_interpolated`
        blends with); the DCT statistics come with it.
    texture_network: "minc_vgg16" (the paper's MINC-2500 VGG16, converted with
        ``python -m jpegrestore.losses.convert_minc``) or "imagenet_vgg16" (torchvision's; a departure).
    vgg_weights: that network's file (None: resolved by ``jpegrestore.weights``).
    """

    recipe = "qgac_stage3"
    unsaved_prefixes = ("texture_loss.",)

    def __init__(
        self,
        network: Mapping[str, Any],
        discriminator: Mapping[str, Any],
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        discriminator_optimizer: Mapping[str, Any] | None = None,
        discriminator_scheduler: Mapping[str, Any] | None = None,
        generator_checkpoint: str | None = None,
        vgg_weights: str | None = None,
        texture_network: str = "minc_vgg16",
        texture_weight: float = 1.0,
        gan_weight: float = 5e-3,
        l1_weight: float = 1e-2,
        grid_images: int = 4,
        dct_stats_batches: int = 200,
    ) -> None:
        super().__init__(network, optimizer, scheduler, grid_images)
        self.automatic_optimization = False
        self.discriminator_config = to_plain(discriminator)
        self.discriminator_optimizer_config = to_plain(discriminator_optimizer)
        self.discriminator_scheduler_config = to_plain(discriminator_scheduler)
        self.discriminator: nn.Module = instantiate_object(self.discriminator_config)
        self.generator_checkpoint = generator_checkpoint
        if generator_checkpoint is not None:
            source = load_network(generator_checkpoint)
            try:
                self.net.load_state_dict(source.state_dict())
            except RuntimeError as error:
                raise ValueError(f"generator weights in {generator_checkpoint} do not fit model.network: {error}")
        self._init_dct_stats(generator_checkpoint, dct_stats_batches)
        self.texture_network = texture_network if texture_weight else "none"
        self.texture_loss = TextureLoss(vgg_weights, network=texture_network) if texture_weight else None
        self.texture_weight, self.gan_weight, self.l1_weight = texture_weight, gan_weight, l1_weight

    def checkpoint_extras(self) -> dict[str, Any]:
        return {**super().checkpoint_extras(), "texture_network": self.texture_network}

    def restore(self, batch: Mapping[str, Any]) -> torch.Tensor:
        return self.net(batch["coeffs"])

    def generator_loss(self, restored: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Terms of the generator objective for restored and original RGB [B, 3, H, W] (``total`` included)."""
        real_logits = self.discriminator(target).detach()
        fake_logits = self.discriminator(restored)
        terms = {"gan": ragan_generator_loss(real_logits, fake_logits), "l1": l1_loss(restored, target)}
        total = self.gan_weight * terms["gan"] + self.l1_weight * terms["l1"]
        if self.texture_loss is not None:
            terms["texture"] = self.texture_loss(restored, target)
            total = total + self.texture_weight * terms["texture"]
        terms["total"] = total
        return terms

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        g_opt, d_opt = self.optimizers()
        target = batch["target"]
        restored = self.net(batch["coeffs"])

        self.toggle_optimizer(g_opt)
        g_terms = self.generator_loss(restored, target)
        g_opt.zero_grad()
        self.manual_backward(g_terms["total"])
        g_opt.step()
        self.untoggle_optimizer(g_opt)

        self.toggle_optimizer(d_opt)
        d_loss = ragan_discriminator_loss(self.discriminator(target), self.discriminator(restored.detach()))
        d_opt.zero_grad()
        self.manual_backward(d_loss)
        d_opt.step()
        self.untoggle_optimizer(d_opt)

        self.step_schedulers()
        self.log_dict({f"train/g_{k}": v.detach() for k, v in g_terms.items()}, prog_bar=False)
        self.log("train/d_loss", d_loss.detach(), prog_bar=True)
        self.log("train/g_loss", g_terms["total"].detach(), prog_bar=True)

    def export_interpolated(self, out_path: str | Path, alpha: float = 0.7, psnr_checkpoint: str | None = None) -> Path:
        """Write ``(1 - alpha) * PSNR weights + alpha * current GAN weights`` as a checkpoint for ``load_network``.

        psnr_checkpoint defaults to ``generator_checkpoint`` (the stage-2 model this run started from).
        """
        source = psnr_checkpoint or self.generator_checkpoint
        if source is None:
            raise ValueError("export_interpolated needs psnr_checkpoint (no model.generator_checkpoint was set)")
        gan_state = {k: v.detach().cpu() for k, v in self.net.state_dict().items()}
        return write_interpolated(out_path, load_network(source).state_dict(), gan_state, alpha, self.network_spec(),
                                  {"psnr": str(source), "gan": "<in-memory stage-3 weights>"}, self.checkpoint_extras())


def interpolate_state_dicts(psnr: Mapping[str, torch.Tensor], gan: Mapping[str, torch.Tensor],
                            alpha: float) -> dict[str, torch.Tensor]:
    """``(1 - alpha) * psnr + alpha * gan`` for floating tensors; other tensors are taken from ``gan``."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"interpolation alpha must lie in [0, 1], got {alpha}")
    if set(psnr) != set(gan):
        raise ValueError(f"the two networks differ in parameters: {sorted(set(psnr) ^ set(gan))[:5]}")
    blended = {}
    for key, gan_value in gan.items():
        psnr_value = psnr[key].to(gan_value.device)
        if psnr_value.shape != gan_value.shape:
            raise ValueError(f"parameter {key} has shape {tuple(psnr_value.shape)} vs {tuple(gan_value.shape)}")
        blended[key] = torch.lerp(psnr_value, gan_value, alpha) if gan_value.is_floating_point() else gan_value
    return blended


def write_interpolated(out_path: str | Path, psnr: Mapping[str, torch.Tensor], gan: Mapping[str, torch.Tensor],
                       alpha: float, network_spec: Mapping[str, Any], sources: Mapping[str, str],
                       extras: Mapping[str, Any] | None = None) -> Path:
    """Save interpolated weights in the checkpoint layout :func:`load_network` reads. -> the written path.

    extras: recipe facts of the GAN checkpoint kept in the metadata (texture network, DCT statistics origin).
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    state = {f"net.{k}": v for k, v in interpolate_state_dicts(psnr, gan, alpha).items()}
    torch.save({
        "state_dict": state,
        METADATA_KEY: {**dict(extras or {}), "format": FORMAT_VERSION, "recipe": "qgac_interpolated",
                       "network": dict(network_spec), "state_dict_prefix": "net.",
                       "interpolation": {"alpha": alpha, **sources}},
    }, out_path)
    return out_path


def export_interpolated(psnr_checkpoint: str | Path, gan_checkpoint: str | Path, out_path: str | Path,
                        alpha: float = 0.7) -> Path:
    """Blend a stage-2 (PSNR) and a stage-3 (GAN) checkpoint of one network: ``(1-alpha) psnr + alpha gan``."""
    gan_checkpoint_data = read_checkpoint(gan_checkpoint)
    meta = checkpoint_metadata(gan_checkpoint_data, str(gan_checkpoint))
    psnr = load_network(psnr_checkpoint).state_dict()
    gan = network_state_dict(gan_checkpoint_data, "net.")
    sources = {"psnr": str(psnr_checkpoint), "gan": str(gan_checkpoint)}
    extras = {k: meta[k] for k in ("dct_stats", "texture_network") if k in meta}
    return write_interpolated(out_path, psnr, gan, alpha, meta["network"], sources, extras)
