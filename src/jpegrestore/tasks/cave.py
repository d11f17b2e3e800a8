"""CODiff stage 1: train CaVE (``jpegrestore.nn.cave``) by dual learning, thin over ``losses.cave``.

Training: the JPEG-decoded input goes through the encoder once; the QF head predicts (100 - QF) / 100 and the
decoder reconstructs the original; :class:`~jpegrestore.losses.cave.CaVELoss` combines the terms that
``learning`` selects (dual | explicit | implicit, the paper's Table 4). The head a mode does not train is frozen
(``requires_grad=False``) and left out of the optimizer, so DDP never waits for its gradients.

Validation: the reconstruction's PSNR / PSNR-B / SSIM per quality beside plain JPEG's (the base task), plus the
QF prediction error in QF units per quality: ``val/qf_mae_qN`` (mean |predicted - true|) and ``val/qf_mse_qN``
(mean squared error, the paper's Fig. 7), and their means over all qualities ``val/qf_mae`` / ``val/qf_mse``.

The checkpoint's ``jpegrestore`` entry rebuilds the CaVE alone: ``load_network(ckpt)`` returns it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from jpegrestore.losses.cave import CaVELoss
from jpegrestore.nn.cave import DECODER_MODULES, QF_HEAD_MODULES, quality_from_prediction, quality_target
from jpegrestore.tasks.base import GridShiftedCrops, RestorationTask
from jpegrestore.tasks.validation import QualityBinnedMean

QF_METRICS = ("qf_mae", "qf_mse")


class CaVETask(GridShiftedCrops, RestorationTask):
    """Stage 1 of CODiff: CaVE with the QF head and the training decoder.

    Args:
        network: CaVE constructor config (``{"_target_": "jpegrestore.nn.cave.CaVE", ...}``).
        optimizer, scheduler: as for :class:`RestorationTask` (paper: Adam 2e-5, no schedule).
        learning: "dual" (paper), "explicit" (QF loss only) or "implicit" (reconstruction only).
        rec_weight: lambda of Eq. 6 (paper: 1000).
        train_crop: side of the training crop cut out of each compressed batch crop (CODiff: 256 out of 264),
            so the JPEG block grid starts at a random phase; None trains on the datamodule's crops as they are.
        shift_prob: probability that a crop is taken at a random offset rather than at (0, 0) (CODiff: 0.5).
        grid_images: validation images in the logged grid.
    """

    recipe = "cave"
    not_a_restorer = (
        "CaVE (CODiff stage 1) embeds JPEGs and predicts their quality for CODiff stage 2; train stage 2 with "
        "experiment=codiff_stage2 model.cave_checkpoint=<this file> and evaluate that checkpoint"
    )

    def __init__(
        self,
        network: Mapping[str, Any],
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        learning: str = "dual",
        rec_weight: float = 1000.0,
        train_crop: int | None = None,
        shift_prob: float = 0.5,
        grid_images: int = 4,
    ) -> None:
        super().__init__(network, optimizer, scheduler, grid_images)
        self.loss = CaVELoss(learning, rec_weight)
        if not 0.0 <= shift_prob <= 1.0:
            raise ValueError(f"shift_prob must be in [0, 1], got {shift_prob}")
        if train_crop is not None and int(train_crop) <= 0:
            raise ValueError(f"train_crop must be positive or null, got {train_crop}")
        self.train_crop = None if train_crop is None else int(train_crop)
        self.shift_prob = float(shift_prob)
        unused = () if learning == "dual" else DECODER_MODULES if learning == "explicit" else QF_HEAD_MODULES
        for name in unused:
            getattr(self.net, name).requires_grad_(False)
        self.qf_metrics = QualityBinnedMean(list(QF_METRICS))

    def network_spec(self) -> dict[str, Any]:
        """The CaVE spec, built without the (slow, then overwritten) orthogonal initialisation on reload."""
        return {**super().network_spec(), "init_gain": None}

    # ------------------------------------------------------------------ training

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        batch = self.training_crops(batch, batch_idx)
        images = batch["input"]
        feature_map, skips = self.net.encode(images)
        quality = self.net.predict_quality(feature_map) if self.loss.uses_quality else None
        restored = self.net.decode(feature_map, skips, images.shape[-2:]) if self.loss.uses_reconstruction else None
        terms = self.loss(quality, quality_target(batch["quality"]), restored, batch["target"])
        for name, value in terms.items():
            self.log(f"train/{name}_loss" if name != "loss" else "train/loss", value, prog_bar=name == "loss")
        return terms["loss"]

    # ------------------------------------------------------------------ validation

    def restore(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """The decoder's reconstruction of the JPEG input, [B, 3, H, W]."""
        return self.net.reconstruct(batch["input"])

    def predicted_quality_factor(self, images: torch.Tensor) -> torch.Tensor:
        """JPEG-decoded images [B, 3, H, W] in [0, 1] -> predicted quality factor, float [B] (about 0..100)."""
        return quality_from_prediction(self.net(images)[1])

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        super().validation_step(batch, batch_idx)
        error = self.predicted_quality_factor(batch["input"]).float() - batch["quality"].float()
        self.qf_metrics.update(batch["quality"], torch.stack([error.abs(), error.square()], 1))

    def on_validation_epoch_end(self) -> None:
        results = self.qf_metrics.compute()
        self.qf_metrics.reset()
        super().on_validation_epoch_end()
        if self.trainer.sanity_checking:
            return
        for name, value in results.items():
            self.log(f"val/{name}", value, sync_dist=True, prog_bar=name == "qf_mae")
