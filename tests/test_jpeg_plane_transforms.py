"""The codec's plane-layout islow transforms and its direct round trip against the block-layout forms."""

from __future__ import annotations

import pytest
import torch

from jpegrestore import jpeg
from jpegrestore.jpeg import dct
from jpeg_helpers import photo, to_tensor


def test_plane_transforms_equal_the_block_matrices():
    """Butterflies in place on a plane == the float64 matrix form block by block (forward and inverse)."""
    g = torch.Generator().manual_seed(0)
    samples = torch.randint(-128, 128, (3, 40, 56), generator=g, dtype=torch.int32)
    got = dct.fdct_islow_plane(samples)
    assert got.dtype == torch.int32
    assert torch.equal(dct.image_to_blocks(got), dct.fdct_islow(dct.image_to_blocks(samples)))
    weights = torch.tensor([[300.0 / (1 + i + j) for j in range(8)] for i in range(8)])
    for scale in (1, 50):  # within the int32 bound, and far beyond it (int64 path)
        blocks = (torch.randn(3, 5, 7, 8, 8, generator=g) * weights * scale).round().int()
        assert (blocks.abs().max() > dct._IDCT_INT32_LIMIT) == (scale > 1)
        got = dct.idct_islow_plane(dct.blocks_to_plane(blocks))
        assert torch.equal(dct.image_to_blocks(got), dct.idct_islow(blocks))
    with pytest.raises(ValueError, match="multiples of 8"):
        dct.fdct_islow_plane(torch.zeros(1, 12, 16))


@pytest.mark.parametrize("subsampling", ["4:2:0", "4:2:2", "4:4:4", "gray"])
def test_direct_round_trip_equals_decode_of_encode(subsampling):
    x = to_tensor(photo("camera" if subsampling == "gray" else "chelsea", 37, 51, 60, 90))
    layout = "4:4:4" if subsampling == "gray" else subsampling
    for quality in (5, 60):
        reference = jpeg.decode(jpeg.encode(x, quality, subsampling=layout, rounding="exact"), rounding="exact")
        assert torch.equal(jpeg.compress(x, quality, subsampling=layout, rounding="exact"), reference)
        leaf = x.clone().requires_grad_(True)
        assert torch.equal(jpeg.compress(leaf, quality, subsampling=layout).detach(), reference)


def test_fixed_point_colour_equals_libjpeg_formulas():
    """jccolor.c / jdcolor.c written out in int64: every (Cb, Cr) pair at extreme and middle Y, and RGB corners
    plus a million random pixels."""
    from jpegrestore.jpeg import colour

    cb, cr = torch.meshgrid(torch.arange(256), torch.arange(256), indexing="ij")
    for level in (0, 1, 128, 254, 255):
        y = torch.full_like(cb, level)
        r = y + ((91881 * (cr - 128) + 32768) >> 16)
        g = y + ((-22554 * (cb - 128) - 46802 * (cr - 128) + 32768) >> 16)
        b = y + ((116130 * (cb - 128) + 32768) >> 16)
        expected = torch.stack([r, g, b]).clamp(0, 255).float()
        assert torch.equal(colour.ycbcr_to_rgb_fixed(torch.stack([y, cb, cr])[None].float())[0], expected)
    corners = torch.tensor([[r, g, b] for r in (0, 1, 254, 255) for g in (0, 1, 254, 255) for b in (0, 1, 254, 255)])
    random = torch.randint(0, 256, (1_000_000, 3), generator=torch.Generator().manual_seed(0))
    for rgb in (corners, random):
        r, g, b = rgb.T
        y = (19595 * r + 38470 * g + 7471 * b + 32768) >> 16
        cb = (-11059 * r - 21709 * g + 32768 * b + (128 << 16) + 32767) >> 16
        cr = (32768 * r - 27439 * g - 5329 * b + (128 << 16) + 32767) >> 16
        got = colour.rgb_to_ycbcr_fixed(rgb.T[None, :, :, None].float())[0, :, :, 0]
        assert torch.equal(got, torch.stack([y, cb, cr]).float())


def test_in_place_fancy_upsampling_equals_the_generic_one():
    from jpegrestore.jpeg import codec, sampling

    g = torch.Generator().manual_seed(0)
    for shape in [(2, 5, 7), (1, 1, 3), (3, 8, 3), (2, 9, 16), (1, 4, 2), (1, 1, 1)]:
        plane = torch.randint(0, 256, shape, generator=g).float()
        for factors in [(2, 2), (2, 1), (1, 1)]:
            expected = sampling.upsample_fancy(plane, *factors, codec._int_floor_div)
            assert torch.equal(sampling.upsample_fancy_exact(plane, *factors), expected), (shape, factors)


def _chroma_resampling(chroma: torch.Tensor, subsampling: str) -> torch.Tensor:
    """The linearized chroma path of a round trip with the codec's own steps: pad, average, upsample, crop."""
    from jpegrestore.jpeg import codec, sampling

    height, width = chroma.shape[-2:]
    h, v = sampling.check_subsampling(subsampling)
    wp = -(-width // (8 * h)) * 8 * h
    out = []
    for c in chroma.unbind(1):
        c = sampling.downsample(sampling.pad_edge(c, -(-height // v) * v, wp), h, v, codec._true_div)
        c = sampling.upsample_fancy(c[:, :, : -(-width // h)], h, v, codec._true_div)
        out.append(c[:, :height, :width])
    return torch.stack(out, 1)


@pytest.mark.parametrize("subsampling", ["4:2:0", "4:2:2"])
def test_written_out_adjoint_equals_autograd_of_the_chroma_path(subsampling):
    from jpegrestore.jpeg import codec

    g = torch.Generator().manual_seed(0)
    for height, width in [(37, 51), (16, 16), (9, 3), (5, 4), (1, 1), (2, 7), (33, 17)]:
        grad = torch.randn(2, 2, height, width, generator=g, dtype=torch.float64)
        probe = torch.zeros_like(grad, requires_grad=True)
        (expected,) = torch.autograd.grad(_chroma_resampling(probe, subsampling), probe, grad)
        got = codec._chroma_resampling_adjoint(grad, subsampling)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-12, msg=f"{height}x{width}")
