"""CaVE: shapes at the paper's widths, padding to the stride, the QF head's range, the decoder, and conversion of
the authors' state-dict layout (checked against an independent functional forward of that layout)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from jpegrestore.nn.cave import CaVE, convert_authors_state_dict, quality_from_prediction, quality_target

TINY = dict(channels=(4, 8, 8, 16), blocks=1)


def _expected_parameter_count(c: tuple[int, int, int, int], nb: int) -> int:
    """Hand count of the paper-layout parameters (conv weights + biases, BN scale + shift, linear layers)."""

    def conv(cin: int, cout: int, k: int) -> int:
        return cin * cout * k * k + cout

    def block(ch: int) -> int:
        return 2 * conv(ch, ch, 3) + 2 * ch

    c0, c1, c2, c3 = c
    encoder = conv(3, c0, 3) + nb * (block(c0) + block(c1) + block(c2)) + conv(c0, c1, 2) + conv(c1, c2, 4)
    encoder += conv(c2, c3, 4) + nb * block(c3)
    qf_head = nb * block(c3) + (c3 * c3 + c3) * 2 + (c3 + 1)
    decoder = nb * block(c3) + conv(c3, c2, 4) + conv(c2, c1, 4) + conv(c1, c0, 2)
    decoder += nb * (block(c2) + block(c1) + block(c0)) + conv(c0, 3, 3)
    return encoder + qf_head + decoder


def test_full_width_shapes_on_meta_device() -> None:
    with torch.device("meta"):
        model = CaVE()
        tokens, quality = model(torch.empty(2, 3, 256, 256))
        restored = model.reconstruct(torch.empty(2, 3, 256, 256))
    assert model.token_dim == 512
    assert tokens.shape == (2, 64, 512)
    assert quality.shape == (2,)
    assert restored.shape == (2, 3, 256, 256)
    count = sum(p.numel() for p in model.parameters())
    assert count == _expected_parameter_count((64, 128, 256, 512), 4) == 74_887_428


def test_odd_sizes_are_padded_to_the_stride_and_borders_reach_the_tokens() -> None:
    torch.manual_seed(0)
    model = CaVE(**TINY).eval()
    x = torch.rand(2, 3, 70, 45)
    tokens, quality = model(x)
    assert tokens.shape == (2, 3 * 2, 16)  # ceil(70/32) x ceil(45/32)
    assert quality.shape == (2,)
    # The last row and column (beyond the authors' multiple-of-8 padding, 72x48, stride 32) still change tokens.
    y = x.clone()
    y[:, :, -1, -1] = 1.0 - y[:, :, -1, -1]
    assert not torch.allclose(model.embed(y), model.embed(x))
    assert torch.equal(model.embed(x), tokens)


def test_padding_modes_extend_the_border() -> None:
    x = torch.arange(2 * 3 * 40 * 33, dtype=torch.float32).reshape(2, 3, 40, 33)
    padded = CaVE(**TINY, pad_mode="replicate").pad(x)
    assert padded.shape == (2, 3, 64, 64)
    assert torch.equal(padded[..., :40, :33], x)
    assert torch.equal(padded[..., 50, 60], x[..., 39, 32])
    reflected = CaVE(**TINY, pad_mode="reflect").pad(x)
    assert torch.equal(reflected[..., 41, :33], x[..., 37, :])  # mirrored about the last row, 39
    already = torch.rand(1, 3, 64, 32)
    assert CaVE(**TINY).pad(already) is already
    with pytest.raises(ValueError, match="pad_mode"):
        CaVE(**TINY, pad_mode="zeros")


def test_quality_lies_in_the_open_unit_interval_and_maps_to_qf() -> None:
    torch.manual_seed(1)
    model = CaVE(**TINY, init_gain=1.0)
    with torch.no_grad():
        model.qf_pred[-2].bias.fill_(3.0)  # push the logits far from 0
        _, quality = model(torch.rand(3, 3, 64, 64) * 50)
    assert torch.all((quality > 0) & (quality < 1))
    assert torch.allclose(quality_target(torch.tensor([10, 95, 100])), torch.tensor([0.90, 0.05, 0.0]))
    assert torch.allclose(quality_from_prediction(torch.tensor([0.90, 0.05])), torch.tensor([10.0, 95.0]))


def test_decoder_output_and_one_pass_training_outputs() -> None:
    torch.manual_seed(2)
    model = CaVE(**TINY).eval()
    x = torch.rand(2, 3, 48, 80)
    restored = model.reconstruct(x)
    assert restored.shape == x.shape
    tokens, quality, restored_again = model.forward_all(x)
    assert torch.allclose(restored_again, restored)
    assert torch.allclose(tokens, model.embed(x)) and torch.allclose(quality, model(x)[1])


def test_bad_inputs_are_rejected() -> None:
    model = CaVE(**TINY)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        model(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="four positive channel widths"):
        CaVE(channels=(8, 8, 8))


# ---------------------------------------------------------------------------------------------- authors' layout


def _authors_layout(nc: tuple[int, int, int, int] = (64, 128, 256, 512), nb: int = 4) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the authors' CaVE(in_nc=3, out_nc=3, nc, nb, act_mode='BR') state dict.

    Their ResBlock/QFAttention hold ``res`` = Sequential(conv, BN, ReLU, conv); strided convs follow the blocks
    inside m_down*, transposed convs precede them inside m_up* (ModuleLists); the QF predictor is one
    Sequential of nb blocks, pool, flatten, Linear, ReLU, Linear, ReLU, Linear, Sigmoid.
    """
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name: str, cin: int, cout: int, k: int, transposed: bool = False) -> None:
        shapes[f"{name}.weight"] = (cin, cout, k, k) if transposed else (cout, cin, k, k)
        shapes[f"{name}.bias"] = (cout,)

    def block(name: str, c: int) -> None:
        conv(f"{name}.res.0", c, c, 3)
        for part in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.res.1.{part}"] = (c,)
        shapes[f"{name}.res.1.num_batches_tracked"] = ()
        conv(f"{name}.res.3", c, c, 3)

    c0, c1, c2, c3 = nc
    conv("m_head", 3, c0, 3)
    for name, c, cout, k in (("m_down1", c0, c1, 2), ("m_down2", c1, c2, 4), ("m_down3", c2, c3, 4)):
        for i in range(nb):
            block(f"{name}.{i}", c)
        conv(f"{name}.{nb}", c, cout, k)
    for i in range(nb):
        block(f"m_body_encoder.{i}", c3)
        block(f"m_body_decoder.{i}", c3)
        block(f"qf_pred.{i}", c3)
    shapes[f"qf_pred.{nb + 2}.weight"], shapes[f"qf_pred.{nb + 2}.bias"] = (c3, c3), (c3,)
    shapes[f"qf_pred.{nb + 4}.weight"], shapes[f"qf_pred.{nb + 4}.bias"] = (c3, c3), (c3,)
    shapes[f"qf_pred.{nb + 6}.weight"], shapes[f"qf_pred.{nb + 6}.bias"] = (1, c3), (1,)
    for name, cin, c, k in (("m_up3", c3, c2, 4), ("m_up2", c2, c1, 4), ("m_up1", c1, c0, 2)):
        conv(f"{name}.0", cin, c, k, transposed=True)
        for i in range(1, nb + 1):
            block(f"{name}.{i}", c)
    conv("m_tail", c0, 3, 3)
    return shapes


def _random_authors_state(nc: tuple[int, int, int, int] = (64, 128, 256, 512)) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    state = {}
    for key, shape in _authors_layout(nc).items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        else:
            fan_in = max(1, int(torch.tensor(shape[1:]).prod())) if len(shape) > 1 else 1
            state[key] = torch.randn(shape, generator=generator) / fan_in**0.5
    return state


def _authors_forward(state: dict[str, torch.Tensor], x: torch.Tensor, nb: int = 4):
    """The authors' CaVE forward written functionally from their definition: eval-mode BN (eps 1e-4), decoder
    blocks x + (1 * res(x) + 1), input padded to a multiple of 8. -> (tokens, qf [B], reconstruction)."""

    def conv(name: str, t: torch.Tensor, stride: int = 1, padding: int = 1) -> torch.Tensor:
        return F.conv2d(t, state[f"{name}.weight"], state[f"{name}.bias"], stride=stride, padding=padding)

    def res(name: str, t: torch.Tensor) -> torch.Tensor:
        r = conv(f"{name}.res.0", t)
        bn = f"{name}.res.1"
        r = F.batch_norm(r, state[f"{bn}.running_mean"], state[f"{bn}.running_var"], state[f"{bn}.weight"],
                         state[f"{bn}.bias"], training=False, eps=1e-4)
        return conv(f"{name}.res.3", F.relu(r))

    h, w = x.shape[-2:]
    x = F.pad(x, (0, -w % 8, 0, -h % 8), mode="replicate")
    x1 = conv("m_head", x)
    skips = [x1]
    t = x1
    for name, k in (("m_down1", 2), ("m_down2", 4), ("m_down3", 4)):
        for i in range(nb):
            t = t + res(f"{name}.{i}", t)
        t = conv(f"{name}.{nb}", t, stride=k, padding=0)
        skips.append(t)
    for i in range(nb):
        t = t + res(f"m_body_encoder.{i}", t)
    tokens = t.flatten(2).transpose(1, 2)
    q = t
    for i in range(nb):
        q = q + res(f"qf_pred.{i}", q)
    q = q.mean((2, 3))
    q = F.relu(F.linear(q, state[f"qf_pred.{nb + 2}.weight"], state[f"qf_pred.{nb + 2}.bias"]))
    q = F.relu(F.linear(q, state[f"qf_pred.{nb + 4}.weight"], state[f"qf_pred.{nb + 4}.bias"]))
    q = torch.sigmoid(F.linear(q, state[f"qf_pred.{nb + 6}.weight"], state[f"qf_pred.{nb + 6}.bias"]))
    for i in range(nb):
        t = t + res(f"m_body_decoder.{i}", t)
    t = t + skips[3]
    for name, k, skip in (("m_up3", 4, skips[2]), ("m_up2", 4, skips[1]), ("m_up1", 2, skips[0])):
        t = F.conv_transpose2d(t, state[f"{name}.0.weight"], state[f"{name}.0.bias"], stride=k)
        for i in range(1, nb + 1):
            t = t + (1.0 * res(f"{name}.{i}", t) + 1.0)
        t = t + skip
    out = conv("m_tail", t)[..., :h, :w]
    return tokens, q.squeeze(1), out


@pytest.fixture(scope="module")
def authors() -> dict[str, torch.Tensor]:
    return _random_authors_state()


def test_conversion_reproduces_the_authors_forward(authors: dict[str, torch.Tensor]) -> None:
    model = CaVE(init_gain=None)
    model.load_state_dict(convert_authors_state_dict(authors), strict=True)
    model.eval()
    x = torch.rand(1, 3, 32, 64, generator=torch.Generator().manual_seed(4))  # multiples of 32: same padding
    with torch.no_grad():
        tokens, quality, restored = model.forward_all(x)
        ref_tokens, ref_quality, ref_restored = _authors_forward(authors, x)
    assert tokens.shape == ref_tokens.shape == (1, 2, 512)
    torch.testing.assert_close(tokens, ref_tokens, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(quality, ref_quality, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(restored, ref_restored, rtol=1e-4, atol=1e-3)
    # Without the folded beta the decoder would differ: the +1 is real.
    plain = CaVE(init_gain=None)
    plain.load_state_dict(authors, strict=True)
    with torch.no_grad():
        assert not torch.allclose(plain.eval().reconstruct(x), ref_restored, atol=1e-2)


def test_conversion_accepts_dataparallel_prefix_and_rejects_other_layouts(
    authors: dict[str, torch.Tensor],
) -> None:
    converted = convert_authors_state_dict({f"module.{k}": v for k, v in authors.items()})
    assert set(converted) == set(CaVE(init_gain=None).state_dict())
    with pytest.raises(ValueError, match=r"1 missing \(e\.g\. m_tail\.bias\)"):
        convert_authors_state_dict({k: v for k, v in authors.items() if k != "m_tail.bias"})
    with pytest.raises(ValueError, match="unexpected"):
        convert_authors_state_dict({**authors, "extra.weight": torch.zeros(1)})
    wide = {k: torch.empty(s, device="meta") for k, s in _authors_layout((128, 256, 512, 1024)).items()}  # their class default
    with pytest.raises(ValueError, match="mis-shaped"):
        convert_authors_state_dict(wide)
