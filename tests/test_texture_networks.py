"""The texture loss's two VGG16 networks and their input conventions, on random-weight files: the paper's MINC
VGG16 converted from a Caffe dump (BGR, 0..255, mean subtracted) and torchvision's ImageNet VGG16 (normalized RGB).
The reference is a VGG16 written here with plain F.conv2d calls on the raw arrays."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from conftest import write_random_caffe_vgg16
from jpegrestore import losses
from jpegrestore.losses.convert_minc import VGG16_CONV_SHAPES, main as convert_main

POOL_AFTER = {"conv1_2", "conv2_2", "conv3_3", "conv4_3"}


def reference_conv5_3(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """VGG16 up to conv5_3 (pre-activation) from raw ``<layer>.weight/.bias`` arrays."""
    for layer in VGG16_CONV_SHAPES:
        x = F.conv2d(x, params[f"{layer}.weight"], params[f"{layer}.bias"], padding=1)
        if layer == "conv5_3":
            return x
        x = F.relu(x)
        if layer in POOL_AFTER:
            x = F.max_pool2d(x, 2)
    raise AssertionError("unreachable")


def images(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(2, 3, 32, 32, generator=gen), torch.rand(2, 3, 32, 32, generator=gen)


@pytest.mark.parametrize("layout", ["npz", "torch"])
def test_minc_conversion_uses_the_caffe_convention(tmp_path, layout, capsys):
    source = tmp_path / ("params.npz" if layout == "npz" else "params.pth")
    params = write_random_caffe_vgg16(source, seed=3, layout=layout)
    convert_main([str(source), str(tmp_path / "minc_vgg16.pth")])
    assert "minc_vgg16.pth" in capsys.readouterr().out
    loss_fn = losses.TextureLoss(tmp_path / "minc_vgg16.pth", network="minc_vgg16")
    pred, target = images(1)
    mean_bgr = torch.tensor([104.0, 117.0, 124.0]).view(1, 3, 1, 1)

    def caffe(x):  # RGB [0, 1] -> BGR 0..255 minus the mean pixel
        return x[:, [2, 1, 0]] * 255.0 - mean_bgr

    expected = (reference_conv5_3(params, caffe(pred)) - reference_conv5_3(params, caffe(target))).abs().mean()
    assert loss_fn(pred, target).item() == pytest.approx(expected.item(), rel=1e-4)
    # the ImageNet convention on the same weights gives a different value: the convention matters
    wrong = (reference_conv5_3(params, (pred - 0.45) / 0.225) - reference_conv5_3(params, (target - 0.45) / 0.225))
    assert abs(wrong.abs().mean().item() - expected.item()) > 1e-3 * expected.item()


def test_minc_mean_is_read_from_the_converted_file(tmp_path):
    params = write_random_caffe_vgg16(tmp_path / "params.npz", seed=4)
    convert_main([str(tmp_path / "params.npz"), str(tmp_path / "m.pth"), "--mean-bgr", "10", "20", "30"])
    loss_fn = losses.TextureLoss(tmp_path / "m.pth", network="minc_vgg16")
    x = torch.rand(1, 3, 16, 16)
    expected = x[:, [2, 1, 0]] * 255.0 - torch.tensor([10.0, 20.0, 30.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(loss_fn.network_input(x), expected)
    assert torch.load(tmp_path / "m.pth", weights_only=True)["jpegrestore_vgg"]["network"] == "minc_vgg16"
    assert torch.equal(loss_fn.features[0].weight, params["conv1_1.weight"])  # stored unchanged (BGR conv1_1)


def test_imagenet_convention_on_a_torchvision_file(tmp_path):
    params = write_random_caffe_vgg16(tmp_path / "raw.pth", seed=5, layout="torch")
    index = {"conv1_1": 0, "conv1_2": 2, "conv2_1": 5, "conv2_2": 7, "conv3_1": 10, "conv3_2": 12, "conv3_3": 14,
             "conv4_1": 17, "conv4_2": 19, "conv4_3": 21, "conv5_1": 24, "conv5_2": 26, "conv5_3": 28}
    torch.save({f"features.{index[k.split('.')[0]]}.{k.split('.')[1]}": v for k, v in params.items()},
               tmp_path / "vgg16-397923af.pth")
    loss_fn = losses.TextureLoss(tmp_path / "vgg16-397923af.pth", network="imagenet_vgg16")
    pred, target = images(2)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    expected = (reference_conv5_3(params, (pred - mean) / std) - reference_conv5_3(params, (target - mean) / std))
    assert loss_fn(pred, target).item() == pytest.approx(expected.abs().mean().item(), rel=1e-4)


def test_texture_network_and_file_must_match(tmp_path, random_vgg16, random_minc_vgg16):
    with pytest.raises(ValueError, match="convert_minc"):
        losses.TextureLoss(random_vgg16, network="minc_vgg16")  # a torchvision file is not the MINC network
    with pytest.raises(ValueError, match="texture_network=minc_vgg16"):
        losses.TextureLoss(random_minc_vgg16, network="imagenet_vgg16")
    with pytest.raises(ValueError, match="unknown texture network"):
        losses.TextureLoss(random_minc_vgg16, network="vgg19")


def test_conversion_errors_name_the_layer(tmp_path):
    params = write_random_caffe_vgg16(tmp_path / "p.pth", layout="torch")
    good = params["conv3_2.weight"]
    params["conv3_2.weight"] = good[:, :128]
    torch.save(params, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="conv3_2"):
        convert_main([str(tmp_path / "bad.pth"), str(tmp_path / "out.pth")])
    params["conv3_2.weight"] = good
    del params["conv5_3.bias"]
    torch.save(params, tmp_path / "short.pth")
    with pytest.raises(ValueError, match="conv5_3"):
        convert_main([str(tmp_path / "short.pth"), str(tmp_path / "out.pth")])
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        convert_main([str(tmp_path / "missing.npz"), str(tmp_path / "out.pth")])


def test_missing_minc_file_names_it_and_the_converter(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("JPEGRESTORE_WEIGHTS", raising=False)
    with pytest.raises(FileNotFoundError, match="minc_vgg16.pth") as error:
        losses.TextureLoss(network="minc_vgg16")
    assert "convert_minc" in str(error.value)
