"""Published baselines through spandrel: FBCNN's quality input, grayscale networks on colour JPEGs, padding to
the window size, tiling, weight lookup and errors; random weights in the published layouts."""

from __future__ import annotations

import pytest
import torch

from jpegrestore import jpeg
from spandrel_helpers import write_dncnn3, write_fbcnn, write_swinir_gray

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _jpeg(height: int = 40, width: int = 48, quality: int = 20, channels: int = 3):
    import skimage.data

    photo = skimage.data.astronaut()[100:100 + height, 180:180 + width]
    image = torch.from_numpy(photo.copy()).permute(2, 0, 1)[None].float() / 255
    if channels == 1:
        image = (image * torch.tensor([0.299, 0.587, 0.114])[None, :, None, None]).sum(1, keepdim=True)
        image = (image * 255).round() / 255
    coeffs = jpeg.encode(image, quality=quality, rounding="exact")
    return coeffs, jpeg.decode(coeffs, rounding="exact")


@pytest.mark.parametrize("device", DEVICES)
def test_fbcnn_quality_input_predicted_from_file_and_fixed(tmp_path, device):
    from jpegrestore.evaluation.baselines import SpandrelMethod

    path, net = write_fbcnn(tmp_path / "fbcnn_color.pth")
    coeffs, image = _jpeg(37, 45, quality=20)  # FBCNN pads to 8 itself
    net = net.to(device)
    with torch.no_grad():
        predicted = net(image.to(device))[0].clamp(0, 1)
        at_20 = net(image.to(device), torch.tensor([[0.8]], device=device))[0].clamp(0, 1)
        at_60 = net(image.to(device), torch.tensor([[0.4]], device=device))[0].clamp(0, 1)
    assert not torch.allclose(at_20, at_60)  # the quality input matters for this network
    runs = {None: predicted, "file": at_20, 20: at_20, 60: at_60}
    method = SpandrelMethod(weights=path, device=device, tile=0)  # loaded once (29M parameters)
    assert method.name == "FBCNN"
    for quality, expected in runs.items():
        method.quality = quality
        out = method(coeffs, image)
        assert out.shape == image.shape
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
        assert method.extras["nfe"].tolist() == [1.0]


def test_grayscale_network_restores_the_luma_and_keeps_the_chroma(tmp_path):
    from jpegrestore.evaluation.baselines import SpandrelMethod

    path, net = write_dncnn3(tmp_path / "dncnn3.pth")
    coeffs, image = _jpeg(32, 40)
    out = SpandrelMethod(weights=path, device="cpu", tile=0)(coeffs, image)
    weights = torch.tensor([0.299, 0.587, 0.114])[None, :, None, None]  # JFIF, written out
    luma = (image * weights).sum(1, keepdim=True)
    with torch.no_grad():
        expected_luma = net(luma).clamp(0, 1)
    cb = lambda x: (-0.168736 * x[:, 0] - 0.331264 * x[:, 1] + 0.5 * x[:, 2])  # noqa: E731
    cr = lambda x: (0.5 * x[:, 0] - 0.418688 * x[:, 1] - 0.081312 * x[:, 2])  # noqa: E731
    mask = ((out > 0) & (out < 1)).all(1)  # away from the RGB clamp
    assert mask.float().mean() > 0.5
    torch.testing.assert_close((out * weights).sum(1)[mask], expected_luma[:, 0][mask], atol=1e-4, rtol=0)
    torch.testing.assert_close(cb(out)[mask], cb(image)[mask], atol=1e-4, rtol=0)
    torch.testing.assert_close(cr(out)[mask], cr(image)[mask], atol=1e-4, rtol=0)
    # a colour JPEG through a grayscale network is not a gray image
    assert (out[:, 0] - out[:, 2]).abs().max() > 0.05


def test_swinir_input_is_padded_symmetrically_to_its_window(tmp_path):
    """The padding of SwinIR's test script, written out: mirror the image below and to the right, crop to a
    multiple of the window (7), run, crop back."""
    from jpegrestore.evaluation.baselines import SpandrelMethod

    path, net = write_swinir_gray(tmp_path / "006_CAR_DFWB_s126w7_SwinIR-M_jpeg10.pth")
    coeffs, image = _jpeg(33, 41, channels=1)
    method = SpandrelMethod(weights=path, device="cpu", tile=0)
    assert method.multiple == 7 and method.channels == 1
    h_pad, w_pad = 35 - 33, 42 - 41
    padded = torch.cat([image, torch.flip(image, [2])], 2)[:, :, :33 + h_pad, :]
    padded = torch.cat([padded, torch.flip(padded, [3])], 3)[:, :, :, :41 + w_pad]
    with torch.no_grad():
        expected = net(padded)[..., :33, :41].clamp(0, 1)
    torch.testing.assert_close(method(coeffs, image), expected, atol=1e-5, rtol=0)


def test_large_images_are_tiled_like_the_untiled_result(tmp_path):
    from jpegrestore.evaluation.baselines import SpandrelMethod

    path, _ = write_dncnn3(tmp_path / "dncnn3.pth")
    coeffs, image = _jpeg(96, 112)
    whole = SpandrelMethod(weights=path, device="cpu", tile=0)
    tiled = SpandrelMethod(weights=path, device="cpu", tile=48, tile_overlap=16)
    a, b = whole(coeffs, image), tiled(coeffs, image)
    assert whole.extras["nfe"].tolist() == [1.0] and tiled.extras["nfe"].tolist() == [9.0]  # 3 x 3 tiles
    mse = torch.mean((a - b) ** 2)
    assert 10 * torch.log10(1 / mse) > 45  # differences only where tile decodes differ (chroma at tile edges)


def test_weight_lookup_and_errors(tmp_path, monkeypatch):
    from jpegrestore.evaluation.baselines import SpandrelMethod
    from jpegrestore.weights import MissingWeightsError

    write_dncnn3(tmp_path / "dncnn3.pth")
    monkeypatch.setenv("JPEGRESTORE_WEIGHTS", str(tmp_path))
    assert SpandrelMethod(weights="dncnn3", device="cpu").weights == str(tmp_path / "dncnn3.pth")  # registry name
    assert SpandrelMethod(weights="dncnn3.pth", device="cpu").weights == str(tmp_path / "dncnn3.pth")  # bare name
    with pytest.raises(MissingWeightsError, match="fbcnn_color.pth"):
        SpandrelMethod(weights="fbcnn_color")
    with pytest.raises(MissingWeightsError, match="nothing.pth"):
        SpandrelMethod(weights=tmp_path / "nothing.pth")
    with pytest.raises(ValueError, match="FBCNN's quality input"):
        SpandrelMethod(weights="dncnn3", quality=10)
    with pytest.raises(ValueError, match="needs a weight file"):
        SpandrelMethod()
    from spandrel.architectures.DRUNet import DRUNet  # noqa: F401 - a real architecture of another purpose

    from spandrel.architectures.SwinIR import SwinIR

    torch.save({"params": SwinIR(upscale=2, in_chans=3, img_size=8, window_size=4, depths=[1], embed_dim=6,
                                 num_heads=[1], mlp_ratio=1, upsampler="pixelshuffledirect").state_dict()},
               tmp_path / "sr.pth")
    with pytest.raises(ValueError, match="not a 1x image restorer"):
        SpandrelMethod(weights=tmp_path / "sr.pth")


@pytest.mark.parametrize("arch", ["DRUNet", "SCUNet"])
def test_drunet_and_scunet_run_padded_to_their_requirements(tmp_path, arch):
    """DRUNet (stride multiple 8, KAIR's noise map of 15/255 as spandrel supplies it) and SCUNet (at least 40 px):
    the method equals the network run on the mirrored input, cropped back."""
    from jpegrestore.evaluation.baselines import SpandrelMethod, pad_symmetric
    from spandrel_helpers import write_drunet, write_scunet

    path, net = (write_drunet if arch == "DRUNet" else write_scunet)(tmp_path / f"{arch}.pth")
    coeffs, image = _jpeg(37, 45)
    method = SpandrelMethod(weights=path, device="cpu", tile=0)
    assert method.name == arch
    padded = pad_symmetric(image, 8 if arch == "DRUNet" else 1, 0 if arch == "DRUNet" else 40)
    assert padded.shape[-2:] == ((40, 48) if arch == "DRUNet" else (40, 45))
    with torch.no_grad():
        if arch == "DRUNet":
            padded = torch.cat([padded, torch.full_like(padded[:, :1], 15 / 255)], 1)
        expected = net(padded)[..., :37, :45].clamp(0, 1)
    torch.testing.assert_close(method(coeffs, image), expected, atol=1e-5, rtol=0)


def test_networks_published_per_quality_restore_the_jpegs_nearest_to_them(tmp_path):
    """weights={QF: file}: each JPEG goes to the network of the nearest QF (the lower one on a tie)."""
    from jpegrestore.evaluation.baselines import SpandrelMethod

    low, net_low = write_dncnn3(tmp_path / "q10.pth", seed=1)
    high, net_high = write_dncnn3(tmp_path / "q30.pth", seed=2)
    method = SpandrelMethod(weights={10: str(low), 30: str(high)}, device="cpu", tile=0)
    for quality, net in ((5, net_low), (20, net_low), (25, net_high), (90, net_high)):
        coeffs, image = _jpeg(24, 32, quality=quality, channels=1)
        with torch.no_grad():
            expected = net(image).clamp(0, 1)
        torch.testing.assert_close(method(coeffs, image), expected, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="qualities 1..100 as keys"):
        SpandrelMethod(weights={"q10": str(low)})
