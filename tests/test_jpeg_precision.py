"""The JPEG op gives the same bits under autocast (bf16, fp16) and reduced-precision matmul settings.

Every exact path is run on natural photos at odd sizes once in plain float32 and once inside
``torch.autocast`` with ``torch.set_float32_matmul_precision("medium")`` (on CUDA also with TF32 on
for cuBLAS and cuDNN); the results must be equal bit for bit, and half inputs are computed and
answered in float32.
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

from jpegrestore import jpeg
from jpegrestore.losses.consistency import consistency_loss
from jpegrestore.metrics.consistency import jpeg_consistency
from jpeg_helpers import photo, to_tensor

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
HALF = [torch.bfloat16, torch.float16]
# (photo, height, width, quality, subsampling): odd sizes, all layouts, low to high quality.
CASES = [
    ("astronaut", 37, 53, 10, "4:2:0"),
    ("chelsea", 29, 45, 50, "4:2:2"),
    ("coffee", 33, 27, 95, "4:4:4"),
    ("camera", 31, 41, 30, "4:4:4"),
]


def _images(device: str) -> list[tuple[torch.Tensor, int, str]]:
    return [(to_tensor(photo(name, h, w, top=100, left=120)).to(device), q, s) for name, h, w, q, s in CASES]


def _amp_dtypes(device: str) -> list[torch.dtype]:
    return [d for d in HALF if device == "cuda" or torch.amp.autocast_mode.is_autocast_available(device)]


@contextmanager
def reduced_precision(device: str, dtype: torch.dtype):
    """Autocast to ``dtype`` with every float32 matmul shortcut PyTorch offers switched on."""
    saved = torch.get_float32_matmul_precision()
    saved_cuda = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.set_float32_matmul_precision("medium")
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        with torch.autocast(device, dtype=dtype):
            yield
    finally:
        torch.set_float32_matmul_precision(saved)
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved_cuda


def _assert_identical(a, b, what: str) -> None:
    if isinstance(a, jpeg.Coefficients):
        for name, x, y in zip(("y", "cb", "cr", "qt"), a.components() + [a.qt], b.components() + [b.qt]):
            _assert_identical(x, y, f"{what}.{name}")
        return
    assert a.dtype == b.dtype, f"{what}: dtype {a.dtype} under autocast, {b.dtype} in float32"
    assert torch.equal(a, b), f"{what}: differs by up to {(a.double() - b.double()).abs().max().item():.3g}"


def _codec_outputs(x: torch.Tensor, quality: int, subsampling: str) -> dict[str, object]:
    out = {}
    for rounding in jpeg.ROUNDING_MODES:
        coeffs = jpeg.encode(x, quality, subsampling=subsampling, rounding=rounding)
        out[f"encode/{rounding}"] = coeffs.detach()
        out[f"decode/{rounding}"] = jpeg.decode(coeffs, rounding=rounding).detach()
        out[f"compress/{rounding}"] = jpeg.compress(x, quality, subsampling=subsampling, rounding=rounding).detach()
        leaf = x.clone().requires_grad_(rounding != "exact")  # "ste" takes the straight-through Function
        out[f"compress-grad/{rounding}"] = jpeg.compress(leaf, quality, subsampling=subsampling, rounding=rounding).detach()
    return out


@pytest.mark.parametrize("device", DEVICES)
def test_codec_identical_under_autocast(device):
    for x, quality, subsampling in _images(device):
        reference = _codec_outputs(x, quality, subsampling)
        for dtype in _amp_dtypes(device):
            with reduced_precision(device, dtype):
                got = _codec_outputs(x, quality, subsampling)
            for key in reference:
                _assert_identical(got[key], reference[key], f"{key} {dtype} q{quality} {subsampling}")


@pytest.mark.parametrize("device", DEVICES)
def test_original_reencodes_to_its_own_coefficients_under_autocast(device):
    """The posterior GAN's C term at X itself: 0 exactly, and X is consistent with its own JPEG."""
    for x, quality, subsampling in _images(device):
        coeffs = jpeg.encode(x, quality, subsampling=subsampling, rounding="exact")
        jpeg_image = jpeg.decode(coeffs, rounding="exact")
        metric = jpeg_consistency(jpeg_image, x, quality=quality, subsampling=subsampling, rounding="exact")
        for dtype in _amp_dtypes(device):
            with reduced_precision(device, dtype):
                assert bool(jpeg.is_consistent(x, coeffs).all())
                stored = "4:4:4" if x.shape[1] == 1 else subsampling
                restored = x.clone().requires_grad_(True)
                c = consistency_loss(restored, jpeg_image, coeffs.qt, stored)
                assert c.dtype == torch.float32 and c.item() == 0.0
                c.backward()
                assert restored.grad.dtype == torch.float32
                got = jpeg_consistency(jpeg_image, x, quality=quality, subsampling=subsampling, rounding="exact")
            _assert_identical(got, metric, f"jpeg_consistency {dtype}")


@pytest.mark.parametrize("device", DEVICES)
def test_project_and_float_codec_identical_under_autocast(device):
    generator = torch.Generator().manual_seed(0)
    for x, quality, subsampling in _images(device):
        coeffs = jpeg.encode(x, quality, subsampling=subsampling, rounding="exact")
        noisy = (x + 0.05 * torch.randn(x.shape, generator=generator).to(device)).clamp(0, 1)

        def run():
            projected = jpeg.project(noisy, coeffs, iterations=5)
            y = jpeg.float_encode(x, tables=coeffs.qt, subsampling=subsampling)
            canvas = jpeg.float_decode(y)
            return {
                "project": projected, "is_consistent": jpeg.is_consistent(projected, coeffs),
                "float_encode": y, "float_decode": canvas,
                "float_encode(float_decode)": jpeg.float_encode(canvas, tables=coeffs.qt, subsampling=subsampling,
                                                                size=y.size),
            }

        reference = run()
        for dtype in _amp_dtypes(device):
            with reduced_precision(device, dtype):
                got = run()
            for key in reference:
                _assert_identical(got[key], reference[key], f"{key} {dtype} q{quality} {subsampling}")


@pytest.mark.parametrize("device", DEVICES)
def test_read_write_identical_under_autocast(device, tmp_path):
    x, quality, subsampling = _images(device)[0]
    coeffs = jpeg.encode(x, quality, subsampling=subsampling, rounding="exact")
    jpeg.write(tmp_path / "plain.jpg", coeffs)
    reference = jpeg.read(tmp_path / "plain.jpg")
    for dtype in _amp_dtypes(device):
        with reduced_precision(device, dtype):
            jpeg.write(tmp_path / f"{dtype}.jpg", coeffs)
            got = jpeg.read(tmp_path / f"{dtype}.jpg")
            decoded = jpeg.decode(got.to(device), rounding="exact")
        _assert_identical(got, reference, f"read {dtype}")
        _assert_identical(decoded, jpeg.decode(coeffs, rounding="exact"), f"decode(read) {dtype}")
        assert (tmp_path / f"{dtype}.jpg").read_bytes() == (tmp_path / "plain.jpg").read_bytes()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("half", HALF)
def test_half_inputs_computed_in_float32(device, half):
    """Half images give the float32 results of the same (rounded) values; outputs are float32."""
    for x, quality, subsampling in _images(device):
        h = x.to(half)
        for rounding in jpeg.ROUNDING_MODES:
            _assert_identical(jpeg.encode(h, quality, subsampling=subsampling, rounding=rounding),
                              jpeg.encode(h.float(), quality, subsampling=subsampling, rounding=rounding),
                              f"encode {half} {rounding}")
            _assert_identical(jpeg.compress(h, quality, subsampling=subsampling, rounding=rounding),
                              jpeg.compress(h.float(), quality, subsampling=subsampling, rounding=rounding),
                              f"compress {half} {rounding}")
            leaf = h.clone().requires_grad_(rounding != "exact")
            _assert_identical(jpeg.compress(leaf, quality, subsampling=subsampling, rounding=rounding).detach(),
                              jpeg.compress(h.float(), quality, subsampling=subsampling, rounding=rounding),
                              f"compress of a {half} leaf {rounding}")
        coeffs = jpeg.encode(x, quality, subsampling=subsampling, rounding="exact")
        _assert_identical(jpeg.decode(coeffs.to(half), rounding="exact"), jpeg.decode(coeffs.to(half).to(torch.float32), "exact"),
                          f"decode of {half} coefficients")
        _assert_identical(jpeg.project(h, coeffs, iterations=3), jpeg.project(h.float(), coeffs, iterations=3),
                          f"project {half}")
        assert bool(jpeg.is_consistent(x.to(half), jpeg.encode(x.to(half), quality, subsampling=subsampling)).all())
        _assert_identical(jpeg.float_encode(h, quality, subsampling=subsampling),
                          jpeg.float_encode(h.float(), quality, subsampling=subsampling), f"float_encode {half}")


@pytest.mark.parametrize("device", DEVICES)
def test_gradients_under_autocast(device):
    """float32 leaves get float32 gradients equal to those outside autocast; half leaves get their dtype."""
    x, quality, subsampling = _images(device)[0]
    weight = torch.linspace(-1, 1, x.numel(), device=device).reshape(x.shape)

    def grads(leaf: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        for rounding in ("ste", "cubic"):
            for name, fn in (
                ("compress", lambda t: jpeg.compress(t, quality, subsampling=subsampling, rounding=rounding)),
                ("decode(encode)", lambda t: jpeg.decode(jpeg.encode(t, quality, subsampling=subsampling,
                                                                     rounding=rounding), rounding=rounding)),
            ):
                t = leaf.detach().clone().requires_grad_(True)
                (fn(t) * weight).sum().backward()
                out[f"{name}/{rounding}"] = t.grad
        return out

    reference = grads(x)
    for dtype in _amp_dtypes(device):
        with reduced_precision(device, dtype):
            got = grads(x)
            half_grads = grads(x.to(dtype))
        for key in reference:
            _assert_identical(got[key], reference[key], f"gradient of {key} under {dtype}")
            assert half_grads[key].dtype == dtype
            assert torch.isfinite(half_grads[key]).all()
