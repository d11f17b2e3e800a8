"""Unconditional diffusion priors for training-free samplers, loaded offline.

:func:`load_prior` accepts

- a diffusers folder: a pipeline folder (``model_index.json`` with ``unet/`` and ``scheduler/``), or a bare
  ``UNet2DModel`` folder (``config.json`` + weights) with its scheduler config beside it
  (``scheduler_config.json`` in the folder, or a sibling ``scheduler/`` folder);
- a Hugging Face repository id (``google/ddpm-celebahq-256``) found in the local Hugging Face cache or under
  ``$JPEGRESTORE_WEIGHTS`` (nothing is downloaded);
- an OpenAI guided-diffusion checkpoint (``256x256_diffusion_uncond.pt``, the DDRM-JPEG paper's prior;
  :mod:`jpegrestore.nn.guided_diffusion`);
- a checkpoint of the ``ddpm_prior`` training recipe (its EMA weights; :mod:`jpegrestore.tasks.ddpm_prior`).

Every prior is returned as a :class:`DiffusionPrior`: ``eps_model(x, t)`` takes x float [B, C, H, W] in
[-1, 1] and t Long[B] in 0..T-1 and returns the raw network output [B, C or 2C, H, W] (2C for priors with
learned variances, whose extra channels samplers drop), and ``alphas_cumprod`` float64 [T] is
abar_t = prod_{i <= t} (1 - beta_i) of the prior's training schedule.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from jpegrestore import weights
from jpegrestore.checkpoints import Checkpoint, build_network, checkpoint_metadata, network_state_dict

#: The ``ddpm_prior`` recipe's name in its checkpoints (``checkpoint["jpegrestore"]["recipe"]``).
DDPM_PRIOR_RECIPE = "ddpm_prior"

#: The tiny random prior of ``jpegrestore tiny-model ddpm`` and of the tests: 32x32 RGB, two levels.
#: Names that stand for the paper's guided-diffusion prior, resolved through :mod:`jpegrestore.weights`
#: (a path, ``$JPEGRESTORE_WEIGHTS``, the torch hub cache) instead of a path.
GUIDED_DIFFUSION_NAMES = ("guided_diffusion", "256x256_diffusion_uncond.pt")


TINY_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 32,
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": (16, 32),
    "layers_per_block": 1,
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D"),
    "up_block_types": ("AttnUpBlock2D", "UpBlock2D"),
    "norm_num_groups": 8,
    "attention_head_dim": 8,
}

#: Half-precision dtypes a prior can run in.
HALF_DTYPES = (torch.float16, torch.bfloat16)

#: The DDPM schedule (Ho et al. 2020), also guided-diffusion's "linear" schedule at 1000 steps.
LINEAR_SCHEDULE: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 1e-4,
    "beta_end": 0.02,
    "beta_schedule": "linear",
}


@dataclass
class DiffusionPrior:
    """An unconditional epsilon-prediction diffusion prior.

    Attributes:
        eps_model: module called as ``eps_model(x, t)``: x float [B, C, H, W] in [-1, 1], t Long[B] -> raw
            network output [B, C or 2C, H, W] in x's dtype (eval mode, frozen).
        alphas_cumprod: float64 [T], abar_t of the training schedule, t = 0..T-1.
        channels: image channels C the prior models (3 for RGB).
        size_multiple: H and W the network needs to be a multiple of (2 ** number of downsamplings).
        image_size: the one square size the network is run at, or None for networks run at any multiple of
            ``size_multiple``. guided-diffusion priors set their training size (256 for the paper's prior), so
            samplers pad smaller images to it and tile larger ones; diffusers and ``ddpm_prior`` priors: None.
        source: where the prior came from (path or repository id), for logs and reports.
    """

    eps_model: nn.Module
    alphas_cumprod: Tensor
    channels: int
    size_multiple: int
    image_size: int | None
    source: str


class EpsModel(nn.Module):
    """``(x, t) -> network output`` for a network with another calling convention.

    Casts x to the network's dtype and the output back to x's dtype, so a half-precision prior can be driven by a
    float32 sampler. ``call(net, x, t)`` runs the network.
    """

    def __init__(self, net: nn.Module, call: Callable[[nn.Module, Tensor, Tensor], Tensor]) -> None:
        super().__init__()
        self.net = net
        self._call = call

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        dtype = next(self.net.parameters()).dtype
        out = self._call(self.net, x.to(dtype), t.long())
        return out.to(x.dtype)


def _diffusers_call(net: nn.Module, x: Tensor, t: Tensor) -> Tensor:
    return net(x, t).sample


def _plain_call(net: nn.Module, x: Tensor, t: Tensor) -> Tensor:
    return net(x, t)


def linear_alphas_cumprod(num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """abar_t for betas linear in [beta_start, beta_end] over ``num_steps`` steps, in float64. -> [T]."""
    betas = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)


def _frozen(module: nn.Module, device: str | torch.device, dtype: torch.dtype) -> nn.Module:
    module = module.to(device)
    if any(p.dtype != dtype for p in module.parameters()):
        module = module.to(dtype)
    return module.eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------------- schedulers


def alphas_cumprod_from_scheduler_config(config: dict[str, Any], source: str = "<scheduler config>") -> Tensor:
    """abar_t (float64 [T]) from a diffusers scheduler config (``scheduler_config.json``'s contents).

    The scheduler class named in ``_class_name`` is built from diffusers and its ``betas`` are used. ValueError
    naming ``source`` when the scheduler has no betas (e.g. a variance-exploding or flow-matching scheduler) or
    does not predict epsilon.
    """
    import diffusers

    class_name = config.get("_class_name", "DDPMScheduler")
    scheduler_class = getattr(diffusers, class_name, None)
    if scheduler_class is None:
        raise ValueError(f"{source}: unknown diffusers scheduler class {class_name!r}")
    prediction = config.get("prediction_type", "epsilon")
    if prediction != "epsilon":
        raise ValueError(f"{source}: the prior predicts {prediction!r}; only epsilon-prediction priors are supported")
    scheduler = scheduler_class.from_config(config)
    betas = getattr(scheduler, "betas", None)
    if not isinstance(betas, Tensor) or betas.ndim != 1 or betas.numel() == 0:
        raise ValueError(
            f"{source}: scheduler {class_name} has no betas; a prior needs the discrete beta schedule it was "
            "trained with (e.g. a DDPMScheduler or DDIMScheduler config)"
        )
    return torch.cumprod(1.0 - betas.to(torch.float64), dim=0)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read {path}: {error}") from error


def _scheduler_config_path(unet_dir: Path) -> Path | None:
    for candidate in (
        unet_dir / "scheduler_config.json",
        unet_dir / "scheduler" / "scheduler_config.json",
        unet_dir.parent / "scheduler" / "scheduler_config.json",
    ):
        if candidate.is_file():
            return candidate
    return None


# ---------------------------------------------------------------------------------------------------- diffusers


def _unet_dir(folder: Path) -> Path | None:
    """Directory holding the UNet2DModel's ``config.json`` inside a pipeline or bare model folder."""
    if (folder / "unet" / "config.json").is_file():
        return folder / "unet"
    if (folder / "config.json").is_file():
        return folder
    return None


def unet_size_multiple(unet: nn.Module) -> int:
    """2 ** (number of downsamplings) of a diffusers ``UNet2DModel``."""
    return 2 ** (len(unet.config.block_out_channels) - 1)


def load_diffusers_prior(
    folder: str | os.PathLike[str], device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
    source: str | None = None,
) -> DiffusionPrior:
    """A diffusers ``UNet2DModel`` (pipeline or bare model folder) and its scheduler's betas, read locally."""
    from diffusers import UNet2DModel

    folder = Path(folder)
    unet_dir = _unet_dir(folder)
    if unet_dir is None:
        raise FileNotFoundError(
            f"{folder} is not a diffusers UNet2DModel folder: expected unet/config.json (pipeline folder with "
            "model_index.json) or config.json with the model weights"
        )
    class_name = _read_json(unet_dir / "config.json").get("_class_name")
    if class_name not in (None, "UNet2DModel"):
        raise ValueError(f"{unet_dir / 'config.json'}: a {class_name}, not an unconditional UNet2DModel")
    scheduler_path = _scheduler_config_path(unet_dir)
    if scheduler_path is None:
        raise FileNotFoundError(
            f"no scheduler config for the UNet in {unet_dir}: expected scheduler_config.json there, or a "
            "scheduler/scheduler_config.json beside it (the prior's betas come from it)"
        )
    alphas_cumprod = alphas_cumprod_from_scheduler_config(_read_json(scheduler_path), str(scheduler_path))
    unet = UNet2DModel.from_pretrained(unet_dir, local_files_only=True, torch_dtype=dtype)
    unet = _frozen(unet, device, dtype)
    return DiffusionPrior(
        eps_model=EpsModel(unet, _diffusers_call).eval(),
        alphas_cumprod=alphas_cumprod,
        channels=int(unet.config.in_channels),
        size_multiple=unet_size_multiple(unet),
        image_size=None,
        source=source or str(folder),
    )


def hf_cache_snapshot(repo_id: str) -> Path | None:
    """Local snapshot of Hugging Face repository ``repo_id`` holding a diffusers model, or None.

    Searched: ``$JPEGRESTORE_WEIGHTS/<name>`` and ``$JPEGRESTORE_WEIGHTS/<owner>/<name>``, then the Hugging Face
    cache layout under each ``$JPEGRESTORE_WEIGHTS`` directory and in the Hugging Face hub cache.
    """
    name = repo_id.split("/")[-1]
    for directory in weights.env_dirs():
        for candidate in (directory / name, directory / repo_id):
            if _unet_dir(candidate) is not None:
                return candidate
    for cache in [*weights.env_dirs(), weights.huggingface_hub_cache_dir()]:
        for marker in ("model_index.json", "config.json"):
            snapshot = weights._hf_snapshot(cache, repo_id, marker)
            if snapshot is not None and _unet_dir(snapshot) is not None:
                return snapshot
    return None


def _looks_like_repo_id(source: str) -> bool:
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not source.startswith((".", "~")) and "\\" not in source


# ---------------------------------------------------------------------------------------------------- checkpoints


def _load_torch_file(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # zip, pickle and format errors all mean "not a readable checkpoint"
        raise ValueError(f"cannot read {path} as a PyTorch checkpoint: {error}") from error


def load_ddpm_prior_checkpoint(
    checkpoint: dict[str, Any], path: Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> DiffusionPrior:
    """The UNet of a ``ddpm_prior`` checkpoint (``state_dict`` holds the EMA weights) and its schedule."""
    meta = checkpoint_metadata(checkpoint, str(path))
    recipe = meta.get("recipe")
    if recipe != DDPM_PRIOR_RECIPE or "scheduler" not in meta:
        raise ValueError(
            f"{path} is a checkpoint of recipe {recipe!r}, not a diffusion prior (expected a checkpoint of "
            f"experiment={DDPM_PRIOR_RECIPE} with its scheduler config)"
        )
    unet = build_network(meta["network"])
    try:
        unet.load_state_dict(network_state_dict(checkpoint, meta.get("state_dict_prefix", "net.")), strict=True)
    except RuntimeError as error:
        raise ValueError(f"weights in {path} do not fit {meta['network'].get('_target_')}: {error}") from error
    unet = _frozen(unet, device, dtype)
    return DiffusionPrior(
        eps_model=EpsModel(unet, _diffusers_call).eval(),
        alphas_cumprod=alphas_cumprod_from_scheduler_config(dict(meta["scheduler"]), f"{path} (scheduler)"),
        channels=int(unet.config.in_channels),
        size_multiple=unet_size_multiple(unet),
        image_size=None,
        source=str(path),
    )


def _load_file(path: Path, device: str | torch.device, dtype: torch.dtype) -> DiffusionPrior:
    content = _load_torch_file(path)
    if isinstance(content, dict) and "state_dict" in content and "jpegrestore" in content:
        return load_ddpm_prior_checkpoint(content, path, device, dtype)
    from jpegrestore.nn.guided_diffusion import (
        CHECKPOINT_NAME,
        build_guided_diffusion_from_state,
        looks_like_guided_diffusion,
    )

    if isinstance(content, dict) and looks_like_guided_diffusion(content):
        model = build_guided_diffusion_from_state(content, str(path))
        # Half precision as the authors run it: the torso's convolutions in half, norms and the rest in float32.
        model = _frozen(model, device, torch.float32 if dtype in HALF_DTYPES else dtype)
        if dtype in HALF_DTYPES:
            model.convert_to_fp16(dtype)
        return DiffusionPrior(
            eps_model=EpsModel(model, _plain_call).eval(),
            alphas_cumprod=linear_alphas_cumprod(1000, 1e-4, 0.02),
            channels=int(model.in_channels),
            size_multiple=model.size_multiple,
            image_size=int(model.image_size),  # its training size: larger images are tiled to it, not run whole
            source=str(path),
        )
    keys = list(content)[:5] if isinstance(content, dict) else type(content).__name__
    raise ValueError(
        f"{path}: unknown prior format (first keys: {keys}); expected a guided-diffusion state dict "
        f"(like {CHECKPOINT_NAME}) or a checkpoint of experiment={DDPM_PRIOR_RECIPE}"
    )


# ---------------------------------------------------------------------------------------------------- entry point


def load_prior(
    source: str | os.PathLike[str] | Checkpoint, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> DiffusionPrior:
    """Load an unconditional diffusion prior from a local path or a locally cached Hugging Face id.

    Args:
        source: a diffusers folder, a guided-diffusion ``.pt`` file, a ``ddpm_prior`` checkpoint (a path or an
            already read :class:`~jpegrestore.checkpoints.Checkpoint`), a Hugging Face repository id present in
            the local cache (see the module docstring), or ``guided_diffusion`` / ``256x256_diffusion_uncond.pt``:
            the paper's prior, looked up like every weight file (``jpegrestore weights``).
        device, dtype: where and in which precision the network runs (``alphas_cumprod`` stays float64 on CPU).
            A half ``dtype`` (float16 or bfloat16) for a guided-diffusion file converts only the torso's
            convolutions, as the authors do (:meth:`~jpegrestore.nn.guided_diffusion.GuidedDiffusionUNet.convert_to_fp16`);
            other priors are cast whole.

    Raises:
        FileNotFoundError: ``source`` is neither an existing path nor a cached repository (says what was expected
            and where it looked).
        ValueError: an unknown format, a scheduler without betas, a non-epsilon prior, mismatched weights.
    """
    if isinstance(source, Checkpoint):
        return load_ddpm_prior_checkpoint(source.data, source.path, device, dtype)
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        return load_diffusers_prior(path, device, dtype)
    if path.is_file():
        return _load_file(path, device, dtype)
    if text in GUIDED_DIFFUSION_NAMES:  # looked up like every other weight file (`jpegrestore weights`)
        return _load_file(weights.resolve(GUIDED_DIFFUSION_NAMES[0]), device, dtype)
    if _looks_like_repo_id(text):
        snapshot = hf_cache_snapshot(text)
        if snapshot is not None:
            return load_diffusers_prior(snapshot, device, dtype, source=f"{text} ({snapshot})")
        env = os.pathsep.join(str(d) for d in weights.env_dirs()) or "not set"
        raise FileNotFoundError(
            f"prior {text!r} is neither a local path nor in the local Hugging Face cache "
            f"({weights.huggingface_hub_cache_dir()}; ${weights.ENV_VAR}: {env}). Nothing is downloaded: fetch it "
            f"on a machine with internet (`hf download {text}`) and copy the cache, or pass the folder"
        )
    raise FileNotFoundError(
        f"prior not found: {path} (expected a diffusers UNet2DModel folder, a guided-diffusion .pt file such as "
        f"256x256_diffusion_uncond.pt, a checkpoint of experiment={DDPM_PRIOR_RECIPE}, or a cached Hugging Face id)"
    )


def write_tiny_ddpm(out_dir: str | os.PathLike[str], seed: int = 0) -> Path:
    """Write a tiny random DDPM prior (32x32 RGB ``UNet2DModel`` + linear ``DDPMScheduler``) as a diffusers
    pipeline folder through ``DDPMPipeline.save_pretrained``. -> ``out_dir``."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(seed)
    unet = UNet2DModel(**TINY_UNET_CONFIG)
    scheduler = DDPMScheduler(**LINEAR_SCHEDULE)
    out = Path(out_dir)
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(out)
    return out
