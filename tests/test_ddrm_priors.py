"""Priors for DDRM-JPEG: diffusers folders, the local Hugging Face cache, guided-diffusion checkpoints, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from jpegrestore import jpeg

from jpegrestore.sampling.priors import (
    LINEAR_SCHEDULE,
    TINY_UNET_CONFIG,
    DiffusionPrior,
    load_prior,
    write_tiny_ddpm,
)


@pytest.fixture(scope="module")
def tiny_ddpm(tmp_path_factory) -> Path:
    return write_tiny_ddpm(tmp_path_factory.mktemp("prior") / "tiny-ddpm")


def _hand_alphas_cumprod() -> torch.Tensor:
    """abar_t of the DDPM linear schedule written out: betas 1e-4 + (0.02 - 1e-4) t / 999, t = 0..999."""
    t = torch.arange(1000, dtype=torch.float64)
    betas = 1e-4 + (0.02 - 1e-4) * t / 999
    return torch.cumprod(1 - betas, 0)


def _reference_unet(folder: Path):
    from diffusers import UNet2DModel

    return UNet2DModel.from_pretrained(folder / "unet").eval()


def test_pipeline_folder_loads_with_its_schedule(tiny_ddpm: Path) -> None:
    prior = load_prior(tiny_ddpm)
    assert isinstance(prior, DiffusionPrior)
    assert (prior.channels, prior.size_multiple, prior.image_size) == (3, 2, None)
    assert prior.alphas_cumprod.dtype == torch.float64 and prior.alphas_cumprod.shape == (1000,)
    # the scheduler keeps float32 betas: abar agrees with the float64 hand computation to float32 precision
    torch.testing.assert_close(prior.alphas_cumprod, _hand_alphas_cumprod(), rtol=1e-6, atol=1e-7)
    assert prior.source == str(tiny_ddpm)
    assert not any(p.requires_grad for p in prior.eps_model.parameters())
    x, t = torch.randn(2, 3, 20, 12, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 999])
    with torch.no_grad():
        expected = _reference_unet(tiny_ddpm)(x, t).sample
        got = prior.eps_model(x, t)
    assert got.shape == (2, 3, 20, 12)
    torch.testing.assert_close(got, expected)


def test_bare_unet_folder_with_scheduler_config(tiny_ddpm: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(tiny_ddpm / "unet", bare)
    shutil.copy(tiny_ddpm / "scheduler" / "scheduler_config.json", bare / "scheduler_config.json")
    prior = load_prior(str(bare), dtype=torch.float64)
    assert next(prior.eps_model.parameters()).dtype == torch.float64
    x = torch.randn(1, 3, 8, 8)
    assert prior.eps_model(x, torch.tensor([5])).dtype == torch.float32  # back in the caller's dtype
    torch.testing.assert_close(prior.alphas_cumprod, load_prior(tiny_ddpm).alphas_cumprod)


def test_hugging_face_cache_id(tiny_ddpm: Path, tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "hub"
    repo = cache / "models--google--ddpm-tiny-test"
    revision = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(tiny_ddpm, repo / "snapshots" / revision)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("JPEGRESTORE_WEIGHTS", raising=False)
    prior = load_prior("google/ddpm-tiny-test")
    assert prior.source.startswith("google/ddpm-tiny-test")
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(prior.eps_model(x, torch.tensor([7])), _reference_unet(tiny_ddpm)(x, 7).sample)
    with pytest.raises(FileNotFoundError, match="google/ddpm-not-cached.*Hugging Face cache"):
        load_prior("google/ddpm-not-cached")


def test_missing_path_names_it_and_what_was_expected(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "prior.pt"
    with pytest.raises(FileNotFoundError, match=r"prior not found: .*nowhere.*diffusers UNet2DModel folder"):
        load_prior(missing)
    with pytest.raises(FileNotFoundError, match="not a diffusers UNet2DModel folder"):
        load_prior(tmp_path)  # an empty directory


def test_scheduler_without_betas_or_config(tiny_ddpm: Path, tmp_path: Path) -> None:
    folder = tmp_path / "ve"
    shutil.copytree(tiny_ddpm, folder)
    config_path = folder / "scheduler" / "scheduler_config.json"
    config_path.write_text(json.dumps({"_class_name": "ScoreSdeVeScheduler", "num_train_timesteps": 2000}))
    with pytest.raises(ValueError, match="scheduler_config.json: scheduler ScoreSdeVeScheduler has no betas"):
        load_prior(folder)
    config_path.write_text(json.dumps({**LINEAR_SCHEDULE, "_class_name": "DDPMScheduler",
                                       "prediction_type": "v_prediction"}))
    with pytest.raises(ValueError, match="v_prediction"):
        load_prior(folder)
    shutil.rmtree(folder / "scheduler")
    with pytest.raises(FileNotFoundError, match="no scheduler config"):
        load_prior(folder)


def test_conditional_unet_is_refused(tiny_ddpm: Path, tmp_path: Path) -> None:
    folder = tmp_path / "sd_like"
    shutil.copytree(tiny_ddpm, folder)
    config = json.loads((folder / "unet" / "config.json").read_text())
    (folder / "unet" / "config.json").write_text(json.dumps({**config, "_class_name": "UNet2DConditionModel"}))
    with pytest.raises(ValueError, match="UNet2DConditionModel, not an unconditional UNet2DModel"):
        load_prior(folder)


def test_unknown_file_format(tmp_path: Path) -> None:
    weird = tmp_path / "weird.pt"
    torch.save({"encoder.weight": torch.zeros(2)}, weird)
    with pytest.raises(ValueError, match="unknown prior format"):
        load_prior(weird)
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="cannot read .*notes.pt"):
        load_prior(text)


def test_tiny_config_is_small() -> None:
    from diffusers import UNet2DModel

    with torch.device("meta"):
        unet = UNet2DModel(**TINY_UNET_CONFIG)
    assert sum(p.numel() for p in unet.parameters()) < 300_000


# ---------------------------------------------------------------------------------------------------- guided-diffusion

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _our_config(flags: dict) -> dict:
    """Our constructor arguments for guided-diffusion's create_model flags."""
    return {
        "image_size": flags["image_size"], "in_channels": 3, "model_channels": flags["num_channels"],
        "out_channels": 6 if flags.get("learn_sigma") else 3, "num_res_blocks": flags["num_res_blocks"],
        "attention_resolutions": tuple(int(r) for r in flags["attention_resolutions"].split(",")),
        "channel_mult": tuple(int(m) for m in flags["channel_mult"].split(",")) if flags.get("channel_mult")
        else (1, 1, 2, 2, 4, 4),
        "num_heads": flags.get("num_heads", 1), "num_head_channels": flags.get("num_head_channels", -1),
        "use_scale_shift_norm": flags["use_scale_shift_norm"], "resblock_updown": flags["resblock_updown"],
        "use_new_attention_order": flags["use_new_attention_order"],
    }


def test_paper_config_matches_the_reference_keys_shapes_and_count() -> None:
    from jpegrestore.nn.guided_diffusion import (
        GUIDED_DIFFUSION_256_UNCOND,
        GUIDED_DIFFUSION_256_UNCOND_PARAMETERS,
        GUIDED_DIFFUSION_256_UNCOND_TENSORS,
        GuidedDiffusionUNet,
    )

    reference = json.loads((FIXTURES / "guided_diffusion_256_uncond_keys.json").read_text())
    unused = ("dropout", "num_heads")  # dropout 0 by default; num_heads is overridden by num_head_channels
    ours_flags = {k: v for k, v in GUIDED_DIFFUSION_256_UNCOND.items() if k not in unused}
    assert {k: v for k, v in _our_config(reference["flags"]).items() if k not in unused} == ours_flags
    with torch.device("meta"):
        model = GuidedDiffusionUNet(**GUIDED_DIFFUSION_256_UNCOND)
    ours = [[name, list(tensor.shape)] for name, tensor in model.state_dict().items()]
    assert ours == reference["keys"]  # same names, shapes and order
    assert len(ours) == GUIDED_DIFFUSION_256_UNCOND_TENSORS == 566
    assert sum(p.numel() for p in model.parameters()) == GUIDED_DIFFUSION_256_UNCOND_PARAMETERS == 552_814_086
    assert reference["parameters"] == 552_814_086
    assert model.size_multiple == 32


@pytest.mark.parametrize("case", ["updown_scale_shift_legacy", "conv_resample_new_order"])
def test_tiny_configs_match_the_reference_forward(case: str) -> None:
    """Same weights (filled by a rule independent of either init) -> same output as the reference code."""
    from fixtures.make_guided_diffusion_reference import fill_weights

    from jpegrestore.nn.guided_diffusion import GuidedDiffusionUNet

    reference = torch.load(FIXTURES / "guided_diffusion_tiny_reference.pt", weights_only=True)
    expected = reference["cases"][case]
    model = GuidedDiffusionUNet(**_our_config(expected["flags"])).eval()
    assert list(model.state_dict()) == expected["keys"]
    model.load_state_dict(fill_weights(model.state_dict()), strict=True)
    with torch.no_grad():
        out = model(reference["x"], reference["t"])
    assert out.abs().mean() > 0.1  # not a degenerate all-zero comparison
    torch.testing.assert_close(out, expected["output"], rtol=1e-4, atol=1e-4)


def _tiny_guided(seed: int = 0):
    from jpegrestore.nn.guided_diffusion import GuidedDiffusionUNet

    torch.manual_seed(seed)
    model = GuidedDiffusionUNet(image_size=32, in_channels=3, model_channels=32, out_channels=6, num_res_blocks=1,
                                attention_resolutions=(16,), channel_mult=(1, 2), num_head_channels=16,
                                use_scale_shift_norm=True, resblock_updown=True)
    for p in model.parameters():  # the zero-initialised output convs would make every forward trivial
        torch.nn.init.normal_(p, std=0.05)
    return model.eval()


def test_tiny_guided_diffusion_round_trip_through_load_prior(tmp_path: Path) -> None:
    from jpegrestore.nn.guided_diffusion import load_guided_diffusion, save_guided_diffusion

    model = _tiny_guided()
    path = save_guided_diffusion(model, tmp_path / "tiny_gd.pt")
    loaded = load_guided_diffusion(path)
    x, t = torch.randn(2, 3, 24, 40), torch.tensor([10, 600])
    with torch.no_grad():
        expected = model(x, t)
        torch.testing.assert_close(loaded(x, t), expected)
        prior = load_prior(path)
        torch.testing.assert_close(prior.eps_model(x, t), expected)
    assert expected.shape == (2, 6, 24, 40)


def test_the_papers_prior_is_looked_up_by_name_like_every_weight_file(tmp_path: Path, monkeypatch) -> None:
    """``load_prior("guided_diffusion")`` finds 256x256_diffusion_uncond.pt in $JPEGRESTORE_WEIGHTS (as listed by
    ``jpegrestore weights``); without it the error names the file."""
    from jpegrestore.nn.guided_diffusion import save_guided_diffusion
    from jpegrestore.weights import MissingWeightsError

    monkeypatch.setenv("JPEGRESTORE_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(MissingWeightsError, match="256x256_diffusion_uncond.pt"):
        load_prior("guided_diffusion")
    model = _tiny_guided()
    save_guided_diffusion(model, tmp_path / "256x256_diffusion_uncond.pt")
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([10])
    for name in ("guided_diffusion", "256x256_diffusion_uncond.pt"):
        prior = load_prior(name)
        with torch.no_grad():
            torch.testing.assert_close(prior.eps_model(x, t), model(x, t))
    assert (prior.channels, prior.size_multiple, prior.image_size) == (3, 2, 32)  # its training size
    torch.testing.assert_close(prior.alphas_cumprod, _hand_alphas_cumprod(), rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="divisible by 2"):
        model(torch.randn(1, 3, 5, 8), torch.tensor([1]))


def test_guided_diffusion_prior_tiles_a_larger_photo_at_its_training_size(tmp_path: Path) -> None:
    """A 256x256 guided-diffusion model (tiny widths): a 300x300 JPEG is restored in 2 x 2 tiles, each run by the
    network at 256x256, under the evaluation's default tile (512), not whole at 304x304."""
    from jpegrestore.evaluation.ddrm import DDRMJPEGMethod
    from jpegrestore.nn.guided_diffusion import GuidedDiffusionUNet, save_guided_diffusion

    from jpeg_helpers import photo, to_tensor

    torch.manual_seed(0)
    model = GuidedDiffusionUNet(image_size=256, in_channels=3, model_channels=8, out_channels=6, num_res_blocks=1,
                                attention_resolutions=(8,), channel_mult=(1, 1, 1, 1, 1, 1), num_head_channels=8,
                                use_scale_shift_norm=True, resblock_updown=True, norm_groups=4)
    path = save_guided_diffusion(model, tmp_path / "tiny_256.pt")
    method = DDRMJPEGMethod(prior=str(path), steps=1, device="cpu", tile=512, tile_overlap=32)
    assert method.prior.image_size == 256 and method.sampler.tile == 240
    sizes = []
    method.prior.eps_model.net.register_forward_pre_hook(lambda _, args: sizes.append(tuple(args[0].shape[-2:])))
    target = to_tensor(photo("astronaut", 300, 300, 100, 100))
    coeffs = jpeg.encode(target, 10, rounding="exact")
    out = method(coeffs, jpeg.decode(coeffs, rounding="exact"))
    assert out.shape == target.shape
    assert sizes == [(256, 256)] * 4
    assert float(method.extras["nfe"][0]) == 4.0


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
# Relative L2 error of the half model's output against float32 on the tiny model: measured 3.4e-4 (float16) and
# 2.8e-3 (bfloat16) on CPU, about 0.7x each format's unit roundoff; the bounds leave a factor of 5-6.
HALF_TOLERANCE = {torch.float16: 2e-3, torch.bfloat16: 1.5e-2}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_guided_diffusion_half_as_the_authors_run_it(tmp_path: Path, device: str, dtype: torch.dtype) -> None:
    """load_prior(dtype=half): only the torso's convolutions are half; norms, linears and the head stay float32;
    a float32 input gives a float32 output close to the float32 model's."""
    from jpegrestore.nn.guided_diffusion import GroupNorm32, save_guided_diffusion

    model = _tiny_guided().to(device)
    path = save_guided_diffusion(model, tmp_path / "tiny_gd.pt")
    prior = load_prior(path, device=device, dtype=dtype)
    net = prior.eps_model.net
    assert net.torso_dtype == dtype
    torso = {id(m) for part in (net.input_blocks, net.middle_block, net.output_blocks) for m in part.modules()}
    for name, module in net.named_modules():
        if isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d)):
            want = dtype if id(module) in torso else torch.float32
            assert module.weight.dtype == module.bias.dtype == want, name
        elif isinstance(module, (GroupNorm32, torch.nn.Linear)):
            assert all(p.dtype == torch.float32 for p in module.parameters(recurse=False)), name
    generator = torch.Generator().manual_seed(1)
    x, t = torch.randn(2, 3, 24, 40, generator=generator).to(device), torch.tensor([10, 600], device=device)
    with torch.no_grad():
        expected = model(x, t)
        out = prior.eps_model(x, t)
        direct = net(x, t)
    assert out.dtype == direct.dtype == torch.float32
    error = ((out - expected).norm() / expected.norm()).item()
    assert 0 < error < HALF_TOLERANCE[dtype], error
    # The whole model cast to half (norms included) also runs: GroupNorm32 normalises in float32.
    with torch.no_grad():
        whole = model.to(dtype)(x.to(dtype), t)
    assert whole.dtype == dtype and ((whole.float() - expected).norm() / expected.norm()).item() < 2 * HALF_TOLERANCE[dtype]


def test_guided_diffusion_wrong_files(tmp_path: Path) -> None:
    from jpegrestore.nn.guided_diffusion import CHECKPOINT_NAME, load_guided_diffusion

    with pytest.raises(FileNotFoundError, match=f"nowhere.pt.*{CHECKPOINT_NAME}"):
        load_guided_diffusion(tmp_path / "nowhere.pt")
    other = tmp_path / "other.pt"
    torch.save({"conv.weight": torch.zeros(1)}, other)
    with pytest.raises(ValueError, match="other.pt is not a guided-diffusion UNet state dict"):
        load_guided_diffusion(other)
    # a guided-diffusion file of another config without its side file: the default config does not fit
    tiny = tmp_path / "tiny.pt"
    torch.save(_tiny_guided().state_dict(), tiny)
    with pytest.raises(ValueError, match=r"tiny.pt does not fit .*tiny.pt.json"):
        load_guided_diffusion(tiny)


def test_cli_tiny_model_ddpm_writes_a_loadable_prior(tmp_path: Path, capsys) -> None:
    from jpegrestore.cli import main

    out = tmp_path / "tiny"
    assert main(["tiny-model", "ddpm", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    assert json.loads((out / "model_index.json").read_text())["_class_name"] == "DDPMPipeline"
    prior = load_prior(out)
    reference = write_tiny_ddpm(tmp_path / "again")  # the same seed gives the same weights
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(prior.eps_model(x, torch.tensor([1])),
                                   load_prior(reference).eps_model(x, torch.tensor([1])))
    with pytest.raises(SystemExit):
        main(["tiny-model", "nonsense", str(out)])
