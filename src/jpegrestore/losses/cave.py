"""CaVE's stage-1 objective (CODiff, Eq. 4-6): L_CaVE = L_QF + lambda * L_rec, both L1.

``learning`` selects the paper's Table 4 ablation:

- ``"dual"``: L_QF + lambda * L_rec (the paper's CaVE);
- ``"explicit"``: L_QF alone (quality prediction only);
- ``"implicit"``: lambda * L_rec alone (reconstruction only; the same term as in the dual objective, so the
  reconstruction gradients of "implicit" and "dual" are identical).

The released config writes the same ratio the other way round (QF weight 0.001, reconstruction weight 1); only
the overall scale differs, which Adam's per-parameter normalisation all but removes.
"""

from __future__ import annotations

import torch

from jpegrestore.losses.pixel import l1_loss
from jpegrestore.utils.precision import in_float32

LEARNING_MODES = ("dual", "explicit", "implicit")


class CaVELoss:
    """L_QF + rec_weight * L_rec with the terms ``learning`` selects.

    Args:
        learning: "dual", "explicit" or "implicit".
        rec_weight: lambda of Eq. 6 (paper: 1000).
    """

    def __init__(self, learning: str = "dual", rec_weight: float = 1000.0) -> None:
        if learning not in LEARNING_MODES:
            raise ValueError(f"learning must be one of {LEARNING_MODES}, got {learning!r}")
        if rec_weight <= 0:
            raise ValueError(f"rec_weight (lambda) must be positive, got {rec_weight}")
        self.learning = learning
        self.rec_weight = float(rec_weight)

    @property
    def uses_quality(self) -> bool:
        """Whether the QF head is trained (explicit learning)."""
        return self.learning in ("dual", "explicit")

    @property
    def uses_reconstruction(self) -> bool:
        """Whether the decoder is trained (implicit learning)."""
        return self.learning in ("dual", "implicit")

    @in_float32
    def __call__(
        self,
        quality: torch.Tensor | None,
        quality_target: torch.Tensor,
        restored: torch.Tensor | None,
        target: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Loss terms. -> {"loss": total, "qf": L_QF, "rec": L_rec} (terms not in the objective are omitted).

        Args:
            quality: predicted (100 - QF) / 100, [B] (may be None unless the QF term is used).
            quality_target: (100 - QF) / 100 of the true quality, [B].
            restored: decoder output [B, 3, H, W] (may be None unless the reconstruction term is used).
            target: original images [B, 3, H, W] in [0, 1].
        """
        terms: dict[str, torch.Tensor] = {}
        total = None
        if self.uses_quality:
            if quality is None:
                raise ValueError(f"learning={self.learning!r} needs the predicted quality")
            terms["qf"] = l1_loss(quality, quality_target.to(quality))
            total = terms["qf"]
        if self.uses_reconstruction:
            if restored is None:
                raise ValueError(f"learning={self.learning!r} needs the reconstruction")
            terms["rec"] = l1_loss(restored, target.to(restored))
            weighted = self.rec_weight * terms["rec"]
            total = weighted if total is None else total + weighted
        terms["loss"] = total
        return terms
