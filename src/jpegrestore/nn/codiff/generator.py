"""CODiff generator (Guo et al., 2025): one-step Stable Diffusion conditioned on CaVE tokens.

``restored = decode(denoise(encode(lq), condition(lq)))`` with

- ``condition``: frozen CaVE tokens [B, N, C] of the LQ image in [0, 1] -> trainable ``proj`` Linear(C -> UNet
  cross-attention dim), used as ``encoder_hidden_states`` (no text encoder);
- ``encode``: VAE encoder (+ LoRA) of the LQ image in [-1, 1], times the VAE scaling factor;
- ``denoise``: one UNet call at ``timestep`` (499) and Eq. 1, ``z_H = (z_L - sqrt(1 - abar_T) eps) / sqrt(abar_T)``,
  computed directly from the scheduler's ``alphas_cumprod`` (``DDPMScheduler.step`` after ``set_timesteps(1)``
  gives the same on the authors' diffusers 0.25 but raises IndexError on current diffusers);
- ``decode``: the frozen VAE decoder, output clamped to [-1, 1] (as the authors' code) and mapped to [0, 1].

Trained: the LoRA adapters on the UNet and the VAE encoder (see :mod:`.lora`), the UNet's ``conv_in`` base
weight and ``proj``. :meth:`CODiff.trained_state_dict` holds these plus the frozen CaVE (our own stage-1 result,
so that a checkpoint is self-contained); the Stable Diffusion base is loaded from ``pretrained`` and never stored.

Interface: ``condition(lq)``, ``encode_latent(lq)``, ``denoise_latent(z, cond)``, ``decode_latent(z)`` (the steps,
separately, for tiled inference), ``forward_with_latent(lq)``, ``forward(lq)``, ``trained_state_dict()``,
``load_trained_state_dict(state)``, ``network_spec()``, ``save_lora(dir)``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jpegrestore.checkpoints import Checkpoint, load_network
from jpegrestore.nn.codiff.lora import (
    PEFT_DEFAULT_ALPHA,
    UNET_ADAPTERS,
    VAE_ADAPTER,
    add_lora,
    merged_adapter_state_dict,
    unet_lora_targets,
    vae_encoder_lora_targets,
)
from jpegrestore.nn.codiff.pretrained import DEFAULT_PRETRAINED, load_stable_diffusion
from jpegrestore.utils.precision import float32_region

LATENT_MODES = ("mode", "sample")
#: file names written by :meth:`CODiff.save_lora`.
UNET_LORA_FILE = "pytorch_lora_weights.safetensors"
VAE_LORA_FILE = "vae_encoder_lora.safetensors"
EXTRA_WEIGHTS_FILE = "codiff_weights.safetensors"


def load_cave_checkpoint(path: str | os.PathLike[str] | Checkpoint) -> tuple[nn.Module, dict[str, Any]]:
    """(frozen CaVE in eval mode, its network spec) from a stage-1 checkpoint (recipe ``"cave"``), read once.

    FileNotFoundError / ValueError name the file (and, for another recipe, which one it is).
    """
    checkpoint = Checkpoint.of(path)
    if checkpoint.recipe != "cave":
        raise ValueError(
            f"{checkpoint} was written by recipe {checkpoint.recipe!r}, not by CaVE stage 1 ('cave'): "
            "model.cave_checkpoint must be a checkpoint of `python train.py experiment=codiff_stage1`"
        )
    return load_network(checkpoint), checkpoint.network_spec


class CODiff(nn.Module):
    """One-step CODiff restorer: LQ JPEG image [B, 3, H, W] in [0, 1] -> restored [B, 3, H, W] in [0, 1].

    Args:
        pretrained: Stable Diffusion base, a local diffusers folder or a repo id in the local HF cache.
        cave: network spec (``{"_target_": ..., **kwargs}``) of the CaVE; its weights then come from
            :meth:`load_trained_state_dict` (how a checkpoint rebuilds the model).
        cave_checkpoint: stage-1 checkpoint to take the CaVE (architecture and weights) from (how training
            starts). Exactly one of ``cave`` / ``cave_checkpoint``.
        cave_source: where the CaVE came from, recorded for information (set automatically from
            ``cave_checkpoint``).
        cross_attention_dim: the base UNet's cross-attention size the weights were trained for; None: take the
            base's. A base of another size is an error (e.g. SD 1.5, 768, for weights trained on SD 2.1, 1024).
        timestep: the fixed diffusion step T of Eq. 1 (paper and code: 499).
        lora_rank: LoRA rank of the UNet and VAE-encoder adapters (paper: 16).
        lora_alpha: peft ``lora_alpha``, scale = alpha / rank. The paper does not say. Default 8, peft's default,
            which is what the authors' code (LoraConfig without alpha) trained and released with: scale 0.5 at
            rank 16, so their weights load into this module unchanged.
        lora_init: peft ``init_lora_weights``; "gaussian" as the authors (A ~ N(0, 1/r), B = 0).
        latent: "mode" (default) or "sample" of the VAE posterior. The paper does not say; the authors' code
            samples. We default to the mode: the output is deterministic, training and inference see the same
            latent, and SD's VAE posterior is narrow, so a sample differs from the mode by little.
        latent_seed: seed of the posterior sample in eval mode with ``latent="sample"`` (training draws from
            the global RNG).
        gradient_checkpointing: UNet gradient checkpointing (memory for compute).
    """

    def __init__(
        self,
        pretrained: str = DEFAULT_PRETRAINED,
        cave: Mapping[str, Any] | None = None,
        cave_checkpoint: str | None = None,
        cave_source: str | None = None,
        cross_attention_dim: int | None = None,
        timestep: int = 499,
        lora_rank: int = 16,
        lora_alpha: float = PEFT_DEFAULT_ALPHA,
        lora_init: str | bool = "gaussian",
        latent: str = "mode",
        latent_seed: int = 0,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if latent not in LATENT_MODES:
            raise ValueError(f"latent must be one of {LATENT_MODES}, got {latent!r}")
        if (cave is None) == (cave_checkpoint is None):
            raise ValueError("CODiff needs exactly one of cave (a CaVE network spec) and cave_checkpoint (a "
                             "stage-1 checkpoint); set model.cave_checkpoint=<codiff_stage1 last.ckpt>")
        # recorded in checkpoints: a repo id as given, a folder as an absolute path
        self.pretrained = str(Path(pretrained).resolve()) if Path(str(pretrained)).is_dir() else str(pretrained)
        if cave_checkpoint is not None:
            self.cave, self.cave_spec = load_cave_checkpoint(cave_checkpoint)
            self.cave_source = str(Path(cave_checkpoint).resolve())
        else:
            from jpegrestore.utils.instantiate import instantiate_object

            self.cave_spec = dict(cave)
            self.cave = instantiate_object(self.cave_spec)
            self.cave_source = cave_source
        self.cave.eval().requires_grad_(False)

        vae, unet, scheduler = load_stable_diffusion(pretrained)
        base_dim = int(unet.config.cross_attention_dim)
        if cross_attention_dim is not None and int(cross_attention_dim) != base_dim:
            raise ValueError(
                f"Stable Diffusion base {pretrained} has UNet cross-attention dim {base_dim}, but these CODiff "
                f"weights were trained for {cross_attention_dim}; use the base they were trained on "
                "(SD 2.1 base: 1024)"
            )
        if not 0 <= timestep < len(scheduler.alphas_cumprod):
            raise ValueError(f"timestep must be in [0, {len(scheduler.alphas_cumprod)}), got {timestep}")
        self.cross_attention_dim = base_dim
        self.timestep = int(timestep)
        self.lora_rank, self.lora_alpha, self.lora_init = int(lora_rank), float(lora_alpha), lora_init
        self.latent, self.latent_seed = latent, int(latent_seed)
        self.gradient_checkpointing = bool(gradient_checkpointing)
        self.scaling_factor = float(vae.config.scaling_factor)
        self.register_buffer("alpha_bar", scheduler.alphas_cumprod[self.timestep].clone().float(), persistent=False)

        from diffusers.models.attention_processor import AttnProcessor2_0

        vae.requires_grad_(False)
        unet.requires_grad_(False)
        unet.set_attn_processor(AttnProcessor2_0())  # PyTorch SDPA
        vae.set_attn_processor(AttnProcessor2_0())
        self.unet_lora_targets = unet_lora_targets(unet)
        self.vae_lora_targets = {VAE_ADAPTER: vae_encoder_lora_targets(vae)}
        add_lora(unet, self.unet_lora_targets, self.lora_rank, self.lora_alpha, lora_init)
        add_lora(vae, self.vae_lora_targets, self.lora_rank, self.lora_alpha, lora_init)
        conv_in = unet.conv_in.get_base_layer() if hasattr(unet.conv_in, "get_base_layer") else unet.conv_in
        conv_in.requires_grad_(True)  # the authors train conv_in's base weight as well as its LoRA
        if self.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        self.vae, self.unet = vae.train(), unet.train()  # train mode as the authors (no dropout/BN: no effect)
        self.proj = nn.Linear(int(self.cave.token_dim), base_dim)
        #: names of the trained parameters, fixed here (requires_grad may be toggled later, e.g. by Lightning).
        self.trained_parameter_names = tuple(n for n, p in self.named_parameters() if p.requires_grad)

    # ------------------------------------------------------------------ the three steps

    def train(self, mode: bool = True) -> "CODiff":
        super().train(mode)
        self.cave.eval()  # frozen: BatchNorm keeps its stage-1 statistics
        return self

    def condition(self, lq: Tensor) -> Tensor:
        """LQ [B, 3, H, W] in [0, 1] -> ``encoder_hidden_states`` [B, N, cross_attention_dim] (N = H*W/32^2)."""
        with torch.no_grad(), float32_region():  # the frozen CaVE runs in float32 (as the authors)
            tokens = self.cave.embed(lq.float())
        return self.proj(tokens.to(self.proj.weight.dtype))

    def encode_latent(self, lq: Tensor, generator: torch.Generator | None = None, lora: bool = True) -> Tensor:
        """Image [B, 3, H, W] in [0, 1] (H, W multiples of 8) -> scaled latent [B, 4, H/8, W/8].

        ``lora=False`` uses the base encoder (the discriminator's real latents, as the authors).
        """
        posterior = self._encode(lq * 2 - 1, lora).latent_dist
        if self.latent == "mode":
            z = posterior.mode()
        else:
            if generator is None and not self.training:
                generator = torch.Generator(device=lq.device).manual_seed(self.latent_seed)
            z = posterior.sample(generator=generator)
        return z * self.scaling_factor

    def _encode(self, x: Tensor, lora: bool):  # noqa: ANN202
        if lora:
            return self.vae.encode(x)
        flags = [(p, p.requires_grad) for p in self.vae.parameters()]  # peft's enable/disable reset them
        self.vae.disable_adapters()
        try:
            return self.vae.encode(x)
        finally:
            self.vae.enable_adapters()
            for parameter, flag in flags:
                parameter.requires_grad_(flag)

    def denoise_latent(self, z: Tensor, cond: Tensor) -> Tensor:
        """One step (Eq. 1): scaled LQ latent [B, 4, h, w] and condition [B, N, D] -> estimated HQ latent."""
        timesteps = torch.full((z.shape[0],), self.timestep, device=z.device, dtype=torch.long)
        eps = self.unet(z, timesteps, encoder_hidden_states=cond.to(z.dtype)).sample
        alpha_bar = self.alpha_bar.to(eps.dtype)
        return (z - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()

    def decode_latent(self, z: Tensor) -> Tensor:
        """Scaled latent [B, 4, h, w] -> image [B, 3, 8h, 8w] in [0, 1] (clamped in [-1, 1] first, as the authors)."""
        x = self.vae.decode(z / self.scaling_factor).sample
        return (x.clamp(-1, 1) + 1) / 2

    def forward_with_latent(self, lq: Tensor) -> tuple[Tensor, Tensor]:
        """(restored [B, 3, H, W] in [0, 1], generated latent [B, 4, H/8, W/8]); H, W multiples of 8."""
        if lq.shape[-2] % 8 or lq.shape[-1] % 8:
            raise ValueError(f"CODiff needs H and W multiples of 8 (the VAE stride), got {tuple(lq.shape[-2:])}")
        latent = self.denoise_latent(self.encode_latent(lq), self.condition(lq))
        return self.decode_latent(latent), latent

    def forward(self, lq: Tensor) -> Tensor:
        """LQ [B, 3, H, W] in [0, 1], any H, W -> restored [B, 3, H, W] in [0, 1] (replicate-padded to 8)."""
        h, w = lq.shape[-2:]
        padded = F.pad(lq, (0, -w % 8, 0, -h % 8), mode="replicate") if (h % 8 or w % 8) else lq
        return self.forward_with_latent(padded)[0][..., :h, :w]

    # ------------------------------------------------------------------ what is stored

    def trained_state_dict(self) -> dict[str, Tensor]:
        """The tensors a checkpoint stores: the trained ones (UNet and VAE-encoder LoRA, UNet conv_in, proj)
        plus the CaVE embedder (``cave.*``, our own stage-1 result, so that a checkpoint is self-contained).
        Never the Stable Diffusion base."""
        trained = set(self.trained_parameter_names)
        state = self.state_dict()
        return {k: v for k, v in state.items() if k in trained or k.startswith("cave.")}

    def load_trained_state_dict(self, state: Mapping[str, Tensor], source: str = "<state dict>") -> None:
        """Load what :meth:`trained_state_dict` wrote (all keys required). ValueError naming the mismatch."""
        expected = self.trained_state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ValueError(
                f"CODiff weights in {source} do not fit this model (LoRA rank {self.lora_rank}, base "
                f"{self.pretrained}): missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, unexpected "
                f"{unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
            )
        trained_dim = state["proj.weight"].shape[0]
        if trained_dim != self.cross_attention_dim:
            raise ValueError(
                f"CODiff weights in {source} were trained for UNet cross-attention dim {trained_dim}, but the base "
                f"{self.pretrained} has cross-attention dim {self.cross_attention_dim}: use the base they were "
                "trained on (SD 2.1 base: 1024)"
            )
        for key, value in state.items():
            if tuple(value.shape) != tuple(expected[key].shape):
                raise ValueError(f"CODiff weight {key} in {source} has shape {tuple(value.shape)}, this model "
                                 f"expects {tuple(expected[key].shape)}")
        self.load_state_dict(dict(state), strict=False)

    def network_spec(self) -> dict[str, Any]:
        """``{"_target_": ..., **kwargs}`` that rebuilds this module around :meth:`trained_state_dict`."""
        return {
            "_target_": f"{type(self).__module__}.{type(self).__name__}",
            "pretrained": self.pretrained,
            "cave": self.cave_spec,
            "cave_checkpoint": None,
            "cave_source": self.cave_source,
            "cross_attention_dim": self.cross_attention_dim,
            "timestep": self.timestep,
            "lora_rank": self.lora_rank,
            "lora_alpha": self.lora_alpha,
            "lora_init": self.lora_init,
            "latent": self.latent,
            "latent_seed": self.latent_seed,
            "gradient_checkpointing": False,
        }

    # ------------------------------------------------------------------ files for diffusers / peft

    def lora_metadata(self, targets: Mapping[str, list[str]]) -> dict[str, Any]:
        """peft ``LoraConfig`` fields of one adapter over ``targets`` (rank, alpha and modules)."""
        modules = sorted({m for names in targets.values() for m in names})
        return {"r": self.lora_rank, "lora_alpha": self.lora_alpha, "target_modules": modules,
                "init_lora_weights": True, "peft_type": "LORA"}

    def save_lora(self, out_dir: str | os.PathLike[str]) -> Path:
        """Write the trained weights as files diffusers and peft load directly. -> ``out_dir``.

        - ``pytorch_lora_weights.safetensors``: the UNet LoRA (three adapters on disjoint modules, saved as one)
          in the ``StableDiffusionPipeline.save_lora_weights`` layout with its rank/alpha metadata:
          ``unet.load_lora_adapter(out_dir, prefix="unet", weight_name=...)``.
        - ``vae_encoder_lora.safetensors``: the VAE-encoder adapter (peft keys, metadata included):
          ``vae.load_lora_adapter(out_dir, prefix=None, weight_name=...)``.
        - ``codiff_weights.safetensors``: the non-LoRA tensors, ``unet_conv_in.{weight,bias}`` (the trained base
          conv_in), ``proj.{weight,bias}`` and ``cave.*``; metadata ``codiff`` holds the rebuild spec as JSON.
        """
        from diffusers import StableDiffusionPipeline
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        unet_layers = {k: v.detach().float().contiguous()
                       for k, v in merged_adapter_state_dict(self.unet, UNET_ADAPTERS).items()}
        StableDiffusionPipeline.save_lora_weights(
            out, unet_lora_layers=unet_layers, weight_name=UNET_LORA_FILE,
            unet_lora_adapter_metadata=self.lora_metadata(self.unet_lora_targets),
        )
        vae_layers = {k: v.detach().float().contiguous()
                      for k, v in merged_adapter_state_dict(self.vae, [VAE_ADAPTER]).items()}
        from diffusers.loaders.lora_base import LORA_ADAPTER_METADATA_KEY

        vae_meta = {"format": "pt", LORA_ADAPTER_METADATA_KEY: json.dumps(self.lora_metadata(self.vae_lora_targets))}
        save_file(vae_layers, out / VAE_LORA_FILE, metadata=vae_meta)
        conv_in = self.unet.conv_in.get_base_layer()
        extra = {"unet_conv_in.weight": conv_in.weight, "unet_conv_in.bias": conv_in.bias,
                 "proj.weight": self.proj.weight, "proj.bias": self.proj.bias}
        extra.update({f"cave.{k}": v for k, v in self.cave.state_dict().items()})
        extra = {k: v.detach().float().contiguous() if v.is_floating_point() else v.detach().contiguous()
                 for k, v in extra.items()}
        save_file(extra, out / EXTRA_WEIGHTS_FILE, metadata={"format": "pt", "codiff": json.dumps(self.network_spec())})
        return out

