"""Cost of CODiff at full size: multiply-accumulates and parameters of one 1024x1024 restoration.

    python bench/codiff_cost.py [--size 1024] [--repeats 3]

The full-size networks (Stable Diffusion 2.1 base's VAE and UNet from their configs written out below,
CaVE at the paper's widths, the 512 -> 1024 projection, rank-16 LoRA) are built on the meta device: no
weights, no memory, and PyTorch's FLOP counter (torch.utils.flop_counter) still sees every matmul and
convolution, attention included. MACs = FLOPs / 2. Printed beside the paper's Table 2 (9.46 TMACs,
1.00 G parameters, 0.57 s on an A6000).

The UNet runs once on the whole 128x128 latent ("untiled") and, as the authors' test script does for
latents larger than 96x96, on 96x96 tiles with an overlap of 32 ("tiled": 4 tiles at 1024x1024).

On a GPU it also times a 1024x1024 restoration (random weights, fp16, untiled UNet); on a CPU it times one
generator step of the tiny model instead (L2 loss only: forward, backward, AdamW).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

#: Stable Diffusion 2.1 base, unet/config.json (diffusers layout).
SD21_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, norm_num_groups=32,
    block_out_channels=(320, 640, 1280, 1280), attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024,
    use_linear_projection=True, flip_sin_to_cos=True, freq_shift=0, act_fn="silu",
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
)
#: Stable Diffusion 2.1 base, vae/config.json.
SD21_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
    block_out_channels=(128, 256, 512, 512), sample_size=768, scaling_factor=0.18215, act_fn="silu",
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
)
PAPER = {"TMACs": 9.46, "params (G)": 1.00, "seconds (A6000)": 0.57}
LATENT_TILE, LATENT_OVERLAP = 96, 32
#: SD 2.1 base's alpha_bar at t = 499 (Eq. 1), for the timed forward.
ALPHA_BAR_499 = 0.277669


def count_macs(fn, *args) -> tuple[float, object]:
    """(multiply-accumulates, result) of ``fn(*args)``."""
    with FlopCounterMode(display=False) as counter:
        result = fn(*args)
    return counter.get_total_flops() / 2, result


def full_size_modules(rank: int = 16):
    """(vae, unet, cave, proj) at full size on the meta device, with the generator's LoRA attached."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from jpegrestore.nn.cave import CaVE
    from jpegrestore.nn.codiff.lora import (
        PEFT_DEFAULT_ALPHA, VAE_ADAPTER, add_lora, unet_lora_targets, vae_encoder_lora_targets,
    )

    with torch.device("meta"):
        vae, unet = AutoencoderKL(**SD21_VAE), UNet2DConditionModel(**SD21_UNET)
        cave = CaVE(init_gain=None).eval()
        proj = torch.nn.Linear(cave.token_dim, SD21_UNET["cross_attention_dim"])
        add_lora(unet, unet_lora_targets(unet), rank, PEFT_DEFAULT_ALPHA)
        add_lora(vae, {VAE_ADAPTER: vae_encoder_lora_targets(vae)}, rank, PEFT_DEFAULT_ALPHA)
    return vae.eval(), unet.eval(), cave, proj


#: CaVE modules that compute the tokens (the QF head and the decoder only train stage 1).
CAVE_EMBEDDER = ("m_head.", "m_down1.", "m_down2.", "m_down3.", "m_body_encoder.")


def parameter_table(vae, unet, cave, proj) -> list[tuple[str, float, float]]:
    """(part, total, trainable) parameter counts of what restoration runs; CaVE is frozen in stage 2."""
    rows = []
    for name, module in (("VAE", vae), ("UNet", unet), ("CaVE embedder", cave), ("projection", proj)):
        named = [(n, p) for n, p in module.named_parameters() if module is not cave or n.startswith(CAVE_EMBEDDER)]
        total = sum(p.numel() for _, p in named)
        trainable = sum(p.numel() for n, p in named if _trained(name, n))
        rows.append((name, total, trainable))
    return rows


def _trained(part: str, name: str) -> bool:
    """What stage 2 trains: every LoRA tensor, the UNet's conv_in, the projection."""
    return part == "projection" or "lora_" in name or (part == "UNet" and name.startswith("conv_in."))


def mac_table(vae, unet, cave, proj, size: int) -> list[tuple[str, float]]:
    from jpegrestore.nn.codiff.tiling import tiled_apply

    image = torch.zeros(1, 3, size, size, device="meta")
    t = torch.tensor([499], device="meta")
    rows = []
    macs, tokens = count_macs(cave.embed, image)
    rows.append(("CaVE tokens", macs))
    macs, cond = count_macs(proj, tokens)
    rows.append(("projection", macs))
    macs, latent = count_macs(lambda x: vae.encode(x).latent_dist.mode(), image)
    rows.append(("VAE encoder", macs))

    def denoise(z):
        return unet(z, t, encoder_hidden_states=cond).sample

    macs, _ = count_macs(denoise, latent)
    rows.append(("UNet, untiled", macs))
    tiled, _ = count_macs(lambda z: tiled_apply(denoise, z, LATENT_TILE, LATENT_OVERLAP), latent)
    rows.append((f"UNet, {LATENT_TILE}-latent tiles", tiled))
    macs, _ = count_macs(lambda z: vae.decode(z).sample, latent)
    rows.append(("VAE decoder", macs))
    return rows


def time_gpu_inference(size: int, repeats: int) -> float:
    """Best seconds of one untiled size x size restoration on CUDA, fp16, random weights."""
    vae, unet, cave, proj = full_size_modules()
    modules = [m.to_empty(device="cuda").half().eval() for m in (vae, unet, cave, proj)]
    for m in modules:
        for p in m.parameters():
            torch.nn.init.normal_(p, std=0.02)
    vae, unet, cave, proj = modules
    image = torch.rand(1, 3, size, size, device="cuda", dtype=torch.half)
    best = float("inf")
    with torch.no_grad():
        for _ in range(repeats + 1):
            torch.cuda.synchronize()
            start = time.perf_counter()
            cond = proj(cave.embed(image))
            z = vae.encode(image * 2 - 1).latent_dist.mode()
            eps = unet(z, 499, encoder_hidden_states=cond).sample
            vae.decode((z - (1 - ALPHA_BAR_499) ** 0.5 * eps) / ALPHA_BAR_499 ** 0.5).sample
            torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
    return best


def time_tiny_training_step(repeats: int) -> tuple[float, int]:
    """Best seconds of one generator step of the tiny model (L2 loss only, forward + backward + AdamW) on a
    2x3x64x64 batch, and its trainable parameter count."""
    import tempfile

    from jpegrestore.nn.codiff.generator import CODiff
    from jpegrestore.nn.codiff.pretrained import write_tiny_stable_diffusion

    tiny_cave = {"_target_": "jpegrestore.nn.cave.CaVE", "channels": [4, 8, 8, 16], "blocks": 1, "qf_hidden": 16}
    with tempfile.TemporaryDirectory() as folder:
        write_tiny_stable_diffusion(folder)
        net = CODiff(pretrained=folder, cave=tiny_cave).train()
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=5e-5)
    lq, hq = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    best = float("inf")
    for _ in range(repeats + 1):
        start = time.perf_counter()
        loss = torch.nn.functional.mse_loss(net(lq), hq)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        best = min(best, time.perf_counter() - start)
    return best, sum(p.numel() for p in params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024, help="image side in pixels (multiple of 32)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions (best is reported)")
    args = parser.parse_args()

    modules = full_size_modules()
    print(f"CODiff at full size (SD 2.1 base, CaVE 64/128/256/512, LoRA rank 16), {args.size}x{args.size}\n")
    print("| part | total params (M) | trainable (M) |\n|---|---:|---:|")
    rows = parameter_table(*modules)
    for name, total, trainable in rows:
        print(f"| {name} | {total / 1e6:.2f} | {trainable / 1e6:.2f} |")
    total, trainable = sum(r[1] for r in rows), sum(r[2] for r in rows)
    print(f"| **all** | **{total / 1e6:.2f}** | **{trainable / 1e6:.2f}** |")
    cave_heads = sum(p.numel() for n, p in modules[2].named_parameters() if not n.startswith(CAVE_EMBEDDER))
    print(f"\n(CaVE's QF head and decoder, used only to train stage 1: {cave_heads / 1e6:.2f} M more)")
    print(f"paper: {PAPER['params (G)']:.2f} G parameters\n")

    print("| stage | TMACs |\n|---|---:|")
    macs = dict(mac_table(*modules, args.size))
    for name, value in macs.items():
        print(f"| {name} | {value / 1e12:.3f} |")
    shared = sum(v for k, v in macs.items() if not k.startswith("UNet"))
    untiled = shared + macs["UNet, untiled"]
    tiled = shared + macs[f"UNet, {LATENT_TILE}-latent tiles"]
    print(f"| **total, untiled UNet** | **{untiled / 1e12:.2f}** |")
    print(f"| **total, tiled UNet (authors' default)** | **{tiled / 1e12:.2f}** |")
    print(f"\npaper: {PAPER['TMACs']:.2f} TMACs")

    if torch.cuda.is_available():
        seconds = time_gpu_inference(args.size, args.repeats)
        print(f"\n{torch.cuda.get_device_name()}: {seconds:.3f} s per {args.size}x{args.size} restoration "
              f"(fp16, untiled); paper {PAPER['seconds (A6000)']} s on an A6000")
    else:
        seconds, count = time_tiny_training_step(args.repeats)
        print(f"\nCPU ({torch.get_num_threads()} threads): tiny model ({count} trainable parameters), one generator "
              f"training step (L2 only: forward + backward + AdamW, batch 2 of 64x64): {seconds * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
