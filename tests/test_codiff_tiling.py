"""Tiled encode / denoise / decode: equal to the untiled result for local stages, no seams for global ones."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from jpegrestore.nn.codiff.tiling import TileConfig, gaussian_window, tile_starts, tiled_apply, tiled_one_step


def local_net(in_ch: int, out_ch: int, scale: str = "same") -> nn.Module:
    """Zero-padded convs (receptive radius 2 at the tensor's own scale), so tile borders differ from the whole."""
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Conv2d(in_ch, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 8, 3, padding=1), nn.Tanh()]
    if scale == "down":
        layers.append(nn.Conv2d(8, out_ch, 8, stride=8))
    elif scale == "up":
        layers += [nn.Upsample(scale_factor=8), nn.Conv2d(8, out_ch, 1)]
    else:
        layers.append(nn.Conv2d(8, out_ch, 1))
    return nn.Sequential(*layers).eval()


def pasted(stage, x: torch.Tensor, tile: int, overlap: int) -> torch.Tensor:
    """The naive alternative: every tile written over the previous one (shows what a seam looks like)."""
    out = torch.zeros_like(x)
    for top in tile_starts(x.shape[-2], tile, overlap):
        for left in tile_starts(x.shape[-1], tile, overlap):
            out[..., top:top + tile, left:left + tile] = stage(x[..., top:top + tile, left:left + tile])
    return out


@pytest.mark.parametrize("length,tile,overlap,align", [(200, 96, 32, 1), (96, 96, 32, 1), (97, 96, 32, 1),
                                                       (1600, 1024, 128, 8), (40, 16, 8, 8)])
def test_tile_starts_cover_with_the_overlap(length, tile, overlap, align):
    starts = tile_starts(length, tile, overlap, align)
    assert starts[0] == 0 and starts[-1] + min(tile, length) == max(length, min(tile, length))
    assert all(s % align == 0 for s in starts)
    for a, b in zip(starts, starts[1:]):
        assert a + tile - b >= overlap - align + 1  # neighbours overlap
        assert b > a


def test_bad_tiles_are_errors():
    with pytest.raises(ValueError, match="overlap"):
        tile_starts(200, 96, 96)
    with pytest.raises(ValueError, match="positive"):
        tile_starts(200, 0, 0)
    with pytest.raises(ValueError, match="multiples of 8"):
        TileConfig(encoder_tile=1020)
    with pytest.raises(ValueError, match="multiples of 8"):
        tiled_one_step(torch.zeros(1, 3, 20, 24), nn.Identity(), nn.Identity(), nn.Identity())


def test_window_is_a_centred_gaussian():
    w = gaussian_window(96, 64, dtype=torch.float64)
    assert w.shape == (96, 64)
    assert torch.allclose(w, w.flip(0)) and torch.allclose(w, w.flip(1))
    # std 0.1 * size: row 0 is 47.5 / 9.6 sigma from the centre, column 32 is 0.5 / 6.4 sigma
    expected = math.exp(-0.5 * (47.5 / 9.6) ** 2) * math.exp(-0.5 * (0.5 / 6.4) ** 2)
    assert w[0, 32].item() == pytest.approx(expected, rel=1e-9)
    assert w.max().item() < 1 and w[47:49, 31:33].min().item() > 0.99


def test_local_stage_tiled_equals_untiled_and_pasting_does_not():
    stage = local_net(4, 4)
    x = torch.randn(2, 4, 150, 200)
    with torch.no_grad():
        whole = stage(x)
        tiled = tiled_apply(stage, x, tile=96, overlap=32)
        naive = pasted(stage, x, 96, 32)
    assert tiled.shape == whole.shape
    # a tile's own zero padding changes its 2 border pixels; the window gives those < 1e-5 weight there
    assert (tiled - whole).abs().max() < 1e-4 * whole.abs().max()
    assert (naive - whole).abs().max() > 1e-2 * whole.abs().max()  # the control really has seams


def test_global_stage_blends_without_seams():
    # each tile's output is its own channel means, a stand-in for attention over the tile: the tiled output
    # differs from the untiled one by design, but must not jump at tile borders. Between two tiles whose
    # centres are d = 64 apart, Gaussian windows of std s = 9.6 weigh them by a logistic of scale
    # s^2 / d = 1.44 pixels, so the steepest step is about 1 / (4 * 1.44) = 0.17 of the jump pasting makes.
    def stage(t: torch.Tensor) -> torch.Tensor:
        return t.mean(dim=(-2, -1), keepdim=True).expand_as(t).clone()

    torch.manual_seed(1)
    x = torch.randn(1, 4, 160, 224) + torch.linspace(-2, 2, 224)  # tiles get clearly different means
    blended = tiled_apply(stage, x, 96, 32)
    naive = pasted(stage, x, 96, 32)
    blended_step = (blended[..., 1:] - blended[..., :-1]).abs().amax()
    naive_step = (naive[..., 1:] - naive[..., :-1]).abs().amax()
    assert naive_step > 0.3  # the pasted tiles jump by the difference of their means
    assert blended_step < 0.25 * naive_step
    vertical = (blended[..., 1:, :] - blended[..., :-1, :]).abs().amax()
    assert vertical < 0.25 * naive_step


def test_one_step_pipeline_tiled_matches_untiled():
    encode, denoise, decode = local_net(3, 4, "down"), local_net(4, 4), local_net(4, 3, "up")
    image = torch.rand(1, 3, 320, 256) * 2 - 1
    tiles = TileConfig(latent_tile=16, latent_overlap=8, encoder_tile=128, encoder_overlap=64,
                       decoder_tile=16, decoder_overlap=8)
    with torch.no_grad():
        whole = tiled_one_step(image, encode, denoise, decode, TileConfig(enabled=False))
        tiled = tiled_one_step(image, encode, denoise, decode, tiles)
        default = tiled_one_step(image, encode, denoise, decode)  # fits in one tile: exactly untiled
    assert torch.equal(default, whole)
    assert tiled.shape == whole.shape == (1, 3, 320, 256)
    assert (tiled - whole).abs().max() < 1e-3 * whole.abs().max()
