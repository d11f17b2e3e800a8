"""Batched JPEG encode / decode / compress that follow libjpeg-turbo's default path step by step.

One pipeline runs in three arithmetics (:class:`_Arith`):

* integer: libjpeg's 16-bit fixed-point colour conversion, biased chroma downsampling, "islow"
  integer DCT/IDCT, half-away-from-zero quantization, fancy upsampling, rounding and clamping, bit
  for bit. This is the forward value of ``rounding="ste"`` and ``"exact"``.
* linear: the same steps in float with every rounding and clamp removed. ``"ste"`` takes its
  gradient from it (a straight-through estimator over the whole codec); ``"exact"`` skips it.
* rounded float: float colour and DCT, rounding wherever libjpeg rounds (identity gradient there)
  and Shin & Song's cubic surrogate at the quantizer: ``rounding="cubic"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional

import torch

from . import colour, dct, sampling
from .precision import full_precision
from .coefficients import Coefficients
from .rounding import ROUNDING_MODES, floor_div_ste, round_cubic, round_ste
from .tables import QualityLike, quant_tables

_RANGE_TOLERANCE = 0.25


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _int_floor_div(n: torch.Tensor, d: int) -> torch.Tensor:
    """libjpeg's integer ``n // d`` (``>>`` for powers of two) on integer-valued float32.

    Exact: float32 holds these integers (< 2**24) and a correctly rounded quotient of two such
    integers never crosses an integer boundary.
    """
    return (n * (1.0 / d) if d & (d - 1) == 0 else n / d).floor_()


def _check_rounding(rounding: str) -> None:
    if rounding not in ROUNDING_MODES:
        raise ValueError(f"rounding must be one of {ROUNDING_MODES}, got {rounding!r}")


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be [B, 3 or 1, H, W], got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be a float tensor in [0, 1], got dtype {images.dtype}")
    if images.numel() == 0:
        raise ValueError(f"images is empty: shape {tuple(images.shape)}")
    lo, hi = images.detach().aminmax()
    if not (-_RANGE_TOLERANCE <= lo.item() and hi.item() <= 1 + _RANGE_TOLERANCE):  # NaN fails too
        raise ValueError(
            f"images must be in [0, 1] (float, NCHW); got values in [{lo.item():.4g}, {hi.item():.4g}]"
            " (0..255 data must be divided by 255)"
        )


def _resolve_tables(
    quality: Optional[QualityLike], tables: Optional[torch.Tensor], batch: int, channels: int,
    device: torch.device,
) -> torch.Tensor:
    """Per-component tables [B, C, 8, 8] (float32) from a quality or explicit tables."""
    if (quality is None) == (tables is None):
        raise ValueError("give exactly one of quality or tables")
    if tables is None:
        t = quant_tables(quality, device=device)  # [Bq, 2, 8, 8]
    else:
        t = torch.as_tensor(tables, device=device)
        if t.dim() == 3:
            t = t[None]
        if t.dim() != 4 or t.shape[-2:] != (8, 8) or t.shape[1] not in (1, 2, 3):
            raise ValueError(f"tables must be [B, 1|2|3, 8, 8], got shape {tuple(t.shape)}")
        if t.is_floating_point() and not torch.equal(t, t.round()):
            raise ValueError("tables must hold integers")
        if bool((t < 1).any()) or bool((t > 65535).any()):
            raise ValueError("table entries must be in 1..65535")
        t = t.float()
    if t.shape[0] not in (1, batch):
        raise ValueError(f"got {t.shape[0]} qualities/tables for a batch of {batch}")
    t = t.expand(batch, *t.shape[1:])
    if channels == 1:
        return t[:, :1].contiguous()
    if t.shape[1] == 1:
        raise ValueError("colour images need luma and chroma tables ([B, 2 or 3, 8, 8])")
    if t.shape[1] == 2:
        t = t[:, [0, 1, 1]]
    return t.contiguous()


def _work_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the op computes and answers in: float64 for float64 input, else float32 (half included)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


# ------------------------------------------------------------------------------------ arithmetics

def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _true_div(n: torch.Tensor, d: int) -> torch.Tensor:
    return n / d


@dataclass(frozen=True)
class _Arith:
    """How the shared pipeline computes: integer emulation, or float with given roundings."""

    integer: bool
    round: Callable[[torch.Tensor], torch.Tensor] = _identity  # at 8-bit sample points
    floor_div: Callable[[torch.Tensor, int], torch.Tensor] = _true_div
    quantize: Callable[[torch.Tensor], torch.Tensor] = _identity
    clamp: bool = False

    def clamp255(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(0, 255) if self.clamp else x


_INTEGER = _Arith(integer=True, floor_div=_int_floor_div, clamp=True)
_LINEAR = _Arith(integer=False)
_CUBIC = _Arith(integer=False, round=round_ste, floor_div=floor_div_ste, quantize=round_cubic, clamp=True)


def _with_surrogate(rounding: str, needs_grad: bool, run: Callable[[_Arith], object], combine):
    """Integer forward; for "ste" with gradients, add the linear path's gradient straight through."""
    if rounding == "cubic":
        return run(_CUBIC)
    exact = run(_INTEGER)
    if rounding == "exact" or not needs_grad:
        return exact
    return combine(run(_LINEAR), exact)


def _straight_through(approx: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """``exact`` in value (bit for bit: ``approx - approx`` is 0), ``approx``'s gradient."""
    return exact.to(approx.dtype) + (approx - approx.detach())


# ----------------------------------------------------------------------------------------- encode

def _sample_planes(images: torch.Tensor, a: _Arith) -> list[torch.Tensor]:
    """[B, C, H, W] in [0, 1] -> C planes [B, H, W] of 8-bit samples (Y, Cb, Cr or gray)."""
    s = images.to(_work_dtype(images)) * 255
    if a.integer:  # integer values held in float32 (exact, see _int_floor_div)
        s = s.float().clamp_(0, 255).add_(0.5).floor_()
        return colour.rgb_to_ycbcr_planes(list(s.unbind(1))) if s.shape[1] == 3 else [s[:, 0]]
    else:
        s = a.clamp255(a.round(s))
        ycc = a.clamp255(a.round(colour.rgb_to_ycbcr(s))) if s.shape[1] == 3 else s
    return list(ycc.unbind(1))


def _component_planes(planes: list[torch.Tensor], subsampling: str, a: _Arith) -> list[torch.Tensor]:
    """Pad (and downsample chroma) as libjpeg does; returns planes covering whole MCUs."""
    h, v = sampling.check_subsampling(subsampling) if len(planes) == 3 else (1, 1)
    height, width = planes[0].shape[-2:]
    mcu_h, mcu_w = 8 * v, 8 * h
    hp, wp = _ceil_div(height, mcu_h) * mcu_h, _ceil_div(width, mcu_w) * mcu_w
    out = [sampling.pad_edge(planes[0], hp, wp)]
    for c in planes[1:]:
        # Full-resolution columns are replicated to the MCU width and rows to a whole row group;
        # after downsampling, the last chroma row is replicated to fill the block rows.
        c = sampling.pad_edge(c, _ceil_div(height, v) * v, wp)
        c = sampling.downsample(c, h, v, a.floor_div)
        out.append(sampling.pad_edge(c, hp // v, wp // h))
    return out


def _dummy_blocks(y: torch.Tensor, size: tuple[int, int], subsampling: str) -> torch.Tensor:
    """libjpeg's dummy luma blocks: where a luma MCU extends past the last real block, the extra
    blocks get zero AC and the DC of the preceding block (jccoefct.c)."""
    h, v = sampling.check_subsampling(subsampling)
    rows, cols = _ceil_div(size[0], 8), _ceil_div(size[1], 8)
    hb, wb = y.shape[1:3]
    if cols == wb and rows == hb:
        return y
    dc = y[..., 0, 0]  # [B, Hb, Wb]
    if cols < wb:  # one dummy column at most
        dc = torch.cat([dc[:, :, :cols], dc[:, :, cols - 1:cols]], 2)
    if rows < hb:  # bottom dummy row: DC of the block above-right within the same MCU
        above = dc[:, rows - 1]
        right_of_mcu = above.reshape(above.shape[0], -1, h)[..., -1:].expand(-1, -1, h).reshape(above.shape)
        dc = torch.cat([dc[:, :rows], right_of_mcu[:, None]], 1)
    real = torch.zeros(hb, wb, dtype=torch.bool, device=y.device)
    real[:rows, :cols] = True
    dummy = torch.zeros_like(y)
    dummy[..., 0, 0] = dc
    return torch.where(real[None, :, :, None, None], y, dummy)


def _per_block(plane: torch.Tensor, table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A plane [B, H, W] as [B, H/8, 8, W/8, 8] and a table [B, 8, 8] as [B, 1, 8, 1, 8]: combined element-wise,
    every block meets the table."""
    b, h, w = plane.shape
    return plane.view(b, h // 8, 8, w // 8, 8), table[:, None, :, None, :]


def _quantize_islow(plane: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Integer-valued samples [B, H, W] (0..255, whole blocks), table q [B, 8, 8] -> libjpeg's quantized islow
    coefficients in plane layout (float32 [B, H, W], each block in place)."""
    x = dct.fdct_islow_plane(plane - 128).float()  # 8x the orthonormal DCT, |x| < 2**15
    xb, q8 = _per_block(x, q.float() * 8)
    # libjpeg: sign(x) * ((|x| + 4q) // 8q), exact in float32 (see _int_floor_div).
    out = xb.abs().add_(q8 / 2).div_(q8).floor_()
    return out.copysign_(xb).view(x.shape)


def _samples_islow(coefficients: torch.Tensor, q: torch.Tensor, float32_product: bool = False) -> torch.Tensor:
    """Integer-valued quantized coefficients in plane layout [B, H, W], table q [B, 8, 8] -> libjpeg's islow
    samples, float32 [B, H, W] in 0..255. The product is taken in float64 (exact for any 16-bit values), or in
    float32 when the caller knows it stays below 2**24."""
    dtype = torch.float32 if float32_product else torch.float64
    cb, qb = _per_block(coefficients.to(dtype), q.to(dtype))
    return dct.idct_islow_plane((cb * qb).view(coefficients.shape)).float()


def _unquantized(images: torch.Tensor, qt: torch.Tensor, subsampling: str, a: _Arith) -> list[torch.Tensor]:
    """DCT coefficients in quantization-step units, before rounding: [B, Hb, Wb, 8, 8] per component.

    Integer arithmetic gives libjpeg's islow values exactly (as float); no dummy blocks.
    """
    planes = _component_planes(_sample_planes(images, a), subsampling, a)
    out = []
    for i, p in enumerate(planes):
        q = qt[:, i, None, None]
        if a.integer:
            out.append(dct.image_to_blocks(dct.fdct_islow_plane(p - 128)).to(q.dtype) / (q * 8))
        else:
            out.append(dct.block_dct(dct.image_to_blocks(p) - 128) / q.to(p.dtype))
    return out


def _encode(images: torch.Tensor, qt: torch.Tensor, subsampling: str, a: _Arith) -> list[torch.Tensor]:
    size = tuple(images.shape[-2:])
    planes = _component_planes(_sample_planes(images, a), subsampling, a)
    if a.integer:
        comps = [dct.image_to_blocks(_quantize_islow(p, qt[:, i])).contiguous() for i, p in enumerate(planes)]
    else:
        comps = [a.quantize(dct.block_dct(dct.image_to_blocks(p) - 128) / qt[:, i, None, None].to(p.dtype))
                 for i, p in enumerate(planes)]
    if len(comps) == 3:
        comps[0] = _dummy_blocks(comps[0], size, subsampling)
    return comps


@full_precision
def encode(
    images: torch.Tensor,
    quality: Optional[QualityLike] = None,
    tables: Optional[torch.Tensor] = None,
    subsampling: str = "4:2:0",
    rounding: str = "ste",
) -> Coefficients:
    """JPEG-encode a batch to quantized DCT coefficients, as libjpeg-turbo does.

    Args:
        images: float [B, 3 or 1, H, W] in [0, 1], any H and W (padded by edge replication to the MCU).
        quality: int, or LongTensor[B] / list of per-image qualities in 1..100 (IJG tables).
        tables: instead of quality, tables [B, 2 or 3, 8, 8] (luma, chroma[, chroma]) or [B, 1, 8, 8]
            for grayscale; a table read from a real file is accepted as it is.
        subsampling: "4:4:4", "4:2:2" or "4:2:0" (ignored for grayscale).
        rounding: "ste" (default: bit-exact forward, straight-through gradient), "cubic" (float
            forward with Shin & Song's surrogate) or "exact" (bit-exact, no gradient).
    Returns:
        :class:`Coefficients` in float32 (float64 for float64 images; bfloat16/float16 images are
        computed and answered in float32), integer values except for "cubic". The same bits under
        any autocast / TF32 setting.
    """
    _check_images(images)
    _check_rounding(rounding)
    sampling.check_subsampling(subsampling)
    qt = _resolve_tables(quality, tables, images.shape[0], images.shape[1], images.device)
    work = images.to(_work_dtype(images))
    stored = subsampling if images.shape[1] == 3 else "4:4:4"
    needs_grad = work.requires_grad and torch.is_grad_enabled()
    inputs = work if rounding != "exact" else work.detach()

    def run(a: _Arith):
        return _encode(inputs if not a.integer else inputs.detach(), qt, stored, a)

    def combine(approx, exact):
        return [_straight_through(p, e) for p, e in zip(approx, exact)]

    comps = [c.to(work.dtype) for c in _with_surrogate(rounding, needs_grad, run, combine)]
    cb, cr = (comps[1], comps[2]) if len(comps) == 3 else (None, None)
    return Coefficients(comps[0], cb, cr, qt.to(work.dtype), stored, tuple(images.shape[-2:]))


# ----------------------------------------------------------------------------------------- decode

def _decode(coeffs: Coefficients, a: _Arith, dtype: torch.dtype) -> torch.Tensor:
    """Coefficients -> samples [B, C, H, W] in 0..255 (integer-valued float32, or float)."""
    planes = []
    for i, c in enumerate(coeffs.components()):
        if a.integer:
            c = c.round() if c.is_floating_point() else c
            planes.append(_samples_islow(dct.blocks_to_plane(c), coeffs.qt[:, i]))
        else:
            q = coeffs.qt[:, i, None, None]
            samples = a.clamp255(a.round(dct.block_idct(c.to(dtype) * q.to(dtype)) + 128))
            planes.append(dct.blocks_to_plane(samples))
    return _assemble(planes, coeffs.size, coeffs.subsampling, a)


def _round_trip_islow(images: torch.Tensor, qt: torch.Tensor, subsampling: str) -> torch.Tensor:
    """``_decode(_encode(images))`` in integer arithmetic without the block layout in between (dummy blocks,
    which the decode crops away, are skipped). -> float32 [B, C, H, W], integers 0..255."""
    planes = _component_planes(_sample_planes(images, _INTEGER), subsampling, _INTEGER)
    # |coefficient * q| <= |x| / 8 + q / 2 < 2**12 + 2**15: exact in float32.
    samples = [_samples_islow(_quantize_islow(p, qt[:, i]), qt[:, i], float32_product=True)
               for i, p in enumerate(planes)]
    return _assemble(samples, tuple(images.shape[-2:]), subsampling, _INTEGER)


def _assemble(planes: list[torch.Tensor], size: tuple[int, int], subsampling: str, a: _Arith) -> torch.Tensor:
    """Decoded component planes (whole MCUs) -> samples [B, C, H, W] in 0..255: crop, upsample chroma, to RGB."""
    height, width = size
    y = planes[0][:, :height, :width]
    if len(planes) == 1:
        return y[:, None]
    h, v = sampling.check_subsampling(subsampling)
    upsample = sampling.upsample_fancy_exact if a.integer else partial(sampling.upsample_fancy, floor_div=a.floor_div)
    chroma = [upsample(p[:, :_ceil_div(height, v), :_ceil_div(width, h)], h, v)[:, :height, :width] for p in planes[1:]]
    if a.integer:
        return colour.ycbcr_to_rgb_planes(y, *chroma)
    ycc = torch.stack([y, *chroma], 1)
    return a.clamp255(a.round(colour.ycbcr_to_rgb(ycc)))


def _check_coeffs(coeffs: Coefficients) -> None:
    if not isinstance(coeffs, Coefficients):
        raise ValueError(f"expected jpeg.Coefficients, got {type(coeffs).__name__}")
    h, v = sampling.check_subsampling(coeffs.subsampling) if coeffs.num_components == 3 else (1, 1)
    hb, wb = coeffs.y.shape[1:3]
    need = (_ceil_div(coeffs.size[0], 8 * v) * v, _ceil_div(coeffs.size[1], 8 * h) * h)
    if (hb, wb) != need:
        raise ValueError(
            f"luma block grid {hb}x{wb} does not match size {coeffs.size} ({coeffs.subsampling}): need {need}"
        )
    if coeffs.cb is not None:
        for name, c in (("cb", coeffs.cb), ("cr", coeffs.cr)):
            if tuple(c.shape[1:3]) != (hb // v, wb // h):
                raise ValueError(f"{name} block grid {tuple(c.shape[1:3])} does not match luma grid {hb}x{wb}")


@full_precision
def decode(coeffs: Coefficients, rounding: str = "ste") -> torch.Tensor:
    """Decode coefficients as libjpeg-turbo's default decoder does (islow IDCT, fancy upsampling).

    Returns float [B, C, H, W] in [0, 1]: float32 (also for half coefficients), float64 for float64
    coefficients. The same bits under any autocast / TF32 setting.
    """
    _check_coeffs(coeffs)
    _check_rounding(rounding)
    dtype = _work_dtype(coeffs.y) if coeffs.y.is_floating_point() else torch.float32
    needs_grad = torch.is_grad_enabled() and any(c.requires_grad for c in coeffs.components())
    source = coeffs if rounding != "exact" else coeffs.detach()

    def run(a: _Arith):
        return _decode(source if not a.integer else source.detach(), a, dtype).to(dtype)

    return _with_surrogate(rounding, needs_grad, run, _straight_through) / 255


def _chroma_resampling_adjoint(grad: torch.Tensor, subsampling: str) -> torch.Tensor:
    """Adjoint of the linearized chroma path of a round trip, written out. [B, K, H, W] -> same.

    The path: replicate to whole sampling groups, average each h x v group, keep ceil(W/h) columns, fancy
    upsampling (separable [3/4, 1/4] filters, edges replicated; box for planes at most 2 wide), crop to H x W.
    Its adjoint runs the transposed steps backwards.
    """
    height, width = grad.shape[-2:]
    h, v = sampling.check_subsampling(subsampling)
    hc, wc = _ceil_div(height, v), _ceil_div(width, h)
    g = torch.nn.functional.pad(grad, (0, wc * h - width, 0, hc * v - height))  # crop^T
    if wc <= 2:  # box upsampling^T: sum over each group
        d = g.reshape(*g.shape[:-2], hc, v, wc, h).sum((-3, -1))
    else:
        d = _fancy_adjoint_1d(g, -1) if h == 2 else g
        d = _fancy_adjoint_1d(d, -2) if v == 2 else d
    up = (d * (1.0 / (h * v))).repeat_interleave(v, -2).repeat_interleave(h, -1)  # group average^T
    if wc * h > width:  # edge replication^T: columns first, then rows (the reverse of the padding)
        up[..., width - 1] += up[..., width:].sum(-1)
    if hc * v > height:
        up[..., height - 1, :] += up[..., height:, :].sum(-2)
    return up[..., :height, :width]


def _fancy_adjoint_1d(g: torch.Tensor, dim: int) -> torch.Tensor:
    """Transpose of the 1-D fancy filter along ``dim`` (-1 or -2): out[2i] = (3 x[i] + x[i-1]) / 4,
    out[2i+1] = (3 x[i] + x[i+1]) / 4, edges replicated. [..., 2n, ...] -> [..., n, ...]."""
    even, odd = (g[..., 0::2], g[..., 1::2]) if dim == -1 else (g[..., 0::2, :], g[..., 1::2, :])
    n = even.shape[dim]
    x = (even + odd).mul_(3)
    x.narrow(dim, 1, n - 1).add_(odd.narrow(dim, 0, n - 1))  # x[i + 1] feeds out[2i + 1]
    x.narrow(dim, n - 1, 1).add_(odd.narrow(dim, n - 1, 1))  # the replicated right edge
    x.narrow(dim, 0, n - 1).add_(even.narrow(dim, 1, n - 1))  # x[i - 1] feeds out[2i]
    x.narrow(dim, 0, 1).add_(even.narrow(dim, 0, 1))  # the replicated left edge
    return x.mul_(0.25)


def _round_trip_adjoint(grad: torch.Tensor, subsampling: str) -> torch.Tensor:
    """Adjoint of the codec's straight-through linearization for a round trip. [B, C, H, W] -> same.

    With identity gradients at every rounding, quantization with dequantization and the DCT with
    its inverse cancel; what remains is RGB -> YCbCr, chroma down- and upsampling, YCbCr -> RGB.
    Luma passes unchanged, so only the chroma part differs from the identity.
    """
    if grad.shape[1] == 1 or subsampling == "4:4:4":
        return grad
    to_ycc, to_rgb = colour._RGB_TO_YCC, colour._YCC_TO_RGB
    # (YCbCr -> RGB)^T restricted to the chroma rows, then (RGB -> YCbCr)^T from the chroma rows.
    g_chroma = colour.mix_channels(grad, tuple(zip(*to_rgb))[1:])
    resampled = _chroma_resampling_adjoint(g_chroma, subsampling)
    return grad + colour.mix_channels(resampled - g_chroma, tuple(zip(*to_ycc[1:])))


class _RoundTripSTE(torch.autograd.Function):
    """Bit-exact round trip forward; the linearized codec's adjoint backward."""

    @staticmethod
    def forward(ctx, images, qt, subsampling):
        ctx.subsampling = subsampling
        return _round_trip_islow(images, qt, subsampling).to(images.dtype) / 255

    @staticmethod
    @full_precision
    def backward(ctx, grad):
        return _round_trip_adjoint(grad, ctx.subsampling), None, None


@full_precision
def compress(
    images: torch.Tensor,
    quality: Optional[QualityLike] = None,
    tables: Optional[torch.Tensor] = None,
    subsampling: str = "4:2:0",
    rounding: str = "ste",
) -> torch.Tensor:
    """``decode(encode(images))``: the JPEG round trip, differentiable w.r.t. images for "ste"/"cubic".

    [B, C, H, W] in [0, 1] -> [B, C, H, W] in [0, 1]: float32 (bfloat16/float16 images are computed and
    answered in float32, which holds every 8-bit level exactly), float64 for float64 images. For "ste"
    this equals ``decode(encode(x))`` in value and gradient but skips the block transforms in the
    backward pass; the gradient reaching ``images`` has the images' dtype. The same bits under any
    autocast / TF32 setting.
    """
    _check_rounding(rounding)
    needs_grad = torch.is_grad_enabled() and images.requires_grad
    if rounding == "cubic":
        return decode(encode(images, quality, tables, subsampling, rounding), rounding)
    _check_images(images)
    sampling.check_subsampling(subsampling)
    qt = _resolve_tables(quality, tables, images.shape[0], images.shape[1], images.device)
    work = images.to(_work_dtype(images))
    stored = subsampling if images.shape[1] == 3 else "4:4:4"
    if rounding == "ste" and needs_grad:
        return _RoundTripSTE.apply(work, qt, stored)
    return _round_trip_islow(work.detach(), qt, stored).to(work.dtype) / 255
