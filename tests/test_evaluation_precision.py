"""The ``precision`` option of every restoration method (evaluate.py ``method.precision``, ``jpegrestore restore
--precision``): the network runs in the requested dtype, the output is float32, finite and close to the float32
result, and "32" is float32 throughout."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from checkpoint_helpers import write_tiny_checkpoint
from conftest import CONF
from jpegrestore import jpeg
from jpegrestore.evaluation.methods import build_method, checkpoint_method
from jpegrestore.evaluation.precision import precision_dtype
from posterior_helpers import write_posterior_checkpoint

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
#: largest mean |reduced - float32| on [0, 1] images. Measured on CPU (48x64 crop, QF 20): bf16 QGAC tiny 1.6e-4,
#: posterior 8.0e-4, DDRM-JPEG on the tiny DDPM (3 steps) 3.3e-3; fp16 QGAC 1.9e-5, posterior 1.1e-4.
TOLERANCE = {"bf16": 1e-2, "16": 1e-3}


def _jpeg(quality: int = 20) -> tuple[jpeg.Coefficients, torch.Tensor]:
    from skimage import data

    image = torch.from_numpy(data.astronaut()[120:168, 180:244].copy()).permute(2, 0, 1)[None].float() / 255
    coeffs = jpeg.encode(image, quality=quality, rounding="exact")
    return coeffs, jpeg.decode(coeffs)


class LayerDtypes:
    """Forward hooks on every conv / linear layer: the dtypes of their outputs."""

    def __init__(self, module: nn.Module) -> None:
        self.seen: set[torch.dtype] = set()
        self.handles = [m.register_forward_hook(lambda m, a, out: self.seen.add(out.dtype))
                        for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        assert self.handles, "no layer to watch"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    from jpegrestore.sampling import write_tiny_ddpm

    root = tmp_path_factory.mktemp("precision")
    return {"qgac": write_tiny_checkpoint(root / "qgac.ckpt")[0],
            "posterior": write_posterior_checkpoint(root / "posterior.ckpt"),
            "ddrm": write_tiny_ddpm(root / "tiny-ddpm")}


def _method(kind: str, path: Path, device: str, precision: str):
    if kind == "ddrm":
        from jpegrestore.evaluation.ddrm import DDRMJPEGMethod

        return DDRMJPEGMethod(prior=str(path), steps=3, device=device, precision=precision)
    return checkpoint_method(path, device=device, tile=None, outside_range="run", precision=precision)


def _network(method) -> nn.Module:
    method = getattr(method, "method", method)  # the domain guard wraps checkpoint methods
    return method.prior.eps_model if hasattr(method, "prior") else method.network


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["qgac", "posterior", "ddrm"])
@pytest.mark.parametrize("precision", ["bf16", "16"])
def test_precision_reaches_the_network_and_stays_close_to_float32(checkpoints, kind, precision, device):
    if device == "cpu" and precision == "16" and kind == "ddrm":
        pytest.skip("diffusers' attention in float16 autocast is slow on CPU; covered by bf16 and on CUDA")
    coeffs, image = _jpeg()
    outputs = {}
    for option in ("32", precision):
        method = _method(kind, checkpoints[kind], device, option)
        watch = LayerDtypes(_network(method))
        outputs[option] = method(coeffs, image).cpu()
        expected = {torch.float32} if option == "32" else {precision_dtype(option)}
        assert watch.seen == expected, (option, watch.seen)
    reduced, full = outputs[precision], outputs["32"]
    assert reduced.dtype == torch.float32 and torch.isfinite(reduced).all()
    error = (reduced - full).abs().mean().item()
    assert error < TOLERANCE[precision], error
    assert not torch.equal(reduced, full)  # it did run in another precision


def test_bad_precision_is_an_error_naming_the_option(checkpoints):
    with pytest.raises(ValueError, match="precision must be one of"):
        checkpoint_method(checkpoints["qgac"], device="cpu", precision="8")


def test_evaluate_config_passes_method_precision(checkpoints):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        auto = compose(config_name="evaluate", overrides=[f"ckpt={checkpoints['qgac']}", "method.precision=bf16"])
        plain = compose(config_name="evaluate", overrides=[f"ckpt={checkpoints['qgac']}", "method=checkpoint",
                                                           "method.precision=16"])
    for cfg, dtype in ((auto, torch.bfloat16), (plain, torch.float16)):
        method = build_method(cfg.method, cfg.ckpt, "cpu", None)
        assert getattr(method, "method", method).dtype == dtype


def test_restore_cli_precision(checkpoints, tmp_path):
    from skimage import data

    from jpegrestore.cli import main

    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()[100:164, 150:230]).save(buffer, format="JPEG", quality=20)
    (tmp_path / "in.jpg").write_bytes(buffer.getvalue())
    results = {}
    for precision in ("32", "bf16"):
        out = tmp_path / precision
        main(["restore", str(tmp_path / "in.jpg"), "-o", str(out), "--ckpt", str(checkpoints["qgac"]),
              "--device", "cpu", "--precision", precision, "--outside-range", "run", "-q"])
        results[precision] = np.asarray(Image.open(next(out.glob("*.png")))).astype(np.float64)
    difference = np.abs(results["bf16"] - results["32"])
    assert 0 < difference.mean() < 2.0, difference.mean()  # gray levels: bf16 ran, and stays close
