"""Offline weight resolution: search order, caches, error messages, registry file names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from jpegrestore import weights

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Empty $JPEGRESTORE_WEIGHTS and a fake HOME / TORCH_HOME / HF cache: nothing can be found."""
    env_dir = tmp_path / "weights"
    env_dir.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    for var in ("TORCH_HOME", "XDG_CACHE_HOME", "HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv(weights.ENV_VAR, str(env_dir))
    return {"env": env_dir, "home": home, "hub": tmp_path / "torch" / "hub" / "checkpoints", "tmp": tmp_path}


def _touch(path: Path, content: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_registry_has_required_entries():
    required = {"lpips_alex", "lpips_vgg", "dists", "fid", "vgg16", "vgg19", "stable_diffusion", "guided_diffusion"}
    assert required <= set(weights.REGISTRY)
    assert weights.REGISTRY["guided_diffusion"].files == ("256x256_diffusion_uncond.pt",)
    assert weights.REGISTRY["stable_diffusion"].hf_repo == "stabilityai/stable-diffusion-2-1-base"


def test_registry_file_names_match_what_the_libraries_download():
    """The names are the basenames of the URLs that torchvision / piq would download."""
    from piq.feature_extractors.fid_inception import FID_WEIGHTS_URL
    from piq.perceptual import DISTS
    from torchvision.models import AlexNet_Weights, VGG16_Weights, VGG19_Weights

    def basename(url: str) -> str:
        return url.rsplit("/", 1)[-1]

    assert weights.REGISTRY["lpips_alex"].files[0] == basename(AlexNet_Weights.IMAGENET1K_V1.url)
    assert weights.REGISTRY["lpips_vgg"].files[0] == basename(VGG16_Weights.IMAGENET1K_V1.url)
    assert weights.REGISTRY["vgg16"].files[0] == basename(VGG16_Weights.IMAGENET1K_V1.url)
    assert weights.REGISTRY["vgg19"].files[0] == basename(VGG19_Weights.IMAGENET1K_V1.url)
    assert weights.REGISTRY["dists"].files == (basename(DISTS._weights_url), basename(VGG16_Weights.IMAGENET1K_V1.url))
    assert weights.REGISTRY["fid"].files[0] == basename(FID_WEIGHTS_URL)


def test_missing_error_names_file_and_every_place(isolated):
    with pytest.raises(weights.MissingWeightsError) as info:
        weights.resolve("vgg19")
    error = info.value
    assert isinstance(error, FileNotFoundError)
    message = str(error)
    assert "vgg19-dcbb9e9d.pth" in message
    assert str(isolated["env"]) in message
    assert str(isolated["hub"]) in message
    assert "to fix" in message and "JPEGRESTORE_WEIGHTS" in message
    assert error.missing == ("vgg19-dcbb9e9d.pth",)


def test_unknown_name_is_value_error(isolated):
    with pytest.raises(ValueError, match="unknown weights name 'vgg42'"):
        weights.resolve("vgg42")


def test_explicit_path_that_does_not_exist(isolated):
    with pytest.raises(weights.MissingWeightsError, match="does not exist: .*nope.pth"):
        weights.resolve("vgg16", isolated["tmp"] / "nope.pth")


def test_search_order_explicit_then_env_then_hub(isolated):
    hub_file = _touch(isolated["hub"] / "vgg16-397923af.pth")
    assert weights.resolve("vgg16") == hub_file
    env_file = _touch(isolated["env"] / "vgg16-397923af.pth")
    assert weights.resolve("vgg16") == env_file
    explicit_file = _touch(isolated["tmp"] / "elsewhere" / "my_vgg.pth")
    assert weights.resolve("vgg16", explicit_file) == explicit_file
    explicit_dir_file = _touch(isolated["tmp"] / "dir" / "vgg16-397923af.pth")
    assert weights.resolve("vgg16", explicit_dir_file.parent) == explicit_dir_file


def test_env_var_may_list_several_directories(isolated, monkeypatch):
    second = isolated["tmp"] / "second"
    target = _touch(second / "256x256_diffusion_uncond.pt")
    monkeypatch.setenv(weights.ENV_VAR, f"{isolated['env']}{os.pathsep}{second}")
    assert weights.resolve("guided_diffusion") == target


def test_default_torch_hub_cache_follows_home(isolated, monkeypatch):
    monkeypatch.delenv("TORCH_HOME")
    target = _touch(isolated["home"] / ".cache" / "torch" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth")
    assert weights.torch_hub_checkpoints_dir() == target.parent
    assert weights.resolve("lpips_alex") == target


def test_multi_file_entry_reports_only_the_missing_file(isolated):
    _touch(isolated["env"] / "vgg16-397923af.pth")
    with pytest.raises(weights.MissingWeightsError) as info:
        weights.resolve_files("dists")
    assert info.value.missing == ("dists_weights.pt",)
    _touch(isolated["hub"] / "dists_weights.pt")
    files = weights.resolve_files("dists")
    assert files == {"dists_weights.pt": isolated["hub"] / "dists_weights.pt",
                     "vgg16-397923af.pth": isolated["env"] / "vgg16-397923af.pth"}


def test_lpips_linear_layers_come_from_the_installed_package(isolated):
    import lpips

    target = _touch(isolated["hub"] / "alexnet-owt-7be5be79.pth")
    files = weights.resolve_files("lpips_alex")
    assert files["alexnet-owt-7be5be79.pth"] == target
    package_dir = Path(lpips.__file__).parent
    assert files["alex.pth"] == package_dir / "weights" / "v0.1" / "alex.pth"
    with pytest.raises(weights.MissingWeightsError) as info:
        weights.resolve_files("lpips_vgg")
    assert info.value.missing == ("vgg16-397923af.pth",)


def test_hugging_face_cache_snapshot(isolated, monkeypatch):
    cache = isolated["tmp"] / "hf" / "hub"
    monkeypatch.setenv("HF_HOME", str(isolated["tmp"] / "hf"))
    repo = cache / "models--stabilityai--stable-diffusion-2-1-base"
    _touch(repo / "refs" / "main", b"abc123\n")
    _touch(repo / "snapshots" / "abc123" / "model_index.json", b"{}")
    assert weights.huggingface_hub_cache_dir() == cache
    assert weights.resolve("stable_diffusion") == repo / "snapshots" / "abc123"


def test_hugging_face_repo_from_env_dir_and_explicit_dir(isolated):
    local = _touch(isolated["env"] / "stable-diffusion-2-1-base" / "model_index.json", b"{}").parent
    assert weights.resolve("stable_diffusion") == local
    explicit = _touch(isolated["tmp"] / "sd" / "model_index.json", b"{}").parent
    assert weights.resolve("stable_diffusion", explicit) == explicit


def test_missing_hugging_face_repo_message(isolated):
    with pytest.raises(weights.MissingWeightsError) as info:
        weights.resolve("stable_diffusion")
    message = str(info.value)
    assert "stabilityai/stable-diffusion-2-1-base" in message
    assert str(isolated["home"] / ".cache" / "huggingface" / "hub") in message
    assert info.value.missing == ("stabilityai/stable-diffusion-2-1-base",)


def test_status_and_format_status(isolated):
    target = _touch(isolated["env"] / "256x256_diffusion_uncond.pt")
    rows = {row.name: row for row in weights.status()}
    assert set(rows) == set(weights.REGISTRY)
    assert rows["guided_diffusion"].found_path == target
    assert rows["vgg19"].found_path is None
    assert rows["vgg19"].files == ("vgg19-dcbb9e9d.pth",)
    text = weights.format_status()
    lines = text.splitlines()
    guided = next(line for line in lines if line.startswith("guided_diffusion"))
    assert guided.endswith(str(target))
    vgg19 = next(line for line in lines if line.startswith("vgg19"))
    assert vgg19.endswith("MISSING")
    assert str(isolated["env"]) in text


def _random_features_file(path: Path, arch: str) -> dict[str, torch.Tensor]:
    from torchvision import models

    torch.manual_seed(0)
    features = getattr(models, arch)(weights=None).features
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def test_torchvision_features_loads_the_resolved_file(isolated):
    state = _random_features_file(isolated["env"] / "alexnet-owt-7be5be79.pth", "alexnet")
    features = weights.torchvision_features("alexnet")
    assert torch.equal(features[0].weight, state["features.0.weight"])
    assert torch.equal(features[10].bias, state["features.10.bias"])
    assert not features.training
    assert not any(p.requires_grad for p in features.parameters())


def test_torchvision_features_rejects_bad_files(isolated):
    bad = _touch(isolated["env"] / "alexnet-owt-7be5be79.pth", b"not a checkpoint")
    with pytest.raises(ValueError, match="alexnet-owt-7be5be79.pth"):
        weights.torchvision_features("alexnet")
    torch.save({"features.0.weight": torch.zeros(3)}, bad)
    with pytest.raises(ValueError, match="does not match torchvision alexnet"):
        weights.torchvision_features("alexnet")
    with pytest.raises(ValueError, match="unknown torchvision backbone"):
        weights.torchvision_features("resnet50")
