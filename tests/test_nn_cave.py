"""CaVE: shapes at the paper's widths, padding to the stride or to 8 as the authors, the QF head's range, the decoder,
and conversion of the authors' state-dict layout (checked against an independent functional forward of that layout,
tests/codiff_authors_forward.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from codiff_authors_forward import authors_cave_forward, authors_visual_embedding
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
        ref_tokens, ref_quality, ref_restored = authors_cave_forward(authors, x)
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


@pytest.mark.parametrize(("height", "width", "grid"), [(88, 120, (2, 3)), (96, 128, (3, 4)), (70, 45, (2, 1))])
def test_authors_padding_gives_their_token_grid_and_tokens(height, width, grid) -> None:
    """pad_multiple=8: floor(H8/32) x floor(W8/32) tokens, equal to their get_visual_embedding (88x120: 6 tokens
    where padding to 32 gives 12; 70x45 -> 72x48: 2x1). Narrow widths; their encoder keys are ours."""
    narrow = (8, 8, 16, 16)
    state = _random_authors_state(narrow)
    model = CaVE(channels=narrow, blocks=4, init_gain=None, pad_multiple=8).eval()
    model.load_state_dict(state, strict=True)
    x = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        tokens = model.embed(x)
        reference = authors_visual_embedding(state, x)
    assert model.token_grid(height, width) == grid
    assert tokens.shape == reference.shape == (1, grid[0] * grid[1], 16)
    torch.testing.assert_close(tokens, reference, rtol=1e-4, atol=1e-4)


def test_pad_multiple_changes_tokens_only_off_the_stride() -> None:
    torch.manual_seed(6)
    ours, theirs = CaVE(**TINY).eval(), CaVE(**TINY, pad_multiple=8).eval()
    theirs.load_state_dict(ours.state_dict())
    x = torch.rand(1, 3, 88, 120)
    assert ours.embed(x).shape[1] == 12 and theirs.embed(x).shape[1] == 6
    same = torch.rand(1, 3, 64, 96)
    assert torch.equal(ours.embed(same), theirs.embed(same))
    tiny = torch.rand(1, 3, 20, 100)  # 24 rows after padding to 8: padded to 32, one row of tokens
    assert theirs.token_grid(20, 100) == (1, 3) and theirs.embed(tiny).shape[1] == 3
    assert torch.equal(theirs.pad(tiny)[..., 31, :100], tiny[..., 19, :])
    with pytest.raises(ValueError, match=r"pad_multiple=8\) dropped .* use pad_multiple=32"):
        theirs.reconstruct(x)
    assert theirs.reconstruct(same).shape == same.shape
    with pytest.raises(ValueError, match="pad_multiple must be 32"):
        CaVE(**TINY, pad_multiple=16)
