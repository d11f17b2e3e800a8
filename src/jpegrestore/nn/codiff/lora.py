"""LoRA on CODiff's Stable Diffusion UNet and VAE encoder (through peft, diffusers' adapter API).

Target selection follows the authors' code (their released weights are laid out this way):

- UNet: every weight (no bias, no norm) whose name contains one of :data:`UNET_PATTERNS`, split into three
  adapters by position: ``default_encoder`` (``down_blocks`` and ``conv_in``), ``default_decoder``
  (``up_blocks`` and ``conv_out``) and ``default_others`` (the mid block).
- VAE: one adapter ``default_encoder`` on the encoder's conv / attention weights and on ``quant_conv``
  (not ``post_quant_conv``); the decoder carries no LoRA.

The LoRA scale is ``lora_alpha / rank``. The authors build their ``LoraConfig`` without ``lora_alpha``, so
peft's default alpha 8 applies: scale 0.5 at rank 16.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from torch import nn

UNET_PATTERNS = (
    "to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_in", "conv_shortcut", "conv_out",
    "proj_out", "proj_in", "ff.net.2", "ff.net.0.proj", "downsamplers.0.conv", "upsamplers.0.conv",
)
VAE_ENCODER_PATTERNS = ("conv1", "conv2", "conv_in", "conv_shortcut", "conv", "conv_out",
                        "to_k", "to_q", "to_v", "to_out.0")
UNET_ADAPTERS = ("default_encoder", "default_decoder", "default_others")
VAE_ADAPTER = "default_encoder"
#: peft's default ``lora_alpha`` (what the authors' LoraConfig uses).
PEFT_DEFAULT_ALPHA = 8.0


def _weight_names(model: nn.Module) -> Iterable[str]:
    for name, _ in model.named_parameters():
        if name.endswith(".weight") and "bias" not in name and "norm" not in name:
            yield name[: -len(".weight")]


def unet_lora_targets(unet: nn.Module) -> dict[str, list[str]]:
    """Module names of the UNet per adapter (``default_encoder`` / ``default_decoder`` / ``default_others``)."""
    targets: dict[str, list[str]] = {name: [] for name in UNET_ADAPTERS}
    for module in _weight_names(unet):
        if not any(pattern in module for pattern in UNET_PATTERNS):
            continue
        if "down_blocks" in module or "conv_in" in module:
            targets["default_encoder"].append(module)
        elif "up_blocks" in module or "conv_out" in module:
            targets["default_decoder"].append(module)
        else:
            targets["default_others"].append(module)
    return targets


def vae_encoder_lora_targets(vae: nn.Module) -> list[str]:
    """Module names of the VAE encoder's LoRA: encoder convs / attention projections and ``quant_conv``."""
    targets = []
    for module in _weight_names(vae):
        in_encoder = module.startswith("encoder.") and any(pattern in module for pattern in VAE_ENCODER_PATTERNS)
        if in_encoder or module == "quant_conv":
            targets.append(module)
    return targets


def add_lora(model: nn.Module, targets: Mapping[str, list[str]], rank: int, alpha: float,
             init: str | bool = "gaussian") -> None:
    """Add one peft LoRA adapter per entry of ``targets`` (adapter -> module names), all active and trainable.

    ``init``: peft's ``init_lora_weights`` ("gaussian" as the authors: A ~ N(0, 1/rank), B = 0; True: Kaiming A,
    B = 0). Base weights are left as they are (the caller freezes them before).
    """
    from peft import LoraConfig

    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    names = [adapter for adapter, modules in targets.items() if modules]
    for adapter in names:
        config = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights=init, target_modules=list(targets[adapter]))
        model.add_adapter(config, adapter_name=adapter)
    model.set_adapter(names)
    for name, parameter in model.named_parameters():
        if ".lora_" in name:
            parameter.requires_grad_(True)


def lora_parameter_names(model: nn.Module) -> list[str]:
    """Names of the LoRA parameters of ``model`` (peft's ``lora_A`` / ``lora_B`` weights)."""
    return [name for name, _ in model.named_parameters() if ".lora_" in name]


def merged_adapter_state_dict(model: nn.Module, adapters: Iterable[str]) -> dict:
    """peft state dict (adapter names stripped) of several adapters on disjoint modules, as one adapter."""
    from peft.utils import get_peft_model_state_dict

    merged: dict = {}
    for adapter in adapters:
        part = get_peft_model_state_dict(model, adapter_name=adapter)
        overlap = set(part) & set(merged)
        if overlap:
            raise ValueError(f"adapters share modules, cannot merge: {sorted(overlap)[:3]}")
        merged.update(part)
    return merged
