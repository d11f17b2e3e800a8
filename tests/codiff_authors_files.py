"""Files in the exact layout of the authors' released CODiff weights, written from tiny diffusers models.

The target selection follows their training script: UNet weights (no bias, no norm) whose name contains
one of the patterns below go to adapter default_encoder (down blocks, conv_in), default_decoder (up
blocks, conv_out) or default_others (the rest), first matching pattern wins; VAE encoder weights and
quant_conv go to the VAE's default_encoder, once per matching pattern (hence the duplicates).
"""

from __future__ import annotations

import copy

import torch
from peft import LoraConfig

UNET_PATTERNS = ["to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_in", "conv_shortcut",
                 "conv_out", "proj_out", "proj_in", "ff.net.2", "ff.net.0.proj", "downsamplers.0.conv",
                 "upsamplers.0.conv"]
VAE_PATTERNS = ["conv1", "conv2", "conv_in", "conv_shortcut", "conv", "conv_out", "to_k", "to_q", "to_v", "to_out.0"]


def unet_targets(unet) -> tuple[list[str], list[str], list[str]]:
    encoder, decoder, others = [], [], []
    for name, _ in unet.named_parameters():
        if "bias" in name or "norm" in name:
            continue
        for pattern in UNET_PATTERNS:
            if pattern not in name:
                continue
            module = name.replace(".weight", "")
            if "down_blocks" in name or "conv_in" in name:
                encoder.append(module)
            elif "up_blocks" in name or "conv_out" in name:
                decoder.append(module)
            else:
                others.append(module)
            break
    return encoder, decoder, others


def vae_targets(vae) -> list[str]:
    targets = []
    for name, _ in vae.named_parameters():
        if "bias" in name or "norm" in name:
            continue
        for pattern in VAE_PATTERNS:
            if pattern in name and "encoder" in name:
                targets.append(name.replace(".weight", ""))
            elif "quant_conv" in name and "post_quant_conv" not in name:
                targets.append(name.replace(".weight", ""))
    return targets


def authors_codiff_file(vae, unet, rank: int, token_dim: int, seed: int = 0) -> tuple[dict, object, object]:
    """(the authors' save dict, their VAE, their UNet): copies of ``vae`` / ``unet`` with the authors' adapters,
    random non-zero LoRA, a changed conv_in and a random proj, set up as their test script loads them."""
    vae, unet = copy.deepcopy(vae), copy.deepcopy(unet)
    encoder, decoder, others = unet_targets(unet)
    vae_list = vae_targets(vae)
    for adapter, targets in (("default_encoder", encoder), ("default_decoder", decoder), ("default_others", others)):
        unet.add_adapter(LoraConfig(r=rank, init_lora_weights="gaussian", target_modules=targets), adapter_name=adapter)
    unet.set_adapter(["default_encoder", "default_decoder", "default_others"])
    vae.add_adapter(LoraConfig(r=rank, init_lora_weights="gaussian", target_modules=vae_list),
                    adapter_name="default_encoder")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in (unet, vae):
            for name, p in module.named_parameters():
                if "lora_A" in name:  # peft's gaussian init, N(0, 1/r), from the seeded generator
                    p.copy_(torch.randn(p.shape, generator=generator) / rank)
                elif "lora_B" in name:  # gaussian init leaves B = 0: make the update visible
                    p.copy_(torch.randn(p.shape, generator=generator) * 0.05)
        conv_in = unet.conv_in.base_layer.weight
        conv_in.add_(torch.randn(conv_in.shape, generator=generator) * 0.05)
    proj = torch.nn.Linear(token_dim, unet.config.cross_attention_dim)
    with torch.no_grad():  # drawn from the seeded generator, so the file does not depend on the global RNG
        proj.weight.copy_(torch.randn(proj.weight.shape, generator=generator) / token_dim**0.5)
        proj.bias.copy_(torch.randn(proj.bias.shape, generator=generator) * 0.1)
    content = {
        "vae_lora_encoder_modules": vae_list,
        "unet_lora_encoder_modules": encoder,
        "unet_lora_decoder_modules": decoder,
        "unet_lora_others_modules": others,
        "rank_unet": rank,
        "rank_vae": rank,
        "state_dict_unet": {k: v for k, v in unet.state_dict().items() if "lora" in k or "conv_in" in k},
        "state_dict_vae": {k: v for k, v in vae.state_dict().items() if "lora" in k},
        "proj": proj.state_dict(),
    }
    return content, vae.eval(), unet.eval()
