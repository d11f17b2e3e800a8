"""CaVE's stage-1 objective on hand-computed tensors (dual / explicit / implicit), and CODiff's grid-shifted crops
of compressed batches."""

from __future__ import annotations

import pytest
import torch

from jpegrestore.data.shift import shifted_crop
from jpegrestore.losses.cave import CaVELoss

# Predicted and true (100 - QF) / 100: |0.9 - 0.8| + |0.5 - 0.5| -> mean 0.05.
QUALITY = torch.tensor([0.9, 0.5])
QUALITY_TARGET = torch.tensor([0.8, 0.5])
# Reconstruction [1, 1, 2, 2] against zeros: mean |.| = (0.1 + 0.2 + 0.3 + 0.4) / 4 = 0.25.
RESTORED = torch.tensor([[[[0.1, -0.2], [0.3, -0.4]]]])
TARGET = torch.zeros(1, 1, 2, 2)


@pytest.mark.parametrize(
    "learning, expected",
    [("dual", 0.05 + 1000 * 0.25), ("explicit", 0.05), ("implicit", 1000 * 0.25)],
)
def test_learning_modes_on_hand_computed_values(learning: str, expected: float) -> None:
    terms = CaVELoss(learning, rec_weight=1000.0)(QUALITY, QUALITY_TARGET, RESTORED, TARGET)
    assert terms["loss"].item() == pytest.approx(expected, rel=1e-6)
    assert ("qf" in terms) == (learning != "implicit")
    assert ("rec" in terms) == (learning != "explicit")
    if "qf" in terms:
        assert terms["qf"].item() == pytest.approx(0.05, rel=1e-6)
    if "rec" in terms:
        assert terms["rec"].item() == pytest.approx(0.25, rel=1e-6)


def test_gradients_follow_the_selected_terms() -> None:
    quality = QUALITY.clone().requires_grad_(True)
    restored = RESTORED.clone().requires_grad_(True)
    CaVELoss("dual", rec_weight=10.0)(quality, QUALITY_TARGET, restored, TARGET)["loss"].backward()
    # d/dq mean|q - t| = sign(q - t) / B (0 where equal); d/dr 10 * mean|r| = 10 * sign(r) / 4.
    assert torch.allclose(quality.grad, torch.tensor([0.5, 0.0]))
    assert torch.allclose(restored.grad, 10 * torch.sign(RESTORED) / 4)


def test_unused_terms_may_be_absent_but_needed_ones_may_not() -> None:
    assert CaVELoss("explicit")(QUALITY, QUALITY_TARGET, None, TARGET)["loss"].item() == pytest.approx(0.05)
    assert CaVELoss("implicit", 2.0)(None, QUALITY_TARGET, RESTORED, TARGET)["loss"].item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="reconstruction"):
        CaVELoss("dual")(QUALITY, QUALITY_TARGET, None, TARGET)
    with pytest.raises(ValueError, match="learning must be one of"):
        CaVELoss("both")
    with pytest.raises(ValueError, match="positive"):
        CaVELoss("dual", rec_weight=0.0)


def _batch(b: int = 64, size: int = 40) -> dict:
    target = torch.arange(b * 3 * size * size, dtype=torch.float32).reshape(b, 3, size, size)
    return {"input": target + 0.5, "target": target, "quality": torch.full((b,), 10), "coeffs": object()}


def test_shifted_crop_cuts_input_and_target_at_the_same_offsets() -> None:
    batch = _batch()
    out = shifted_crop(batch, 32, shift_prob=0.5, generator=torch.Generator().manual_seed(0))
    assert out["input"].shape == out["target"].shape == (64, 3, 32, 32)
    assert "coeffs" not in out and torch.equal(out["quality"], batch["quality"])
    offsets = out["crop_offset"]
    for i, (top, left) in enumerate(offsets.tolist()):
        assert torch.equal(out["target"][i], batch["target"][i, :, top : top + 32, left : left + 32])
        assert torch.equal(out["input"][i], batch["input"][i, :, top : top + 32, left : left + 32])
    assert set(offsets.flatten().tolist()) == set(range(9))  # 0..8, both ends included (a 32 crop of 40)
    unshifted = (offsets == 0).all(1).float().mean().item()
    assert 0.3 < unshifted < 0.75  # about 1/2 at (0, 0), plus the shifted draws that land on (0, 0)
    assert (offsets % 8 != 0).any(1).any()  # some crops put the JPEG grid at another phase


def test_shifted_crop_extremes_and_errors() -> None:
    never = shifted_crop(_batch(8), 32, 0.0, torch.Generator().manual_seed(1))
    assert torch.equal(never["crop_offset"], torch.zeros(8, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="data.crop_size"):
        shifted_crop(_batch(2, 24), 32, 0.5, torch.Generator())
