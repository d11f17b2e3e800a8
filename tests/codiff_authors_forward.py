"""The authors' test-time forward, written out step by step on the tensors of their two files.

A second implementation, independent of jpegrestore, following jp-guo/CODiff literally:

- ``cave/cave.py``: ``CaVE.forward`` / ``get_visual_embedding`` pad the input (replicate, bottom/right) to a
  multiple of 8 only, then run the strided convs, which drop what is left over: floor(H8/32) x floor(W8/32)
  tokens. Eval-mode BatchNorm with eps 1e-4; decoder blocks compute ``x + (1 * res(x) + 1)``.
- ``diffusion/codiff.py`` (``CODiff_test.forward``): VAE-encode the LQ image in [-1, 1] (their VAE with the
  encoder LoRA), ``proj`` the tokens into ``encoder_hidden_states``, one UNet call at t = 499, the scheduler
  step to x0 (here Eq. 1 written out, as their ``DDPMScheduler.step`` after ``set_timesteps(1)`` gives),
  VAE-decode, clamp to [-1, 1].
- ``main_test_codiff.py``: ``ToPILImage()(img_E * 0.5 + 0.5)`` truncates to 8 bits; the AdaIN colour fix
  (``diffusion/my_utils/wavelet_color_fix.py``) runs on that image against the uint8 LQ image, through
  ``ToTensor``, clamps to [0, 1] and truncates again with ``ToPILImage``.

Two differences from their script, both outside what the tests compare: the latent is the posterior's mode
(they draw a sample: random), and everything runs in float32 (they run the UNet and VAE in fp16 on a GPU
and cast ``proj``'s output to fp16).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

#: the UNet step of CODiff (their ``self.timesteps``).
TIMESTEP = 499


def authors_visual_embedding(state: dict[str, Tensor], x: Tensor, nb: int = 4) -> Tensor:
    """Their ``CaVE.get_visual_embedding``: [B, 3, H, W] in [0, 1] -> tokens [B, N, C], row-major."""
    return _encoder(state, x, nb)[0].flatten(-2, -1).permute(0, 2, 1)


def _encoder(state: dict[str, Tensor], x: Tensor, nb: int) -> tuple[Tensor, list[Tensor]]:
    """Padding to 8, head, downsampling and encoder body -> (token map [B, C, h, w], the four skips)."""
    h, w = x.shape[-2:]
    x = F.pad(x, (0, math.ceil(w / 8) * 8 - w, 0, math.ceil(h / 8) * 8 - h), mode="replicate")
    t = _conv(state, "m_head", x)
    skips = [t]
    for name, k in (("m_down1", 2), ("m_down2", 4), ("m_down3", 4)):
        for i in range(nb):
            t = t + _res(state, f"{name}.{i}", t)
        t = _conv(state, f"{name}.{nb}", t, stride=k, padding=0)
        skips.append(t)
    for i in range(nb):
        t = t + _res(state, f"m_body_encoder.{i}", t)
    return t, skips


def authors_cave_forward(state: dict[str, Tensor], x: Tensor, nb: int = 4) -> tuple[Tensor, Tensor, Tensor]:
    """Their ``CaVE.forward`` (and its tokens) -> (tokens [B, N, C], qf [B], reconstruction [B, 3, H, W])."""
    h, w = x.shape[-2:]
    t, skips = _encoder(state, x, nb)
    tokens, q = t.flatten(-2, -1).permute(0, 2, 1), t
    for i in range(nb):
        q = q + _res(state, f"qf_pred.{i}", q)
    q = q.mean((2, 3))
    q = F.relu(F.linear(q, state[f"qf_pred.{nb + 2}.weight"], state[f"qf_pred.{nb + 2}.bias"]))
    q = F.relu(F.linear(q, state[f"qf_pred.{nb + 4}.weight"], state[f"qf_pred.{nb + 4}.bias"]))
    q = torch.sigmoid(F.linear(q, state[f"qf_pred.{nb + 6}.weight"], state[f"qf_pred.{nb + 6}.bias"]))
    for i in range(nb):
        t = t + _res(state, f"m_body_decoder.{i}", t)
    t = t + skips[3]
    for name, k, skip in (("m_up3", 4, skips[2]), ("m_up2", 4, skips[1]), ("m_up1", 2, skips[0])):
        t = F.conv_transpose2d(t, state[f"{name}.0.weight"], state[f"{name}.0.bias"], stride=k)
        for i in range(1, nb + 1):
            t = t + (1.0 * _res(state, f"{name}.{i}", t) + 1.0)
        t = t + skip
    return tokens, q.squeeze(1), _conv(state, "m_tail", t)[..., :h, :w]


def _conv(state: dict[str, Tensor], name: str, t: Tensor, stride: int = 1, padding: int = 1) -> Tensor:
    return F.conv2d(t, state[f"{name}.weight"], state[f"{name}.bias"], stride=stride, padding=padding)


def _res(state: dict[str, Tensor], name: str, t: Tensor) -> Tensor:
    """``res`` of their ResBlock / QFAttention: conv, BatchNorm (eval, eps 1e-4), ReLU, conv."""
    r = _conv(state, f"{name}.res.0", t)
    bn = f"{name}.res.1"
    r = F.batch_norm(r, state[f"{bn}.running_mean"], state[f"{bn}.running_var"], state[f"{bn}.weight"],
                     state[f"{bn}.bias"], training=False, eps=1e-4)
    return _conv(state, f"{name}.res.3", F.relu(r))


def merged_models(sd_folder: str | Path, content: dict):
    """(VAE, UNet, proj): plain diffusers models of ``sd_folder`` with the CODiff file's tensors applied by hand:
    ``W + (8 / r) B A`` per listed module (peft's default alpha 8, as their LoraConfig), the file's conv_in,
    its proj. Independent of peft and of jpegrestore."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    vae = AutoencoderKL.from_pretrained(sd_folder, subfolder="vae")
    unet = UNet2DConditionModel.from_pretrained(sd_folder, subfolder="unet")
    with torch.no_grad():
        unet.conv_in.weight.copy_(content["state_dict_unet"]["conv_in.base_layer.weight"])
        unet.conv_in.bias.copy_(content["state_dict_unet"]["conv_in.base_layer.bias"])
        for model, tensors, rank in ((unet, content["state_dict_unet"], content["rank_unet"]),
                                     (vae, content["state_dict_vae"], content["rank_vae"])):
            for key, down in tensors.items():
                if ".lora_A." not in key:
                    continue
                module_name, _, adapter = key.removesuffix(".weight").partition(".lora_A.")
                up = tensors[f"{module_name}.lora_B.{adapter}.weight"]
                layer = model.get_submodule(module_name)
                delta = up.flatten(1) @ down.flatten(1)
                layer.weight += (8 / rank) * delta.reshape(layer.weight.shape)
    proj = torch.nn.Linear(content["proj"]["weight"].shape[1], unet.config.cross_attention_dim)
    proj.load_state_dict(content["proj"])
    return vae.eval(), unet.eval(), proj


def one_step(vae, unet, proj, tokens: Tensor, lq: Tensor) -> Tensor:
    """Their ``CODiff_test.forward`` (latent mode instead of a sample). lq [B, 3, H, W] in [0, 1] -> decoded
    output [B, 3, H, W] in [0, 1], before any quantization: Eq. 1 at T = 499 with SD's scaled-linear betas."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    abar = torch.cumprod(1 - betas, 0)[TIMESTEP]
    z = vae.encode(lq * 2 - 1).latent_dist.mode() * vae.config.scaling_factor
    eps = unet(z, torch.tensor([TIMESTEP]), encoder_hidden_states=proj(tokens)).sample
    x0 = (z - math.sqrt(1 - abar) * eps) / math.sqrt(abar)
    return vae.decode(x0 / vae.config.scaling_factor).sample.clamp(-1, 1) * 0.5 + 0.5


def _adain(content: Tensor, style: Tensor, eps: float = 1e-5) -> Tensor:
    """Their ``adaptive_instance_normalization`` (unbiased variance + eps, per image and channel)."""
    def mean_std(feat: Tensor) -> tuple[Tensor, Tensor]:
        b, c = feat.shape[:2]
        var = feat.reshape(b, c, -1).var(dim=2) + eps
        return feat.reshape(b, c, -1).mean(dim=2).reshape(b, c, 1, 1), var.sqrt().reshape(b, c, 1, 1)

    style_mean, style_std = mean_std(style)
    content_mean, content_std = mean_std(content)
    return (content - content_mean) / content_std * style_std + style_mean


def authors_test_script(
    models: tuple, cave_state: dict[str, Tensor], img_l: np.ndarray, align_method: str = "adain"
) -> np.ndarray:
    """Their ``main_test_codiff.py`` on one decoded JPEG ``img_l`` (uint8 [H, W, 3], RGB) -> uint8 [H, W, 3].

    ``models`` = (VAE, UNet, proj) of :func:`merged_models`; ``align_method`` "adain" (their default) or "nofix".
    """
    from torchvision.transforms import ToPILImage, ToTensor

    vae, unet, proj = models
    lq_raw = torch.from_numpy(img_l).permute(2, 0, 1).float().div(255.0).unsqueeze(0)
    with torch.no_grad():
        visual_embedding = authors_visual_embedding(cave_state, lq_raw)
        img_e = one_step(vae, unet, proj, visual_embedding, lq_raw)
    img_e = ToPILImage()(img_e[0])  # truncates to 8 bits
    if align_method == "adain":
        target, source = ToTensor()(img_e).unsqueeze(0), ToTensor()(img_l).unsqueeze(0)
        img_e = ToPILImage()(_adain(target, source).squeeze(0).clamp_(0.0, 1.0))  # truncates again
    elif align_method != "nofix":
        raise ValueError(f"align_method must be 'adain' or 'nofix', got {align_method!r}")
    return np.array(img_e)
