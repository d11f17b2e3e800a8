"""CODiff generator and discriminator on a tiny random Stable Diffusion loaded through the real loading code:
Eq. 1, what is trained and stored, clear errors, GAN gradients, and LoRA files that diffusers/peft load."""

from __future__ import annotations

import pytest
import torch

from codiff_helpers import TINY_CAVE, write_cave_checkpoint
from jpegrestore.nn.codiff.discriminator import LatentDiscriminator
from jpegrestore.nn.codiff.generator import CODiff, EXTRA_WEIGHTS_FILE, UNET_LORA_FILE, VAE_LORA_FILE
from jpegrestore.nn.codiff.pretrained import write_tiny_stable_diffusion

ABAR_499 = 0.277669  # SD 2.1 base (REFERENCE-NOTES)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("codiff")
    return {"sd": write_tiny_stable_diffusion(root / "sd", seed=0, cross_attention_dim=32),
            "sd24": write_tiny_stable_diffusion(root / "sd24", seed=0, cross_attention_dim=24),
            "cave": write_cave_checkpoint(root / "cave.ckpt"),
            "qgac": write_cave_checkpoint(root / "other.ckpt", recipe="qgac_stage1")}


@pytest.fixture(scope="module")
def model(files):
    torch.manual_seed(0)
    return CODiff(str(files["sd"]), cave_checkpoint=str(files["cave"]), lora_rank=2, lora_alpha=2.0).eval()


def _perturb_lora_b(module, seed=1):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if ".lora_B." in name:
                parameter.copy_(0.05 * torch.randn(parameter.shape, generator=generator))


def test_wrong_or_missing_cave_checkpoint(files, tmp_path):
    with pytest.raises(ValueError, match=r"recipe 'qgac_stage1', not by CaVE stage 1"):
        CODiff(str(files["sd"]), cave_checkpoint=str(files["qgac"]))
    with pytest.raises(FileNotFoundError, match="nothing.ckpt"):
        CODiff(str(files["sd"]), cave_checkpoint=str(tmp_path / "nothing.ckpt"))
    with pytest.raises(ValueError, match="exactly one of cave"):
        CODiff(str(files["sd"]))


def test_trained_tensors_only_and_cross_attention_mismatch(model, files):
    state = model.trained_state_dict()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {k for k in state if not k.startswith("cave.")}
    model.requires_grad_(False)  # e.g. frozen for inference: what is stored does not change
    assert model.trained_state_dict().keys() == state.keys()
    for name in trainable:
        model.get_parameter(name).requires_grad_(True)
    assert all(".lora_" in k or k.startswith(("unet.conv_in.base_layer.", "proj.", "cave.")) for k in state)
    assert not any(k.startswith("vae.decoder.") for k in state)  # the VAE decoder stays frozen
    assert state["proj.weight"].shape == (32, 16)  # CaVE token dim 16 -> cross-attention dim 32
    assert len(model.unet_lora_targets["default_decoder"]) > 0 and "conv_in" in model.unet_lora_targets["default_encoder"]
    assert "quant_conv" in model.vae_lora_targets["default_encoder"]

    with pytest.raises(ValueError, match="cross-attention dim 24.*trained for 32"):
        CODiff(str(files["sd24"]), cave=TINY_CAVE, cross_attention_dim=32, lora_rank=2)
    other = CODiff(str(files["sd24"]), cave=TINY_CAVE, lora_rank=2, lora_alpha=2.0)
    with pytest.raises(ValueError, match=r"trained for UNet cross-attention dim 32.*has cross-attention dim 24"):
        other.load_trained_state_dict(state, source="ckpt")


def test_one_step_is_eq1_with_sd_alpha_bar(model):
    """With the UNet's output layer zeroed, eps = 0 and Eq. 1 reduces to z / sqrt(abar_499)."""
    z = torch.randn(1, 4, 8, 8)
    cond = model.condition(torch.rand(1, 3, 64, 64))
    assert cond.shape == (1, 4, 32)  # 64x64 / 32^2 = 4 tokens
    conv_out = model.unet.conv_out
    saved = {k: v.clone() for k, v in conv_out.state_dict().items()}
    with torch.no_grad():
        for parameter in conv_out.parameters():
            parameter.zero_()
        out = model.denoise_latent(z, cond)
        conv_out.load_state_dict(saved)
        eps = model.unet(z, 499, encoder_hidden_states=cond).sample
        full = model.denoise_latent(z, cond)
    torch.testing.assert_close(out, z / ABAR_499 ** 0.5, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(full, (z - (1 - ABAR_499) ** 0.5 * eps) / ABAR_499 ** 0.5, rtol=1e-4, atol=1e-5)


def test_gan_gradients_reach_generator_and_discriminator(model, files):
    """The authors' feature pass under no_grad gives no GAN gradient; here both networks get one."""
    from jpegrestore.losses import nonsaturating_discriminator_loss, nonsaturating_generator_loss

    torch.manual_seed(0)
    generator = model.train()
    generator.zero_grad(set_to_none=True)
    discriminator = LatentDiscriminator(str(files["sd"]), lora_rank=2, lora_alpha=2.0, head_groups=8)
    _perturb_lora_b(generator), _perturb_lora_b(discriminator)  # B = 0 at init leaves A without gradient
    lq, hq = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)

    _, latent = generator.forward_with_latent(lq)
    discriminator.requires_grad_(False)
    nonsaturating_generator_loss(discriminator(latent)).backward()
    trained = {n: p for n, p in generator.named_parameters() if p.requires_grad}
    lora = [n for n in trained if ".lora_" in n]
    assert any(n.startswith("vae.encoder.") for n in lora) and any(n.startswith("unet.up_blocks") for n in lora)
    zero = [n for n, p in trained.items() if p.grad is None or not p.grad.abs().sum() > 0]
    assert zero == []

    for name, parameter in discriminator.named_parameters():
        parameter.requires_grad_(".lora_" in name or name.startswith(("head.", "embeddings")))
    with torch.no_grad():
        real = generator.encode_latent(hq, lora=False)
    nonsaturating_discriminator_loss(discriminator(real), discriminator(latent.detach())).backward()
    d_trained = {n: p for n, p in discriminator.named_parameters() if p.requires_grad}
    assert any(".lora_" in n for n in d_trained)
    assert [n for n, p in d_trained.items() if p.grad is None or not p.grad.abs().sum() > 0] == []
    generator.zero_grad(set_to_none=True)
    generator.eval()


@pytest.mark.parametrize("rank, alpha", [(2, 2.0), (16, 8.0)])
def test_saved_lora_loads_into_fresh_diffusers_models(model, files, tmp_path, rank, alpha):
    """At rank 2 / alpha 2 (scale 1) and at the paper's rank 16 / alpha 8 (scale 0.5, where recording alpha
    wrongly would change the strength at which diffusers applies the LoRA)."""
    import json

    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors import safe_open
    from safetensors.torch import load_file

    if (rank, alpha) != (model.lora_rank, model.lora_alpha):
        torch.manual_seed(0)
        model = CODiff(str(files["sd"]), cave_checkpoint=str(files["cave"]), lora_rank=rank, lora_alpha=alpha).eval()
    _perturb_lora_b(model, seed=3)
    with torch.no_grad():
        model.unet.conv_in.base_layer.bias.add_(0.1)  # conv_in's base weight is trained too
    out = model.save_lora(tmp_path / "lora")
    z, cond = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 32)
    image = torch.rand(1, 3, 64, 64) * 2 - 1

    unet = UNet2DConditionModel.from_pretrained(files["sd"], subfolder="unet", local_files_only=True)
    extra = load_file(out / EXTRA_WEIGHTS_FILE)
    unet.conv_in.load_state_dict({"weight": extra["unet_conv_in.weight"], "bias": extra["unet_conv_in.bias"]})
    unet.load_lora_adapter(out, prefix="unet", weight_name=UNET_LORA_FILE)
    vae = AutoencoderKL.from_pretrained(files["sd"], subfolder="vae", local_files_only=True)
    vae.load_lora_adapter(out, prefix=None, weight_name=VAE_LORA_FILE)
    with torch.no_grad():
        ours = model.unet(z, 499, encoder_hidden_states=cond).sample
        theirs = unet(z, 499, encoder_hidden_states=cond).sample
        base = UNet2DConditionModel.from_pretrained(files["sd"], subfolder="unet", local_files_only=True)(
            z, 499, encoder_hidden_states=cond).sample
        ours_latent = model.vae.encode(image).latent_dist.mode()
        theirs_latent = vae.encode(image).latent_dist.mode()
    assert not torch.allclose(ours, base, atol=1e-3)  # the LoRA changes the output, so the match below means something
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(theirs_latent, ours_latent, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(extra["proj.weight"], model.proj.weight.detach())
    for name, prefix in ((UNET_LORA_FILE, "unet."), (VAE_LORA_FILE, "")):
        with safe_open(out / name, "pt") as f:
            config = json.loads(f.metadata()["lora_adapter_metadata"])
        assert (config[f"{prefix}r"], config[f"{prefix}lora_alpha"]) == (rank, alpha), name


def test_discriminator_expectation_over_t_draws_noised_timesteps(files):
    """timestep=None (the E_t of Eq. 8-9): a random t per sample, so two calls on the same latent differ,
    while the fixed t (199, the authors') is deterministic."""
    torch.manual_seed(0)
    random_t = LatentDiscriminator(str(files["sd"]), timestep=None, lora_rank=2, head_groups=8).eval()
    fixed_t = LatentDiscriminator(str(files["sd"]), timestep=199, lora_rank=2, head_groups=8).eval()
    z = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        assert not torch.allclose(random_t(z), random_t(z))
        assert torch.equal(fixed_t(z), fixed_t(z))
    with pytest.raises(ValueError, match="timestep must be in"):
        LatentDiscriminator(str(files["sd"]), timestep=1000, lora_rank=2, head_groups=8)


def test_gradient_checkpointing_gives_the_same_gradients(model):
    model.train()
    lq = torch.rand(1, 3, 64, 64)
    grads, calls = [], []

    def counted_checkpoint(module, *args):
        calls.append(type(module).__name__)
        return torch.utils.checkpoint.checkpoint(module.__call__, *args, use_reentrant=False)

    for checkpointing in (False, True):
        model.zero_grad(set_to_none=True)
        if checkpointing:
            model.unet.enable_gradient_checkpointing(counted_checkpoint)
        restored, _ = model.forward_with_latent(lq)
        restored.square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    model.unet.disable_gradient_checkpointing()
    model.zero_grad(set_to_none=True)
    model.eval()
    assert len(calls) > 0  # blocks did run under checkpointing
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 0
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-6)
