"""Offline loading of the Stable Diffusion base (local folder, local HF cache) and the tiny stand-in."""

from __future__ import annotations

import shutil

import pytest
import torch

from jpegrestore.nn.codiff.pretrained import (
    MissingBaseModelError,
    load_stable_diffusion,
    resolve_pretrained,
    write_tiny_stable_diffusion,
)


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return write_tiny_stable_diffusion(tmp_path_factory.mktemp("sd") / "tiny", seed=0, cross_attention_dim=24)


def test_tiny_model_loads_through_the_real_loader(tiny_sd):
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    vae, unet, scheduler = load_stable_diffusion(tiny_sd)
    assert isinstance(vae, AutoencoderKL) and isinstance(unet, UNet2DConditionModel)
    assert isinstance(scheduler, DDPMScheduler)
    assert unet.config.cross_attention_dim == 24
    # SD's scaled-linear schedule: abar_499 of SD 2.1 base is 0.277669 (REFERENCE-NOTES)
    assert scheduler.alphas_cumprod[499].item() == pytest.approx(0.277669, abs=1e-5)
    latent = vae.encode(torch.zeros(1, 3, 32, 32)).latent_dist.mode()
    assert latent.shape == (1, 4, 4, 4)  # stride 8, 4 channels, as SD
    again, _, _ = load_stable_diffusion(tiny_sd)
    assert all(torch.equal(a, b) for a, b in zip(vae.state_dict().values(), again.state_dict().values()))


def test_seed_makes_the_tiny_model_reproducible(tmp_path, tiny_sd):
    other = write_tiny_stable_diffusion(tmp_path / "other", seed=1, cross_attention_dim=24)
    same = write_tiny_stable_diffusion(tmp_path / "same", seed=0, cross_attention_dim=24)
    for name in ("unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors"):
        assert (same / name).read_bytes() == (tiny_sd / name).read_bytes()
        assert (other / name).read_bytes() != (tiny_sd / name).read_bytes()


def test_missing_folder_names_layout_and_how_to_get_it(tmp_path):
    with pytest.raises(MissingBaseModelError) as error:
        load_stable_diffusion(tmp_path / "nowhere")
    message = str(error.value)
    assert str(tmp_path / "nowhere") in message
    assert "model_index.json" in message and "hf download stabilityai/stable-diffusion-2-1-base" in message


def test_folder_without_unet_names_the_missing_part(tmp_path, tiny_sd):
    broken = shutil.copytree(tiny_sd, tmp_path / "broken")
    shutil.rmtree(broken / "unet")
    with pytest.raises(MissingBaseModelError, match=r"missing unet/config\.json"):
        load_stable_diffusion(broken)
    (broken / "model_index.json").unlink()
    with pytest.raises(MissingBaseModelError, match=r"model_index\.json, unet/config\.json"):
        resolve_pretrained(broken)


def test_repo_id_resolves_from_local_hf_cache_only(tmp_path, tiny_sd, monkeypatch):
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("JPEGRESTORE_WEIGHTS", raising=False)
    with pytest.raises(MissingBaseModelError, match="not available locally.*hf download someone/sd"):
        resolve_pretrained("someone/sd")
    repo = cache / "models--someone--sd"
    shutil.copytree(tiny_sd, repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    assert resolve_pretrained("someone/sd") == repo / "snapshots" / "abc123"
    _, unet, _ = load_stable_diffusion("someone/sd")
    assert unet.config.cross_attention_dim == 24
