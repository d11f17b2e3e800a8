"""Stable Diffusion base model of CODiff: offline loading, and a tiny random stand-in for tests.

CODiff needs three parts of Stable Diffusion 2.1 base in the diffusers layout::

    <folder>/model_index.json
    <folder>/vae/config.json        + weights   (AutoencoderKL)
    <folder>/unet/config.json       + weights   (UNet2DConditionModel)
    <folder>/scheduler/scheduler_config.json    (DDPMScheduler; SD 2.1 base ships a PNDM config, same betas)

No text encoder is loaded: CODiff conditions the UNet on CaVE tokens. Nothing is ever downloaded;
``pretrained`` is either a local folder or a Hugging Face repository id that is already in the local cache
(or under ``$JPEGRESTORE_WEIGHTS``), see :mod:`jpegrestore.weights`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from jpegrestore import weights

#: the base model the paper and the authors' code use.
DEFAULT_PRETRAINED = "stabilityai/stable-diffusion-2-1-base"
MODEL_INDEX = "model_index.json"
#: subfolder -> the config file diffusers reads from it.
REQUIRED_PARTS = {"vae": "config.json", "unet": "config.json", "scheduler": "scheduler_config.json"}
_HOW_TO_GET = (
    "to get it, on a machine with internet run `hf download {repo}` (or "
    "`hf download {repo} --local-dir DIR`) and copy the Hugging Face cache or DIR here; "
    "for a smoke test, `jpegrestore tiny-model sd DIR` writes a tiny random model in the same layout"
)


class MissingBaseModelError(FileNotFoundError):
    """The Stable Diffusion base folder is missing or is not a diffusers folder with vae/unet/scheduler."""


def _expected_layout() -> str:
    parts = ", ".join(f"{sub}/{cfg}" for sub, cfg in REQUIRED_PARTS.items())
    return f"a diffusers folder with {MODEL_INDEX} and the subfolders {parts} (plus the vae and unet weights)"


def _looks_like_repo_id(pretrained: str) -> bool:
    parts = pretrained.split("/")
    return len(parts) == 2 and all(parts) and not pretrained.startswith((".", "/", "~"))


def _cached_repo(repo_id: str) -> Path | None:
    """Snapshot folder of ``repo_id`` in $JPEGRESTORE_WEIGHTS or the local Hugging Face cache, or None."""
    spec = weights.spec_for("stable_diffusion")
    if repo_id == spec.hf_repo:
        try:
            return weights.resolve("stable_diffusion")
        except weights.MissingWeightsError:
            return None
    for directory in weights.env_dirs():
        for candidate in (directory / repo_id.split("/")[-1], directory / repo_id):
            if (candidate / MODEL_INDEX).is_file():
                return candidate
    for cache in [*weights.env_dirs(), weights.huggingface_hub_cache_dir()]:
        snapshot = weights._hf_snapshot(cache, repo_id, MODEL_INDEX)
        if snapshot is not None:
            return snapshot
    return None


def resolve_pretrained(pretrained: str | os.PathLike[str]) -> Path:
    """Local diffusers folder for ``pretrained`` (a folder, or a repo id already in a local cache).

    Raises :class:`MissingBaseModelError` naming what was expected, where it looked and how to get it.
    """
    text = str(pretrained)
    folder = Path(text).expanduser()
    if folder.is_dir():
        _check_layout(folder)
        return folder
    if _looks_like_repo_id(text) and not folder.exists():
        found = _cached_repo(text)
        if found is None:
            cache = weights.huggingface_hub_cache_dir()
            env = os.pathsep.join(str(d) for d in weights.env_dirs()) or "not set"
            raise MissingBaseModelError(
                f"Stable Diffusion base {text!r} is not available locally: expected {_expected_layout()}; "
                f"looked in ${weights.ENV_VAR} ({env}) and the Hugging Face cache {cache}; "
                + _HOW_TO_GET.format(repo=text)
            )
        _check_layout(found)
        return found
    raise MissingBaseModelError(
        f"Stable Diffusion base folder {folder} does not exist: expected {_expected_layout()}; "
        + _HOW_TO_GET.format(repo=DEFAULT_PRETRAINED)
    )


def _check_layout(folder: Path) -> None:
    missing = [MODEL_INDEX] if not (folder / MODEL_INDEX).is_file() else []
    missing += [f"{sub}/{cfg}" for sub, cfg in REQUIRED_PARTS.items() if not (folder / sub / cfg).is_file()]
    if missing:
        raise MissingBaseModelError(
            f"{folder} is not a Stable Diffusion diffusers folder: missing {', '.join(missing)}; expected "
            f"{_expected_layout()}; " + _HOW_TO_GET.format(repo=DEFAULT_PRETRAINED)
        )


def _load_part(folder: Path, sub: str, cls: type):  # noqa: ANN202
    try:
        module = cls.from_pretrained(folder, subfolder=sub, local_files_only=True, torch_dtype=torch.float32)
    except (OSError, ValueError) as error:
        raise MissingBaseModelError(
            f"cannot load {cls.__name__} from {folder / sub}: {error}; expected {_expected_layout()}; "
            + _HOW_TO_GET.format(repo=DEFAULT_PRETRAINED)
        ) from error
    return module.eval()


def load_stable_diffusion(pretrained: str | os.PathLike[str]):  # noqa: ANN201 (diffusers classes, lazy import)
    """(AutoencoderKL, UNet2DConditionModel, DDPMScheduler) from a local folder or cached repo id, float32, CPU.

    Loaded with ``local_files_only=True``; the modules come back in eval mode with gradients enabled (the
    caller decides what trains). Errors name the folder and the missing part.
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    folder = resolve_pretrained(pretrained)
    vae = _load_part(folder, "vae", AutoencoderKL)
    unet = _load_part(folder, "unet", UNet2DConditionModel)
    scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler", local_files_only=True)
    return vae, unet, scheduler


def load_unet(pretrained: str | os.PathLike[str]):  # noqa: ANN201
    """Only the UNet2DConditionModel of the base (e.g. for the latent discriminator), float32, eval mode."""
    from diffusers import UNet2DConditionModel

    return _load_part(resolve_pretrained(pretrained), "unet", UNet2DConditionModel)


def load_alphas_cumprod(pretrained: str | os.PathLike[str]) -> torch.Tensor:
    """The base scheduler's cumulative alphas (abar_t), float [num_train_timesteps]."""
    from diffusers import DDPMScheduler

    folder = resolve_pretrained(pretrained)
    return DDPMScheduler.from_pretrained(folder, subfolder="scheduler", local_files_only=True).alphas_cumprod


def tiny_configs(cross_attention_dim: int = 32) -> dict[str, dict]:
    """Configs of a tiny model with SD 2.1 base's structure: 4 VAE scales (latent stride 8, 4 latent
    channels), a 2-scale UNet with linear-projection transformers, epsilon prediction, SD's beta schedule."""
    vae = dict(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=4,
        block_out_channels=(8, 8, 16, 16), sample_size=64, scaling_factor=0.18215,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    )
    unet = dict(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, norm_num_groups=8,
        block_out_channels=(16, 32), attention_head_dim=(2, 4), use_linear_projection=True,
        cross_attention_dim=cross_attention_dim,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    )
    scheduler = dict(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        prediction_type="epsilon", clip_sample=False, steps_offset=1,
    )
    return {"vae": vae, "unet": unet, "scheduler": scheduler}


def write_tiny_stable_diffusion(out_dir: str | os.PathLike[str], seed: int = 0, cross_attention_dim: int = 32) -> Path:
    """Write a tiny random Stable Diffusion (vae/, unet/, scheduler/, model_index.json) to ``out_dir``.

    Same diffusers classes and folder layout as SD 2.1 base, saved through their ``save_pretrained``, so it
    goes through exactly the loading code of the real model. Deterministic for a given ``seed``.
    """
    return write_random_stable_diffusion(out_dir, tiny_configs(cross_attention_dim), seed)


def write_random_stable_diffusion(out_dir: str | os.PathLike[str], configs: dict[str, dict], seed: int = 0,
                                  device: str | torch.device = "cpu") -> Path:
    """Write a random-weight Stable Diffusion folder of any size: ``configs`` = {"vae", "unet", "scheduler"}
    constructor arguments (:func:`tiny_configs`, or SD 2.1 base's for a full-size stand-in). The weights are
    drawn on ``device`` (a GPU makes a full-size UNet quick) with the default initializers, seeded."""
    import diffusers
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[torch.device(device)] if torch.device(device).type == "cuda" else []):
        torch.manual_seed(seed)
        for part, cls in (("vae", AutoencoderKL), ("unet", UNet2DConditionModel)):
            with torch.device(device):
                module = cls(**configs[part])
            module.cpu().save_pretrained(out / part)
    DDPMScheduler(**configs["scheduler"]).save_pretrained(out / "scheduler")
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "scheduler": ["diffusers", "DDPMScheduler"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (out / MODEL_INDEX).write_text(json.dumps(index, indent=2) + "\n")
    return out
