"""`jpegrestore convert codiff`: the authors' released layout -> our checkpoint, same output as their tensors."""

from __future__ import annotations

import math

import pytest
import torch

from codiff_authors_files import authors_codiff_file
from jpegrestore.cli import main
from jpegrestore.nn.codiff.convert import convert_authors_files, read_authors_codiff
from jpegrestore.nn.codiff.pretrained import load_stable_diffusion, write_tiny_stable_diffusion

RANK = 4  # LoRA scale 8 / 4 = 2: a wrong scale cannot hide


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return write_tiny_stable_diffusion(tmp_path_factory.mktemp("sd") / "tiny-sd")


@pytest.fixture(scope="module")
def authors_files(tiny_sd, tmp_path_factory):
    """(codiff.pkl, cave.pth, the authors' file content, their peft VAE and UNet) from the tiny base."""
    from jpegrestore.nn.cave import CaVE

    folder = tmp_path_factory.mktemp("authors")
    vae, unet, _ = load_stable_diffusion(tiny_sd)
    content, their_vae, their_unet = authors_codiff_file(vae, unet, RANK, token_dim=512)
    torch.save(content, folder / "codiff.pkl")
    torch.manual_seed(3)
    torch.save(CaVE(init_gain=None).state_dict(), folder / "cave.pth")  # the authors' CaVE keys are ours
    return folder / "codiff.pkl", folder / "cave.pth", content, their_vae, their_unet


def merged_reference(tiny_sd, content):
    """Plain diffusers VAE / UNet with the file's tensors applied by hand: W + (8 / r) B A per listed module,
    the file's conv_in; and its proj. Independent of peft and of the converter."""
    vae, unet, _ = load_stable_diffusion(tiny_sd)
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
    proj = torch.nn.Linear(512, unet.config.cross_attention_dim)
    proj.load_state_dict(content["proj"])
    return vae.eval(), unet.eval(), proj


def one_step(vae, unet, proj, tokens, lq):
    """The authors' test-time forward (latent mode instead of a sample), Eq. 1 at T = 499 written out."""
    abar = torch.cumprod(1 - torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2, 0)[499]
    z = vae.encode(lq * 2 - 1).latent_dist.mode() * vae.config.scaling_factor
    eps = unet(z, torch.tensor([499]), encoder_hidden_states=proj(tokens)).sample
    x0 = (z - math.sqrt(1 - abar) * eps) / math.sqrt(abar)
    return (vae.decode(x0 / vae.config.scaling_factor).sample.clamp(-1, 1) + 1) / 2


def test_converted_checkpoint_reproduces_the_authors_tensors(tiny_sd, authors_files, tmp_path):
    from jpegrestore.checkpoints import checkpoint_recipe, load_network

    codiff_path, cave_path, content, their_vae, their_unet = authors_files
    out = convert_authors_files(codiff_path, cave_path, tmp_path / "codiff.ckpt", pretrained=str(tiny_sd))
    assert checkpoint_recipe(out) == "codiff_stage2"
    net = load_network(out)
    lq = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = net(lq)
        tokens = net.cave.embed(lq)
        ref_vae, ref_unet, proj = merged_reference(tiny_sd, content)
        reference = one_step(ref_vae, ref_unet, proj, tokens, lq)
        theirs = one_step(their_vae, their_unet, proj, tokens, lq)  # the peft model that wrote the file
        base_vae, base_unet, _ = load_stable_diffusion(tiny_sd)
        without_lora = one_step(base_vae, base_unet, proj, tokens, lq)
    assert (reference - theirs).abs().max() < 1e-4  # the hand-merged reference is their model
    assert (ours - reference).abs().max() < 1e-4
    assert (ours - without_lora).abs().max() > 1e-2  # the LoRA tensors matter at this scale
    # the CaVE weights are the file's (converted): a token from our loaded CaVE equals one from the raw file
    from jpegrestore.nn.cave import CaVE, convert_authors_state_dict

    cave = CaVE(init_gain=None).eval()
    cave.load_state_dict(convert_authors_state_dict(torch.load(cave_path)))
    assert torch.equal(cave.embed(lq), tokens)


def test_other_layouts_are_clear_errors(authors_files, tmp_path):
    codiff_path, cave_path, content, _, _ = authors_files
    with pytest.raises(ValueError, match=r"cave.pth is not the authors' CODiff file \(missing"):
        read_authors_codiff(cave_path)  # a plain state dict passed as the CODiff file
    renamed = dict(content)
    renamed["state_dict_unet"] = {k.replace("lora_A", "lora.down"): v for k, v in content["state_dict_unet"].items()}
    torch.save(renamed, tmp_path / "renamed.pkl")
    with pytest.raises(ValueError, match=r"renamed.pkl .*unexpected key '.*lora\.down"):
        read_authors_codiff(tmp_path / "renamed.pkl")
    no_conv_in = dict(content)
    no_conv_in["state_dict_unet"] = {k: v for k, v in content["state_dict_unet"].items() if "base_layer" not in k}
    torch.save(no_conv_in, tmp_path / "no_conv_in.pkl")
    with pytest.raises(ValueError, match="lacks the trained conv_in"):
        read_authors_codiff(tmp_path / "no_conv_in.pkl")
    wrong_rank = dict(content, rank_unet=RANK * 2)
    torch.save(wrong_rank, tmp_path / "wrong_rank.pkl")
    with pytest.raises(ValueError, match="not rank 8"):
        read_authors_codiff(tmp_path / "wrong_rank.pkl")
    with pytest.raises(FileNotFoundError, match="CODiff file not found: .*absent.pkl"):
        read_authors_codiff(tmp_path / "absent.pkl")
    with pytest.raises(ValueError, match=r"codiff.pkl: not a state dict of the authors' CaVE"):
        convert_authors_files(codiff_path, codiff_path, tmp_path / "x.ckpt", "unused", verify=False)


def test_convert_command(tiny_sd, authors_files, tmp_path, capsys):
    codiff_path, cave_path, *_ = authors_files
    out = tmp_path / "converted" / "codiff.ckpt"
    argv = ["convert", "codiff", "--codiff", str(codiff_path), "--cave", str(cave_path), "-o", str(out)]
    assert main([*argv, "--pretrained", str(tiny_sd)]) == 0
    assert out.is_file() and f"ckpt={out}" in capsys.readouterr().out
    # the default base (SD 2.1 base) is not on this machine: the error says what is missing and how to get it
    assert main([*argv[:-1], str(tmp_path / "other.ckpt")]) == 1
    error = capsys.readouterr().err
    assert "stable-diffusion-2-1-base" in error and "hf download" in error
    assert not (tmp_path / "other.ckpt").exists()
