"""Convert the Caffe MINC-2500 VGG16 (Bell et al. 2015) to the file QGAC's texture loss loads.

    python -m jpegrestore.losses.convert_minc minc-vgg16-params.npz minc_vgg16.pth
    # then: python train.py experiment=qgac_stage3 model.vgg_weights=minc_vgg16.pth ...
    # or put minc_vgg16.pth into $JPEGRESTORE_WEIGHTS

Caffe itself is not needed here: dump the parameters of ``minc-vgg16.caffemodel`` (with its deploy prototxt)
once, on any machine with pycaffe, into one of these layouts (only conv1_1 ... conv5_3 are read; fc layers
are ignored):

- ``.npz`` with ``<layer>_0`` (weight, [out, in, 3, 3], Caffe's OIHW layout) and ``<layer>_1`` (bias, [out])
  for each layer, e.g. ``numpy.savez(out, **{f"{n}_{i}": b.data for n, p in net.params.items()
  for i, b in enumerate(p)})``;
- a torch file (``torch.save``) or ``.npz`` with ``<layer>.weight`` and ``<layer>.bias`` (what Caffe-to-PyTorch
  converters write).

The weights are stored unchanged, so conv1_1 still expects the Caffe input: BGR channel order, 0..255, minus
the mean pixel (default (B, G, R) = (104, 117, 124), the MINC models' mean as their release's README.txt states
it; see ``perceptual.MINC_MEAN_BGR``; ``--mean-bgr`` overrides it). The
output holds ``{"state_dict": {"features.<i>.weight", ...} in torchvision's VGG16 layout,
"jpegrestore_vgg": {"network": "minc_vgg16", "input": "caffe_bgr", "mean_bgr": [...], "source": ...}}``;
:class:`jpegrestore.losses.TextureLoss` with ``network="minc_vgg16"`` reads the convention from it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jpegrestore.losses.perceptual import MINC_MEAN_BGR, VGG16_CONV_INDEX, VGG_META_KEY

#: (out, in) channels of VGG16's 13 convolutions (all 3x3).
VGG16_CONV_SHAPES = {
    "conv1_1": (64, 3), "conv1_2": (64, 64), "conv2_1": (128, 64), "conv2_2": (128, 128),
    "conv3_1": (256, 128), "conv3_2": (256, 256), "conv3_3": (256, 256), "conv4_1": (512, 256),
    "conv4_2": (512, 512), "conv4_3": (512, 512), "conv5_1": (512, 512), "conv5_2": (512, 512),
    "conv5_3": (512, 512),
}


def read_caffe_params(path: str | Path) -> dict[str, Any]:
    """Parameter arrays of a dumped Caffe VGG16 (``.npz`` or torch file), keyed as in the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Caffe parameter file not found: {path}")
    if path.suffix == ".npz":
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of parameter names to arrays")
    return data


def _param(params: dict[str, Any], layer: str, kind: str, source: str) -> torch.Tensor:
    index = {"weight": 0, "bias": 1}[kind]
    for key in (f"{layer}.{kind}", f"{layer}_{index}"):
        if key in params:
            return torch.as_tensor(np.asarray(params[key]), dtype=torch.float32).clone()
    raise ValueError(f"{source}: no {layer} {kind} (expected key '{layer}.{kind}' or '{layer}_{index}')")


def caffe_to_torchvision(params: dict[str, Any], source: str = "<params>") -> dict[str, torch.Tensor]:
    """Caffe VGG16 conv parameters -> torchvision ``features.<i>.weight/bias`` (shapes checked, values unchanged)."""
    state = {}
    for layer, index in VGG16_CONV_INDEX.items():
        out_channels, in_channels = VGG16_CONV_SHAPES[layer]
        weight, bias = _param(params, layer, "weight", source), _param(params, layer, "bias", source)
        bias = bias.reshape(-1)
        if tuple(weight.shape) != (out_channels, in_channels, 3, 3) or tuple(bias.shape) != (out_channels,):
            raise ValueError(f"{source}: {layer} has weight {list(weight.shape)} and bias {list(bias.shape)}, "
                             f"expected [{out_channels}, {in_channels}, 3, 3] and [{out_channels}]")
        state[f"features.{index}.weight"], state[f"features.{index}.bias"] = weight, bias
    return state


def convert(source: str | Path, out: str | Path, mean_bgr: tuple[float, float, float] = MINC_MEAN_BGR) -> Path:
    """Write the converted MINC VGG16 file. -> ``out``."""
    state = caffe_to_torchvision(read_caffe_params(source), str(source))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"network": "minc_vgg16", "input": "caffe_bgr", "mean_bgr": [float(v) for v in mean_bgr],
            "source": Path(source).name}
    torch.save({"state_dict": state, VGG_META_KEY: meta}, out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="dumped Caffe parameters (.npz or torch file), see the module docstring")
    parser.add_argument("out", help="output file, e.g. minc_vgg16.pth")
    parser.add_argument("--mean-bgr", type=float, nargs=3, default=list(MINC_MEAN_BGR), metavar=("B", "G", "R"),
                        help="mean pixel subtracted from BGR 0..255 inputs (default: 104 117 124)")
    args = parser.parse_args(argv)
    print(f"wrote {convert(args.source, args.out, tuple(args.mean_bgr))}")


if __name__ == "__main__":
    main()
