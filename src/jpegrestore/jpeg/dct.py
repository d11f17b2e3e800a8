"""8x8 block layout and DCTs: the orthonormal float DCT-II and libjpeg's integer "islow" DCT.

Block layout: [B, Hb, Wb, 8, 8], natural row-major order inside a block.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from . import precision


def image_to_blocks(image: torch.Tensor) -> torch.Tensor:
    """[B, 1, H, W] or [B, H, W] with H, W multiples of 8 -> [B, H/8, W/8, 8, 8]."""
    if image.dim() == 4:
        if image.shape[1] != 1:
            raise ValueError(f"expected one channel, got shape {tuple(image.shape)}")
        image = image[:, 0]
    b, h, w = image.shape
    if h % 8 or w % 8:
        raise ValueError(f"height and width must be multiples of 8, got {h}x{w}")
    return image.reshape(b, h // 8, 8, w // 8, 8).transpose(2, 3)


def blocks_to_plane(blocks: torch.Tensor) -> torch.Tensor:
    """[B, Hb, Wb, 8, 8] -> [B, Hb*8, Wb*8]."""
    b, hb, wb = blocks.shape[:3]
    return blocks.transpose(2, 3).reshape(b, hb * 8, wb * 8)


def blocks_to_image(blocks: torch.Tensor) -> torch.Tensor:
    """[B, Hb, Wb, 8, 8] -> [B, 1, Hb*8, Wb*8]: each 8x8 tile holds one block (DCT-domain CNN layout)."""
    return blocks_to_plane(blocks)[:, None]


@lru_cache(maxsize=None)
def _dct_basis_cpu(dtype: torch.dtype) -> torch.Tensor:
    n = torch.arange(8, dtype=torch.float64)
    k = n[:, None]
    c = torch.cos((2 * n[None, :] + 1) * k * math.pi / 16) * 0.5
    c[0] = math.sqrt(1 / 8)
    return torch.kron(c, c).to(dtype)  # [64, 64]: vec(C X C^T) = K vec(X)


def block_dct(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal 2-D DCT-II of every 8x8 block. [..., 8, 8] -> [..., 8, 8] (differentiable).

    Computed in x's dtype; inside the JPEG op's entry points in float64 (see :mod:`.precision`).
    """
    return precision.matmul(x.reshape(*x.shape[:-2], 64), _dct_basis_cpu(torch.float64).T).reshape(x.shape)


def block_idct(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`block_dct`. [..., 8, 8] -> [..., 8, 8] (differentiable)."""
    return precision.matmul(x.reshape(*x.shape[:-2], 64), _dct_basis_cpu(torch.float64)).reshape(x.shape)


# ---- libjpeg-turbo's accurate integer DCT (jfdctint.c / jidctint.c), CONST_BITS=13, PASS1_BITS=2 ----
_CONST_BITS = 13
_PASS1_BITS = 2
_F0298, _F0390, _F0541, _F0765 = 2446, 3196, 4433, 6270
_F0899, _F1175, _F1501, _F1847 = 7373, 9633, 12299, 15137
_F1961, _F2053, _F2562, _F3072 = 16069, 16819, 20995, 25172


def _round_shift(x: torch.Tensor, n: int) -> torch.Tensor:
    """libjpeg's DESCALE: round x / 2**n half up (an arithmetic shift)."""
    return (x + (1 << (n - 1))) >> n


def _odd_part(t4, t5, t6, t7):
    """Shared odd part of islow; inputs are the four odd-symmetric terms, returns the four products."""
    z1 = t4 + t7
    z2 = t5 + t6
    z3 = t4 + t6
    z4 = t5 + t7
    z5 = (z3 + z4) * _F1175
    t4 = t4 * _F0298
    t5 = t5 * _F2053
    t6 = t6 * _F3072
    t7 = t7 * _F1501
    z1 = z1 * -_F0899
    z2 = z2 * -_F2562
    z3 = z3 * -_F1961 + z5
    z4 = z4 * -_F0390 + z5
    return t4 + z1 + z3, t5 + z2 + z4, t6 + z2 + z3, t7 + z1 + z4


def _fdct_1d(d: list[torch.Tensor], first_pass: bool, descale=_round_shift) -> list[torch.Tensor]:
    tmp0, tmp7 = d[0] + d[7], d[0] - d[7]
    tmp1, tmp6 = d[1] + d[6], d[1] - d[6]
    tmp2, tmp5 = d[2] + d[5], d[2] - d[5]
    tmp3, tmp4 = d[3] + d[4], d[3] - d[4]
    tmp10, tmp13 = tmp0 + tmp3, tmp0 - tmp3
    tmp11, tmp12 = tmp1 + tmp2, tmp1 - tmp2
    shift = _CONST_BITS - _PASS1_BITS if first_pass else _CONST_BITS + _PASS1_BITS
    out = [None] * 8
    if first_pass:
        out[0] = (tmp10 + tmp11) << _PASS1_BITS
        out[4] = (tmp10 - tmp11) << _PASS1_BITS
    else:
        out[0] = descale(tmp10 + tmp11, _PASS1_BITS)
        out[4] = descale(tmp10 - tmp11, _PASS1_BITS)
    z1 = (tmp12 + tmp13) * _F0541
    out[2] = descale(z1 + tmp13 * _F0765, shift)
    out[6] = descale(z1 - tmp12 * _F1847, shift)
    o7, o5, o3, o1 = _odd_part(tmp4, tmp5, tmp6, tmp7)
    out[7], out[5], out[3], out[1] = (descale(v, shift) for v in (o7, o5, o3, o1))
    return out


def _to_planar(blocks: torch.Tensor) -> torch.Tensor:
    """[..., 8, 8] -> [8, 8, N] so that each coefficient position is one contiguous vector."""
    return blocks.reshape(-1, 64).T.contiguous().reshape(8, 8, -1)


def _from_planar(planar: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    return planar.reshape(64, -1).T.reshape(shape)


def fdct_islow_reference(samples: torch.Tensor) -> torch.Tensor:
    """libjpeg's islow forward DCT written as its butterflies. int [..., 8, 8] level-shifted samples -> int32 [..., 8, 8].

    The output is scaled by 8 relative to the orthonormal DCT, as in libjpeg. libjpeg's design
    keeps every intermediate within 32 bits for 8-bit samples.
    """
    x = _to_planar(samples.int())  # [row, col, N]
    x = torch.stack(_fdct_1d(list(x.unbind(1)), first_pass=True), 1)  # pass 1: along each row
    x = torch.stack(_fdct_1d(list(x.unbind(0)), first_pass=False), 0)  # pass 2: along each column
    return _from_planar(x, samples.shape)


def _idct_1d(d: list[torch.Tensor], shift: int, descale=_round_shift) -> list[torch.Tensor]:
    z2, z3 = d[2], d[6]
    z1 = (z2 + z3) * _F0541
    tmp2 = z1 - z3 * _F1847
    tmp3 = z1 + z2 * _F0765
    tmp0 = (d[0] + d[4]) << _CONST_BITS
    tmp1 = (d[0] - d[4]) << _CONST_BITS
    tmp10, tmp13 = tmp0 + tmp3, tmp0 - tmp3
    tmp11, tmp12 = tmp1 + tmp2, tmp1 - tmp2
    o0, o1, o2, o3 = _odd_part(d[7], d[5], d[3], d[1])
    return [
        descale(tmp10 + o3, shift), descale(tmp11 + o2, shift),
        descale(tmp12 + o1, shift), descale(tmp13 + o0, shift),
        descale(tmp13 - o0, shift), descale(tmp12 - o1, shift),
        descale(tmp11 - o2, shift), descale(tmp10 - o3, shift),
    ]


def idct_islow_reference(dequantized: torch.Tensor) -> torch.Tensor:
    """libjpeg's islow inverse DCT written as its butterflies, with output level shift and clamping.

    int [..., 8, 8] dequantized coefficients (coef * q) -> int32 samples [..., 8, 8] in 0..255.
    Valid 8-bit JPEG data keeps every intermediate within 32 bits (libjpeg's INT32 design);
    absurd coefficients from a corrupt file give clamped garbage, never a crash.
    """
    x = _to_planar(dequantized.int().clamp(-(1 << 15), 1 << 15))
    x = torch.stack(_idct_1d(list(x.unbind(0)), _CONST_BITS - _PASS1_BITS), 0)  # pass 1: columns
    x = torch.stack(_idct_1d(list(x.unbind(1)), _CONST_BITS + _PASS1_BITS + 3), 1)  # pass 2: rows
    return _from_planar((x + 128).clamp_(0, 255), dequantized.shape)


# ---- The same transforms as matrices -------------------------------------------------------------
# Every output of an islow pass is ONE descale of an integer-linear combination of the pass's
# inputs, so a pass is an integer 8x8 matrix followed by a per-output rounding shift. The matrices
# are read off the butterflies above (applied to unit vectors without descaling) and applied with
# float64 matmuls, which are exact for these magnitudes (< 2**53).

def _linear_part(butterfly) -> torch.Tensor:
    """Integer matrix A [8 out, 8 in] of a butterfly pass, read off with descaling disabled."""
    eye = torch.eye(8, dtype=torch.int64)
    cols = butterfly(list(eye.unbind(0)), lambda x, n: x)
    return torch.stack(cols, 0)  # cols[k][j] = coefficient of input j in output k


def _pass_spec(butterfly, shifts: list[int]):
    a = _linear_part(butterfly).double()
    shift = torch.tensor(shifts, dtype=torch.float64)
    half = torch.where(shift > 0, 2.0 ** (shift - 1), torch.zeros_like(shift))
    return a, half, 2.0 ** (-shift)


_FDCT_PASS1 = _pass_spec(lambda d, f: _fdct_1d(d, True, f), [0, 11, 11, 11, 0, 11, 11, 11])
_FDCT_PASS2 = _pass_spec(lambda d, f: _fdct_1d(d, False, f), [2, 15, 15, 15, 2, 15, 15, 15])
_IDCT_PASS1 = _pass_spec(lambda d, f: _idct_1d(d, 11, f), [11] * 8)
_IDCT_PASS2 = _pass_spec(lambda d, f: _idct_1d(d, 18, f), [18] * 8)


def _apply_pass(x: torch.Tensor, spec, along_rows: bool) -> torch.Tensor:
    """One islow pass on float64 blocks [N, 8, 8]: along each row (last dim) or each column."""
    a, half, scale = (t.to(x.device) for t in spec)
    if along_rows:
        y = x @ a.T
        return torch.floor((y + half) * scale)
    y = a @ x
    return torch.floor((y + half[:, None]) * scale[:, None])


def fdct_islow(samples: torch.Tensor) -> torch.Tensor:
    """libjpeg's islow forward DCT. int [..., 8, 8] level-shifted samples -> int32 [..., 8, 8].

    The output is scaled by 8 relative to the orthonormal DCT, as in libjpeg; bit-exact with
    :func:`fdct_islow_reference`. Float input (integer-valued) gives float output.
    """
    x = samples.reshape(-1, 8, 8).double()
    x = _apply_pass(x, _FDCT_PASS1, along_rows=True)
    x = _apply_pass(x, _FDCT_PASS2, along_rows=False)
    return x.to(samples.dtype if samples.is_floating_point() else torch.int32).reshape(samples.shape)


def idct_islow(dequantized: torch.Tensor) -> torch.Tensor:
    """libjpeg's islow inverse DCT with output level shift and clamping.

    Integer-valued [..., 8, 8] dequantized coefficients (coef * q) -> samples [..., 8, 8] in 0..255
    (float32 for float input, else int32); bit-exact with :func:`idct_islow_reference` for any
    coefficients a valid 8-bit file can hold, and exact (64-bit, like libjpeg-turbo) beyond.
    """
    x = dequantized.reshape(-1, 8, 8).double()
    x = _apply_pass(x, _IDCT_PASS1, along_rows=False)  # pass 1: columns
    x = _apply_pass(x, _IDCT_PASS2, along_rows=True)  # pass 2: rows
    out_dtype = torch.float32 if dequantized.is_floating_point() else torch.int32
    return (x + 128).clamp_(0, 255).to(out_dtype).reshape(dequantized.shape)


# ---- The butterflies on whole planes (what the codec runs) ---------------------------------------
# A plane [B, H, W] (H, W multiples of 8) holds its blocks in place. A pass along the rows of every
# block takes the 8 strided column views of [B, H, W/8, 8]; a pass along the columns takes the 8 row
# views of [B, H/8, 8, W]. No block gathering, only integer element-wise arithmetic (no matmul, so
# no precision setting can change it). Bounds: the largest intermediate of a 1-D pass, as a linear
# form of its inputs, has an L1 norm of 83980 (forward) and 61214 (inverse), both read off the
# butterflies; int32 therefore holds every intermediate of the forward DCT of 8-bit samples
# (83980 * 4096 < 2**31) and of the inverse DCT of inputs up to _IDCT_INT32_LIMIT; beyond, int64.
_IDCT_L1 = 61214
_IDCT_INT32_LIMIT = ((2**31 - 1 - 2**17) // _IDCT_L1 - 1) * 2048 // _IDCT_L1 - 1  # |dequantized| bound


def _row_views(plane: torch.Tensor) -> list[torch.Tensor]:
    """The 8 positions along each block row: views [B, H, W/8] of a plane [B, H, W]."""
    b, h, w = plane.shape
    return list(plane.view(b, h, w // 8, 8).unbind(-1))


def _col_views(plane: torch.Tensor) -> list[torch.Tensor]:
    """The 8 positions down each block column: views [B, H/8, W] of a plane [B, H, W]."""
    b, h, w = plane.shape
    return list(plane.view(b, h // 8, 8, w).unbind(2))


def _check_plane(plane: torch.Tensor) -> None:
    if plane.dim() != 3 or plane.shape[-2] % 8 or plane.shape[-1] % 8:
        raise ValueError(f"expected a plane [B, H, W] with H, W multiples of 8, got {tuple(plane.shape)}")


def fdct_islow_plane(samples: torch.Tensor) -> torch.Tensor:
    """libjpeg's islow forward DCT of every 8x8 block of a plane, in place of the block.

    Integer-valued level-shifted samples [B, H, W] in -128..127 (H, W multiples of 8) -> int32 [B, H, W]:
    the block at (i, j) holds its coefficients (8x the orthonormal DCT) in natural order, as
    :func:`fdct_islow` of :func:`image_to_blocks` gives them.
    """
    _check_plane(samples)
    b, h, w = samples.shape
    x = samples.to(torch.int32).contiguous()
    x = torch.stack(_fdct_1d(_row_views(x), first_pass=True), -1).view(b, h, w)
    return torch.stack(_fdct_1d(_col_views(x), first_pass=False), 2).view(b, h, w)


def idct_islow_plane(dequantized: torch.Tensor) -> torch.Tensor:
    """libjpeg's islow inverse DCT of every 8x8 block of a plane, with level shift and clamping.

    Integer-valued dequantized coefficients [B, H, W] in plane layout (as :func:`fdct_islow_plane` gives
    them) -> int32 samples [B, H, W] in 0..255; equal to :func:`idct_islow` block by block (int32 arithmetic
    while it is exact, else int64, as libjpeg-turbo's 64-bit build).
    """
    _check_plane(dequantized)
    b, h, w = dequantized.shape
    big = dequantized.numel() and dequantized.detach().abs().max().item() > _IDCT_INT32_LIMIT
    x = dequantized.to(torch.int64 if big else torch.int32).contiguous()
    x = torch.stack(_idct_1d(_col_views(x), _CONST_BITS - _PASS1_BITS), 2).view(b, h, w)
    x = torch.stack(_idct_1d(_row_views(x), _CONST_BITS + _PASS1_BITS + 3), -1).view(b, h, w)
    return x.add_(128).clamp_(0, 255).to(torch.int32)
