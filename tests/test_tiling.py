"""Coefficient-domain tiling: MCU-aligned spans, partition-of-unity blending, seamless tiled restoration."""

import numpy as np
import pytest
import torch

from jpegrestore import jpeg
from jpegrestore.tiling import (
    Span, axis_weights, check_tiling, crop_coefficients, grid_extent, restore_tiled, tile_spans,
)


def _photo(height: int, width: int) -> torch.Tensor:
    """A crop of the scikit-image astronaut, float [1, 3, H, W] in [0, 1]."""
    import skimage.data

    array = skimage.data.astronaut()[60:60 + height, 120:120 + width]
    return torch.from_numpy(array.copy()).permute(2, 0, 1)[None].float() / 255


@pytest.mark.parametrize("length", [64, 80, 96, 160, 176, 200, 528, 1000])
@pytest.mark.parametrize("tile,overlap", [(64, 16), (64, 32), (96, 32), (512, 32)])
def test_spans_cover_on_the_mcu_grid_with_the_requested_overlap(length, tile, overlap):
    spans = tile_spans(length, tile, overlap)
    assert spans[0].start == 0 and spans[-1].stop == length
    for span in spans:
        assert span.start % 16 == 0
        assert span.length <= tile + 15 or len(spans) == 1
    for left, right in zip(spans, spans[1:]):
        assert right.start > left.start
        assert left.stop - right.start >= overlap  # neighbours overlap by at least `overlap`
    if length > tile + 16:
        assert len(spans) > 1


def test_weights_sum_to_one_and_are_one_where_a_tile_is_alone():
    spans = tile_spans(200, 64, 16)
    w = axis_weights(spans, 200, dtype=torch.float64)
    torch.testing.assert_close(w.sum(0), torch.ones(200, dtype=torch.float64))
    x = torch.arange(200)
    for i, span in enumerate(spans):
        outside = (x < span.start) | (x >= span.stop)
        assert torch.all(w[i][outside] == 0)
        assert torch.all(w[i][~outside] > 0)
    covered = torch.stack([(x >= s.start) & (x < s.stop) for s in spans]).sum(0)
    assert torch.all(w.max(0).values[covered == 1] == 1)
    # 2-D windows (outer products) also sum to one everywhere
    w2 = axis_weights(tile_spans(150, 64, 32), 150, dtype=torch.float64)
    total = (w[:, None, :, None] * w2[None, :, None, :]).sum((0, 1))
    torch.testing.assert_close(total, torch.ones(200, 150, dtype=torch.float64))


def test_ramps_are_linear_across_a_two_tile_overlap():
    spans = [Span(0, 64), Span(32, 96)]
    w = axis_weights(spans, 96, dtype=torch.float64)
    expected = (torch.arange(32, dtype=torch.float64) + 0.5) / 32  # hand-computed ramp
    torch.testing.assert_close(w[1, 32:64], expected)
    torch.testing.assert_close(w[0, 32:64], 1 - expected)


@pytest.mark.parametrize("subsampling", ["4:2:0", "4:2:2", "4:4:4"])
def test_a_coefficient_tile_is_the_jpeg_of_the_image_tile(subsampling):
    """Independent reference: encoding the cropped pixels gives the sliced coefficients (MCU-aligned crops)."""
    x = _photo(75, 101)  # odd size: the last tiles are partial and carry dummy blocks
    coeffs = jpeg.encode(x, 30, subsampling=subsampling, rounding="exact")
    rows, cols = grid_extent(coeffs)
    for r in tile_spans(rows, 32, 16):
        for c in tile_spans(cols, 32, 16):
            part = crop_coefficients(coeffs, r, c)
            reference = jpeg.encode(x[..., r.start:r.stop, c.start:c.stop], 30, subsampling=subsampling,
                                    rounding="exact")
            assert part.size == reference.size
            for got, want in zip(part.components(), reference.components()):
                assert torch.equal(got, want)


def test_grayscale_tiles_are_valid_coefficients():
    x = _photo(70, 90).mean(1, keepdim=True)
    coeffs = jpeg.encode(x, 50, rounding="exact")
    part = crop_coefficients(coeffs, Span(16, 48), Span(64, 96))
    assert part.size == (32, 90 - 64) and part.cb is None
    torch.testing.assert_close(jpeg.decode(part), jpeg.decode(jpeg.encode(x[..., 16:48, 64:], 50, rounding="exact")))


class SmallConvNet(torch.nn.Module):
    """Decode, then a residual 5x5 conv (receptive radius 2): tiles far from their edges must match exactly."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 3, 5, padding=2, padding_mode="replicate")

    def forward(self, coeffs):
        x = jpeg.decode(coeffs)
        return x + 0.1 * self.conv(x)


def _single_tile_core(size, spans_r, spans_c, margin):
    """Mask [H, W] of pixels covered by one tile only and at least `margin` away from that tile's edges."""
    height, width = size
    mask = torch.zeros(height, width, dtype=torch.bool)
    count = torch.zeros(height, width, dtype=torch.int64)
    for r in spans_r:
        for c in spans_c:
            count[r.start:r.stop, c.start:c.stop] += 1
    for r in spans_r:
        for c in spans_c:
            core = torch.zeros(height, width, dtype=torch.bool)
            r0 = r.start + margin if r.start > 0 else 0
            c0 = c.start + margin if c.start > 0 else 0
            r1 = r.stop - margin if r.stop < height else height
            c1 = c.stop - margin if c.stop < width else width
            core[r0:max(r0, r1), c0:max(c0, c1)] = True
            mask |= core
    return mask & (count == 1)


def test_tiled_conv_net_equals_untiled_away_from_the_blend():
    x = _photo(176, 200)
    coeffs = jpeg.encode(x, 20, rounding="exact")
    net = SmallConvNet().eval()
    with torch.no_grad():
        full = net(coeffs)
        tiled = restore_tiled(net, coeffs, tile=96, overlap=32)
    rows, cols = grid_extent(coeffs)
    core = _single_tile_core((176, 200), tile_spans(rows, 96, 32), tile_spans(cols, 96, 32), margin=6)
    assert core.float().mean() > 0.2
    diff = (full - tiled).abs().amax(1)[0]
    assert diff[core].max() < 1e-5
    assert diff.max() < 0.05  # inside the blends: small, no seam


def test_tiled_qgac_is_close_to_untiled():
    from jpegrestore.nn.qgac import QGAC

    torch.manual_seed(0)
    net = QGAC(block_channels=8, freq_channels=64, color_channels=[4, 8], cfm_hidden=4, inner_channels=4,
               fusion_width=1).eval()
    x = _photo(160, 176)
    coeffs = jpeg.encode(x, 20, rounding="exact")
    with torch.no_grad():
        full = net(coeffs)
        tiled = restore_tiled(net, coeffs, tile=96, overlap=32)
    effect = (full - jpeg.decode(coeffs)).abs().max()
    diff = (full - tiled).abs()
    rows, cols = grid_extent(coeffs)
    core = _single_tile_core((160, 176), tile_spans(rows, 96, 32), tile_spans(cols, 96, 32), margin=16)
    assert tiled.shape == full.shape
    assert effect > 0.05  # the network changes the image noticeably ...
    assert diff.amax(1)[0][core].max() < 0.02 * effect  # ... tiles agree with it far from their edges
    assert diff.max() < 0.1 * effect  # and the blends leave no visible seam


def test_small_images_are_restored_in_one_call():
    x = _photo(40, 56)
    coeffs = jpeg.encode(x, 50, rounding="exact")
    calls = []

    def restore(c):
        calls.append(c.size)
        return jpeg.decode(c)

    out = restore_tiled(restore, coeffs, tile=64, overlap=16)
    assert calls == [(40, 56)]
    assert torch.equal(out, jpeg.decode(coeffs))
    assert np.allclose(restore_tiled(restore, coeffs, tile=None).numpy(), out.numpy())


@pytest.mark.parametrize("tile,overlap", [(50, 16), (0, 16), (64, 0), (64, 40), (True, 8)])
def test_bad_tiling_is_rejected(tile, overlap):
    with pytest.raises(ValueError, match="tile"):
        check_tiling(tile, overlap)
