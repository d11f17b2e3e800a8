"""AdaIN colour fix, and the authors' 8-bit output around it, against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from jpegrestore.nn.codiff.colorfix import adain_color_fix, authors_8bit_output, channel_mean_std, truncate_to_8bit

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def test_mean_std_by_hand():
    # channel 0: [0.1, 0.3] -> mean 0.2, unbiased variance (0.01 + 0.01) / 1 = 0.02
    # channel 1: [0.5, 0.5] -> mean 0.5, variance 0 -> std sqrt(eps)
    x = torch.tensor([[[[0.1, 0.3]], [[0.5, 0.5]]]], dtype=torch.float64)
    mean, std = channel_mean_std(x, eps=1e-5)
    assert mean.shape == std.shape == (1, 2, 1, 1)
    assert mean.flatten().tolist() == pytest.approx([0.2, 0.5])
    assert std.flatten().tolist() == pytest.approx([math.sqrt(0.02 + 1e-5), math.sqrt(1e-5)])


def test_statistics_are_transferred_by_hand():
    # restored [0.1, 0.3] (mean 0.2, var 0.02); reference [0.4, 0.8] (mean 0.6, var 0.08):
    # (x - 0.2) / sqrt(0.02) * sqrt(0.08) + 0.6 = 2 (x - 0.2) + 0.6 -> [0.4, 0.8]
    restored = torch.tensor([[[[0.1, 0.3]]]], dtype=torch.float64)
    reference = torch.tensor([[[[0.4, 0.8]]]], dtype=torch.float64)
    fixed = adain_color_fix(restored, reference, eps=0.0)
    assert fixed.flatten().tolist() == pytest.approx([0.4, 0.8], abs=1e-12)


def test_per_channel_and_per_image_with_a_different_reference_size():
    torch.manual_seed(0)
    restored = torch.rand(2, 3, 8, 10, dtype=torch.float64) * 0.5
    reference = torch.rand(2, 3, 16, 6, dtype=torch.float64) * 0.3 + 0.4
    fixed = adain_color_fix(restored, reference, eps=0.0, clamp=False)
    for b in range(2):
        for c in range(3):
            assert fixed[b, c].mean().item() == pytest.approx(reference[b, c].mean().item(), abs=1e-12)
            assert fixed[b, c].std().item() == pytest.approx(reference[b, c].std().item(), abs=1e-12)
    # an affine map per channel: the ranking of pixels is unchanged
    assert torch.equal(fixed[0, 1].flatten().argsort(), restored[0, 1].flatten().argsort())


def test_clamps_to_unit_range_and_keeps_float32():
    # restored [0, 1] (mean 0.5, var 0.5) takes the reference's mean 0.7 and var 0.98: 0.7 +- 0.7
    restored = torch.tensor([[[[0.0, 1.0]]]])
    wide = torch.tensor([[[[0.0, 1.4]]]])  # -> [0.0, 1.4], clipped to [0.0, 1.0]
    fixed = adain_color_fix(restored, wide, eps=0.0)
    assert fixed.dtype == torch.float32
    assert fixed.flatten().tolist() == pytest.approx([0.0, 1.0], abs=1e-6)
    unclamped = adain_color_fix(restored, wide, eps=0.0, clamp=False)
    assert unclamped.flatten().tolist() == pytest.approx([0.0, 1.4], abs=1e-6)


def test_mismatched_channels_are_an_error():
    with pytest.raises(ValueError, match="same batch and channels"):
        adain_color_fix(torch.rand(1, 3, 4, 4), torch.rand(1, 1, 4, 4))


@pytest.mark.parametrize("device", DEVICES)
def test_truncation_keeps_the_level_below(device):
    x = torch.tensor([0.999, 1.2, -0.1, 0.5, 3 / 255], device=device)
    assert (truncate_to_8bit(x) * 255).round().tolist() == [254, 255, 0, 127, 3]


@pytest.mark.parametrize("device", DEVICES)
def test_authors_output_truncates_fixes_the_levels_and_truncates_again(device):
    # restored [0.1, 0.3, 0.35] -> 255 x = [25.5, 76.5, 89.25] -> levels [25, 76, 89] (mean 63.33, std 33.61);
    # the JPEG's levels [100, 150, 230] (mean 160, std 65.57): (l - 63.33) / 33.61 * 65.57 + 160
    # = [85.69, 184.55, 209.75] -> truncated [85, 184, 209]. The colour fix on the float output gives
    # [85.65, 184.78, 209.57], rounded [86, 185, 210].
    restored = torch.tensor([[[[0.1, 0.3, 0.35]]]], device=device)
    reference = torch.tensor([[[[100, 150, 230]]]], device=device) / 255
    authors = authors_8bit_output(restored, reference, eps=0.0)
    assert (authors * 255).round().flatten().tolist() == [85, 184, 209]
    assert torch.equal(authors, torch.round(authors * 255) / 255)  # on the levels: rounding when written keeps them
    ours = adain_color_fix(restored, reference, eps=0.0)
    assert (ours * 255).round().flatten().tolist() == [86, 185, 210]
    assert (authors_8bit_output(restored, reference, color_fix=False) * 255).round().flatten().tolist() == [25, 76, 89]
