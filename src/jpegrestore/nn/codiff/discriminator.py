"""CODiff's latent discriminator: a Stable Diffusion UNet cut after its mid block, with LoRA and a conv head.

As in the authors' code: the UNet of the same base, its up blocks and output layers removed; LoRA on its
attention, feed-forward, resnet, sampler and time-embedding projections; a learnable conditioning
[77, cross-attention dim] in place of text; a head conv 4x4 (C -> 2C) - GroupNorm(32) - SiLU - conv 4x4
(2C -> 1), stride 1, padding 1, giving patch logits (C = 1280 for SD 2.1 base). Real = VAE(HQ) latents,
fake = the generated latents, both scaled like the generator's.

The authors compute the UNet features under ``torch.no_grad()``, so their GAN trains only the head and the
embeddings and the generator receives no GAN gradient. Here gradients flow through the whole discriminator.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from jpegrestore.nn.codiff.lora import PEFT_DEFAULT_ALPHA, add_lora
from jpegrestore.nn.codiff.pretrained import DEFAULT_PRETRAINED, load_alphas_cumprod, load_unet

#: the authors' discriminator LoRA targets (peft suffix matching).
DISCRIMINATOR_LORA_PATTERNS = (
    "to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
    "conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj",
)


class LatentDiscriminator(nn.Module):
    """Patch discriminator on scaled SD latents [B, 4, h, w] -> logits [B, 1, h/2^k - 2, w/2^k - 2].

    (k = number of UNet downsamplings, 3 for SD: a 256 crop gives 32x32 latents and 2x2 logits.)

    Args:
        pretrained: the same Stable Diffusion base as the generator (folder or cached repo id).
        timestep: the diffusion step the UNet features are taken at. The paper writes the GAN losses (Eq. 8-9)
            as expectations over t and gives no value; the authors' code uses a fixed 199 on the clean latents
            (the generator runs at 499). Default 199, the only concrete value. None: the E_t reading, t drawn
            uniformly per sample and the latents noised to z_t = sqrt(abar_t) z + sqrt(1 - abar_t) eps.
        lora_rank: rank of the discriminator's LoRA (authors: the generator's rank, 16).
        lora_alpha: peft alpha (authors: peft's default 8).
        condition_tokens: length of the learnable conditioning (authors: 77, a text prompt's length).
        head_groups: GroupNorm groups of the head (authors: 32).
        gradient_checkpointing: UNet gradient checkpointing.
    """

    def __init__(
        self,
        pretrained: str = DEFAULT_PRETRAINED,
        timestep: int | None = 199,
        lora_rank: int = 16,
        lora_alpha: float = PEFT_DEFAULT_ALPHA,
        condition_tokens: int = 77,
        head_groups: int = 32,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        from diffusers.models.attention_processor import AttnProcessor2_0

        unet = load_unet(pretrained)
        alphas_cumprod = load_alphas_cumprod(pretrained)
        unet.requires_grad_(False)
        del unet.up_blocks, unet.conv_out, unet.conv_norm_out, unet.conv_act  # cut after the mid block
        unet.set_attn_processor(AttnProcessor2_0())
        modules = [name for name, module in unet.named_modules()
                   if isinstance(module, (nn.Linear, nn.Conv2d)) and name.endswith(DISCRIMINATOR_LORA_PATTERNS)]
        add_lora(unet, {"default": modules}, lora_rank, lora_alpha, init=True)
        if gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        self.unet = unet.train()
        self.timestep = None if timestep is None else int(timestep)
        if self.timestep is not None and not 0 <= self.timestep < len(alphas_cumprod):
            raise ValueError(f"discriminator timestep must be in [0, {len(alphas_cumprod)}) or None, got {timestep}")
        self.register_buffer("alphas_cumprod", alphas_cumprod.float(), persistent=False)
        width = int(unet.config.block_out_channels[-1])
        if (2 * width) % head_groups:
            raise ValueError(f"head_groups={head_groups} does not divide the head width {2 * width}")
        self.embeddings = nn.Parameter(torch.randn(condition_tokens, int(unet.config.cross_attention_dim)))
        self.head = nn.Sequential(
            nn.Conv2d(width, 2 * width, 4, stride=1, padding=1),
            nn.GroupNorm(head_groups, 2 * width),
            nn.SiLU(),
            nn.Conv2d(2 * width, 1, 4, stride=1, padding=1),
        )
        self.downsamplings = sum(1 for block in unet.down_blocks if getattr(block, "downsamplers", None))
        #: names of the trained parameters (LoRA, conditioning, head), fixed at construction.
        self.trained_parameter_names = tuple(n for n, p in self.named_parameters() if p.requires_grad)

    def features(self, latents: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """UNet features after the mid block: [B, 4, h, w] -> [B, C, h / 2^k, w / 2^k] (at ``timestep``).
        ``generator`` (on the latents' device) draws t and the noise when ``timestep`` is None."""
        unet = self.unet
        batch = latents.shape[0]
        if self.timestep is None:
            timesteps = torch.randint(0, len(self.alphas_cumprod), (batch,), device=latents.device,
                                      generator=generator)
            alpha_bar = self.alphas_cumprod[timesteps].view(batch, 1, 1, 1).to(latents.dtype)
            noise = torch.randn(latents.shape, device=latents.device, dtype=latents.dtype, generator=generator)
            latents = alpha_bar.sqrt() * latents + (1 - alpha_bar).sqrt() * noise
        else:
            timesteps = torch.full((batch,), self.timestep, dtype=torch.long, device=latents.device)
        emb = unet.time_embedding(unet.get_time_embed(sample=latents, timestep=timesteps))
        context = self.embeddings.unsqueeze(0).expand(batch, -1, -1).to(latents.dtype)
        sample = unet.conv_in(latents)
        for block in unet.down_blocks:
            if getattr(block, "has_cross_attention", False):
                sample, _ = block(hidden_states=sample, temb=emb, encoder_hidden_states=context)
            else:
                sample, _ = block(hidden_states=sample, temb=emb)
        return unet.mid_block(sample, emb, encoder_hidden_states=context)

    def forward(self, latents: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Scaled latents [B, 4, h, w] -> patch logits [B, 1, h', w'] (real > 0); ``generator`` as in
        :meth:`features`."""
        h, w = latents.shape[-2:]
        factor = 2 ** self.downsamplings
        if min(h, w) // factor < 3:
            raise ValueError(
                f"latent {h}x{w} is too small for the discriminator: it needs at least {3 * factor} latent pixels "
                f"({24 * factor} image pixels) per side"
            )
        return self.head(self.features(latents, generator))
