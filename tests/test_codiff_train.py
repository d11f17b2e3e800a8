"""CODiff stage 2 through train.py on a tiny random Stable Diffusion and a tiny CaVE: files, checkpoints holding
only trained tensors, rebuild by load_network, resume, and trainer=ddp_sim."""

from __future__ import annotations

import pytest
import torch

from codiff_helpers import write_cave_checkpoint, write_random_dists
from conftest import compose_train, run_train
from jpegrestore.nn.codiff.generator import EXTRA_WEIGHTS_FILE, UNET_LORA_FILE, VAE_LORA_FILE
from jpegrestore.nn.codiff.pretrained import write_tiny_stable_diffusion

QUIET = ["+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false", "callbacks.progress_bar=null",
         "logger=csv", "seed=0"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, random_vgg16):
    root = tmp_path_factory.mktemp("codiff_train")
    sd = write_tiny_stable_diffusion(root / "sd", seed=0)
    cave = write_cave_checkpoint(root / "cave.ckpt")
    dists = write_random_dists(root / "dists", random_vgg16)
    return ["experiment=codiff_stage2_tiny", f"model.pretrained={sd}", f"model.cave_checkpoint={cave}",
            f"model.dists_weights={dists}", *QUIET]


@pytest.fixture(scope="module")
def trained(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    metrics = run_train(inputs, out)
    return out, metrics


def test_stage2_trains_end_to_end_and_writes_trained_tensors_only(trained):
    from jpegrestore.checkpoints import load_network, read_checkpoint

    out, metrics = trained
    for name in ("train/g_l2", "train/g_dists", "train/g_gan", "train/d_loss", "val/psnr"):
        assert torch.isfinite(torch.tensor(metrics[name])), name
    for name in (UNET_LORA_FILE, VAE_LORA_FILE, EXTRA_WEIGHTS_FILE):
        assert (out / "lora" / name).is_file()
    checkpoint = read_checkpoint(out / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == 4  # 2 iterations x (G step + D step)
    assert len(checkpoint["optimizer_states"]) == 2
    meta = checkpoint["jpegrestore"]
    assert meta["recipe"] == "codiff_stage2" and meta["pretrained"].endswith("sd")
    assert meta["cave_source"].endswith("cave.ckpt") and meta["network"]["cave_checkpoint"] is None
    keys = list(checkpoint["state_dict"])
    frozen = [k for k in keys if not (".lora_" in k or k.startswith(
        ("net.unet.conv_in.base_layer.", "net.proj.", "net.cave.", "discriminator.head.", "discriminator.embeddings")))]
    assert frozen == []  # no Stable Diffusion base weight, no DISTS/VGG
    assert any(k.startswith("discriminator.unet.") for k in keys)

    network = load_network(out / "checkpoints" / "last.ckpt")
    lq = torch.rand(1, 3, 64, 64)
    state = checkpoint["state_dict"]
    for key, value in network.trained_state_dict().items():
        assert torch.equal(value, state[f"net.{key}"]), key
    assert network(lq).shape == (1, 3, 64, 64)
    with pytest.raises(Exception, match="nowhere"):
        load_network(out / "checkpoints" / "last.ckpt", network_overrides={"pretrained": str(out / "nowhere")})


@pytest.mark.slow
def test_stage2_resume_restores_step_and_both_optimizers(inputs, trained, tmp_path):
    import lightning.pytorch as pl

    from jpegrestore.tasks.runner import build

    out, _ = trained
    last = out / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)

    class StartRecorder(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            self.step = trainer.global_step
            self.states = [[s["exp_avg"].clone() for s in opt.state.values()] for opt in trainer.optimizers]

    cfg = compose_train([*inputs, "trainer.max_steps=8"], tmp_path)
    datamodule, model, trainer = build(cfg)
    recorder = StartRecorder()
    trainer.callbacks.append(recorder)
    trainer.fit(model, datamodule=datamodule, ckpt_path=str(last))
    assert recorder.step == 4 and trainer.global_step == 8
    for index in (0, 1):
        saved_avg = [s["exp_avg"] for s in saved["optimizer_states"][index]["state"].values()]
        assert len(saved_avg) == len(recorder.states[index]) > 0
        assert all(torch.equal(a, b) for a, b in zip(saved_avg, recorder.states[index]))
    # the frozen base came from the folder again, the trained tensors moved on from the checkpoint
    resumed = model.net.trained_state_dict()
    assert any(not torch.equal(v, saved["state_dict"][f"net.{k}"]) for k, v in resumed.items() if ".lora_" in k)


@pytest.mark.slow
def test_stage2_ddp_sim_ranks_agree(inputs, tmp_path):
    from test_train_ddp import _assert_identical_ranks, _train_py

    overrides = [*inputs, "trainer=ddp_sim", "data.samples_per_epoch=8"]
    _train_py(overrides, tmp_path)
    _assert_identical_ranks(tmp_path, 4, ("net.unet.", "net.vae.encoder.", "net.proj.", "discriminator."))


@pytest.mark.slow
def test_stage2_gradient_accumulation_steps_every_n_batches(inputs, tmp_path):
    from jpegrestore.tasks.runner import build

    cfg = compose_train([*inputs, "model.accumulate_grad_batches=2", "trainer.max_steps=2",
                         "data.samples_per_epoch=8", "trainer.val_check_interval=4"], tmp_path)
    datamodule, model, trainer = build(cfg)
    trainer.fit(model, datamodule=datamodule)
    # 2 batches accumulated into one generator step and one discriminator step
    assert trainer.global_step == 2 and trainer.fit_loop.epoch_loop.batch_progress.total.completed == 2
    for optimizer in trainer.optimizers:
        assert {int(state["step"]) for state in optimizer.state.values()} == {1}


def test_stage2_experiment_has_the_paper_hyperparameters(tmp_path):
    from omegaconf import OmegaConf

    cfg = compose_train(["experiment=codiff_stage2", "model.cave_checkpoint=c.ckpt"], tmp_path)
    model = OmegaConf.to_container(cfg.model, resolve=True)
    network, discriminator = model["network"], model["discriminator"]
    assert network["pretrained"] == discriminator["pretrained"] == "stabilityai/stable-diffusion-2-1-base"
    assert network["cave_checkpoint"] == "c.ckpt" and network["timestep"] == 499 and network["lora_rank"] == 16
    assert model["optimizer"] == {"_target_": "torch.optim.AdamW", "lr": 5e-5, "betas": [0.9, 0.999],
                                  "weight_decay": 1e-5}
    assert (model["l2_weight"], model["dists_weight"], model["gan_weight"]) == (1.0, 1.0, 5e-3)
    assert model["gradient_clip"] == 1.0 and model["discriminator_loss_weight"] == 1.0
    assert discriminator["timestep"] == 199 and discriminator["condition_tokens"] == 77
    assert (cfg.data.batch_size, cfg.model.train_crop, cfg.data.crop_size) == (32, 256, 264)
    assert cfg.trainer.max_steps == 200_000 and cfg.ddp_find_unused_parameters is True


@pytest.fixture(scope="module")
def task(inputs):
    """The stage-2 task of the tiny experiment (paper weights: L2 1, DISTS 1, GAN 5e-3), not trained."""
    from hydra.utils import instantiate

    cfg = compose_train(inputs)
    return cfg.model, instantiate(cfg.model)


def test_generator_total_is_eq7_with_the_configured_weights(task):
    """l2_weight * MSE + dists_weight * DISTS + gan_weight * softplus(-D(z)), each term recomputed here with the
    config's weights. MSE and the GAN term differ by far more than the tolerance, so swapping their weights
    (or dropping a term) changes the total."""
    import torch.nn.functional as F

    cfg, model = task
    g = torch.Generator().manual_seed(0)
    restored, target = torch.rand(2, 3, 64, 64, generator=g), torch.rand(2, 3, 64, 64, generator=g)
    latent = torch.randn(2, 4, 8, 8, generator=g)
    with torch.no_grad():
        terms = model.generator_loss(restored, target, latent, torch.Generator().manual_seed(1))
        mse = (restored - target).square().mean()
        gan = F.softplus(-model.discriminator(latent, torch.Generator().manual_seed(1))).mean()
        dists = model.dists_loss(restored, target).mean()
    assert cfg.l2_weight != cfg.gan_weight
    expected = cfg.l2_weight * mse + cfg.dists_weight * dists + cfg.gan_weight * gan
    swapped = cfg.gan_weight * mse + cfg.dists_weight * dists + cfg.l2_weight * gan
    assert abs(float(swapped - expected)) > 0.1 * float(expected)
    assert min(float(cfg.gan_weight * gan), float(cfg.dists_weight * dists)) > 1e-3 * float(expected)
    for name, value in [("l2", mse), ("gan", gan), ("dists", dists)]:
        assert float(terms[name]) == pytest.approx(float(value), rel=1e-5), name
    assert float(terms["total"]) == pytest.approx(float(expected), rel=1e-5)


def test_training_step_sees_grids_shifted_at_the_configured_rate(task, inputs):
    """The crops the training step feeds the generator (72 px compressed crops cut to 64): shifted at the
    configured rate (0.5) over 200 draws to offsets covering 0..8 on both axes; never with shift_prob=0."""
    from hydra.utils import instantiate

    from codiff_helpers import assert_grid_shifts_follow, crops_seen_by_training_step

    cfg, model = task
    offsets, shape = crops_seen_by_training_step(model, "forward_with_latent", size=72)
    assert shape == (64, 64) and cfg.shift_prob == 0.5
    assert_grid_shifts_follow(offsets, cfg.shift_prob, margin=8)
    never = instantiate(compose_train([*inputs, "model.shift_prob=0", "model.dists_weight=0"]).model)
    offsets, _ = crops_seen_by_training_step(never, "forward_with_latent", size=72, batches=5)
    assert_grid_shifts_follow(offsets, 0.0, margin=8)


def test_accumulated_gradient_equals_the_full_batch_gradient(inputs):
    """accumulate_grad_batches=2 over two micro-batches of 2 gives, at the optimizer step, the gradients of one
    batch of 4 (every loss term is a mean over the batch), for the generator and the discriminator. Gradient
    clipping is off so that it cannot hide a wrong scale; crops are taken as they are (no random offsets). DISTS
    is off: on the random VGG16 its features are tiny against its stabilising constants, which makes its
    gradient depend on float32 rounding (7e-4 relative between batch shapes); L2 and GAN terms remain."""
    import lightning.pytorch as pl
    from hydra.utils import instantiate
    from torch.utils.data import DataLoader

    g = torch.Generator().manual_seed(0)
    target = torch.rand(4, 3, 64, 64, generator=g)
    lq = (target + 0.1 * torch.randn(4, 3, 64, 64, generator=g)).clamp(0, 1)
    quality = torch.tensor([10, 30, 10, 30])

    class Grads(pl.Callback):
        def __init__(self):
            self.seen = []

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            params = [p for group in optimizer.param_groups for p in group["params"]]
            self.seen.append([p.grad.detach().clone() for p in params])

    def gradients(accumulate: int, state: dict | None):
        cfg = compose_train([*inputs, f"model.accumulate_grad_batches={accumulate}", "model.gradient_clip=null",
                             "model.train_crop=null", "model.lora_dir=null", "model.dists_weight=0"])
        model = instantiate(cfg.model)
        if state is not None:
            model.load_state_dict(state)
        initial = {k: v.clone() for k, v in model.state_dict().items()}
        size = 4 // accumulate
        batches = [{"input": lq[i:i + size], "target": target[i:i + size], "quality": quality[i:i + size]}
                   for i in range(0, 4, size)]
        grads = Grads()
        trainer = pl.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                             callbacks=[grads])
        trainer.fit(model, train_dataloaders=DataLoader(batches, batch_size=None))
        assert len(grads.seen) == 2  # one generator step, one discriminator step
        return grads.seen, initial

    accumulated, initial = gradients(2, None)
    full, _ = gradients(1, initial)
    for ours, reference in zip(accumulated, full):  # generator, discriminator
        assert len(ours) == len(reference) > 0 and all(a.shape == b.shape for a, b in zip(ours, reference))
        ours, reference = torch.cat([a.flatten() for a in ours]), torch.cat([b.flatten() for b in reference])
        assert reference.norm() > 0
        assert float((ours - reference).norm() / reference.norm()) < 1e-4  # float32 noise; a wrong scale gives ~1
