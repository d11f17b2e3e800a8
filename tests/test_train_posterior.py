"""The posterior decoder's recipes through the training harness on tiny configs: the MMSE estimator, the GAN
(both variants) with the frozen MMSE loaded from its checkpoint, its conditional critic, resume with both
optimizers' state and the recorded MMSE file, a learning-rate schedule over generator iterations, the C term's
gradient reaching the generator, and clear errors for a missing or wrong MMSE checkpoint."""

from __future__ import annotations

import shutil

import lightning.pytorch as pl
import pytest
import torch
from hydra.utils import instantiate

from conftest import compose_train, run_train
from posterior_helpers import POSTERIOR_TINY, TINY_CRITIC, noisy_generator, write_random_vgg19
from jpegrestore import jpeg
from jpegrestore.checkpoints import load_network
from jpegrestore.tasks.runner import build


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny MMSE run, then a tiny general-variant GAN run against it (4 steps = 2 batches)."""
    root = tmp_path_factory.mktemp("posterior")
    vgg = write_random_vgg19(root / "vgg19-random.pth")
    run_train([*POSTERIOR_TINY, "experiment=posterior_mmse"], root / "mmse")
    mmse = root / "mmse" / "checkpoints" / "last.ckpt"
    gan_overrides = [*POSTERIOR_TINY, *TINY_CRITIC, "experiment=posterior_gan", f"model.mmse_checkpoint={mmse}",
                     f"model.vgg_weights={vgg}", "trainer.max_steps=4", "trainer.val_check_interval=2"]
    cfg = compose_train(gan_overrides, root / "gan")
    datamodule, model, trainer = build(cfg)
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    trainer.fit(model, datamodule=datamodule)
    return {"root": root, "vgg": vgg, "mmse": mmse, "gan": root / "gan" / "checkpoints" / "last.ckpt",
            "gan_overrides": gan_overrides, "model": model, "start": start}


def test_mmse_checkpoint_is_deterministic_and_trained(runs):
    saved = torch.load(runs["mmse"], weights_only=True)
    assert saved["jpegrestore"]["recipe"] == "posterior_mmse" and "evaluation_method" not in saved["jpegrestore"]
    net = load_network(runs["mmse"])
    assert net.stochastic is False
    image = torch.rand(1, 3, 24, 24)
    coeffs = jpeg.encode(image, quality=10, rounding="exact")
    assert torch.equal(net(coeffs), net(coeffs))  # zero noise maps


def test_gan_updates_generator_and_critic_and_keeps_frozen_parts_out(runs):
    model, start = runs["model"], runs["start"]
    for prefix in ("net.", "discriminator."):
        assert any(not torch.equal(v, start[k]) for k, v in model.state_dict().items() if k.startswith(prefix)), prefix
    # The frozen MMSE estimator did not move and equals its checkpoint.
    mmse_state = load_network(runs["mmse"]).state_dict()
    assert all(torch.equal(v, mmse_state[k]) for k, v in model.mmse.state_dict().items())
    saved = torch.load(runs["gan"], weights_only=True)
    assert not [k for k in saved["state_dict"] if k.startswith(("mmse.", "perceptual."))]
    meta = saved["jpegrestore"]
    assert meta["recipe"] == "posterior_gan" and meta["mmse_checkpoint"] == str(runs["mmse"])
    assert meta["evaluation_method"] == "jpegrestore.evaluation.posterior.PosteriorMethod"
    assert saved["hyper_parameters"]["mmse_checkpoint"] == str(runs["mmse"])
    assert len(saved["optimizer_states"]) == 2 and saved["global_step"] == 4


class StartRecorder(pl.Callback):
    """Both optimizers' Adam state at the start of fitting."""

    def on_train_start(self, trainer, pl_module):
        self.step = trainer.global_step
        self.exp_avg = [[s["exp_avg"].clone() for s in opt.state.values()] for opt in trainer.optimizers]


def test_gan_resumes_with_both_optimizers_state(runs, tmp_path):
    cfg = compose_train([*runs["gan_overrides"], "trainer.max_steps=8", f"ckpt_path={runs['gan']}"], tmp_path)
    datamodule, model, trainer = build(cfg)
    recorder = StartRecorder()
    trainer.callbacks.append(recorder)
    trainer.fit(model, datamodule=datamodule, ckpt_path=str(runs["gan"]))
    saved = torch.load(runs["gan"], weights_only=True)
    assert recorder.step == 4 and trainer.global_step == 8
    for index in (0, 1):  # generator, critic
        expected = [s["exp_avg"] for s in saved["optimizer_states"][index]["state"].values()]
        assert len(expected) == len(recorder.exp_avg[index]) > 0
        assert all(torch.equal(a, b) for a, b in zip(expected, recorder.exp_avg[index]))
    assert model.mmse is not None  # rebuilt from model.mmse_checkpoint, not from our checkpoint


def test_critic_judges_image_and_jpeg_pairs(runs, monkeypatch):
    """The default critic is conditional: it is built for 6 channels and fed [image, JPEG] along channels."""
    model = runs["model"]
    assert model.conditional_critic and model.discriminator.in_channels == 6
    image = torch.rand(2, 3, 32, 32)
    coeffs = jpeg.encode(image, quality=10, rounding="exact")
    batch = {"target": image, "input": jpeg.decode(coeffs, rounding="exact"), "coeffs": coeffs}
    seen = []
    monkeypatch.setattr(model.discriminator, "forward", lambda x: seen.append(x) or x.mean((1, 2, 3)))
    model.discriminator_loss(batch, model.draw(batch, 2))
    real, fake = seen
    assert torch.equal(real[:, :3], image) and torch.equal(real[:, 3:], batch["input"])
    assert fake.shape == (4, 6, 32, 32) and torch.equal(fake[:, 3:], batch["input"].repeat(2, 1, 1, 1))


def test_critic_channels_must_match_its_input(tmp_path):
    cfg = compose_train([*POSTERIOR_TINY, *TINY_CRITIC, "experiment=posterior_gan", "model.variant=ffhq",
                         "model.discriminator.in_channels=3"], tmp_path)
    with pytest.raises(Exception, match=r"in_channels=3.*conditional_critic=True sees 6"):
        instantiate(cfg.model)
    cfg = compose_train([*POSTERIOR_TINY, *TINY_CRITIC, "experiment=posterior_gan", "model.variant=ffhq",
                         "model.conditional_critic=false"], tmp_path)
    assert instantiate(cfg.model).discriminator.in_channels == 3


def test_resume_takes_the_recorded_mmse_file_and_refuses_another(runs, tmp_path):
    without = [o for o in runs["gan_overrides"] if not o.startswith("model.mmse_checkpoint=")]
    _, model, _ = build(compose_train(without, tmp_path / "a"), str(runs["gan"]))
    assert model.mmse_checkpoint == str(runs["mmse"]) and model.mmse is not None
    other = shutil.copy(runs["mmse"], tmp_path / "other_mmse.ckpt")
    cfg = compose_train([*without, f"model.mmse_checkpoint={other}"], tmp_path / "b")
    with pytest.raises(ValueError, match=rf"model.mmse_checkpoint={other} .*\({runs['mmse']}\)"):
        build(cfg, str(runs["gan"]))
    same = compose_train([*without, f"model.mmse_checkpoint={runs['mmse']}"], tmp_path / "c")
    assert build(same, str(runs["gan"]))[1].mmse_checkpoint == str(runs["mmse"])


class LearningRates(pl.Callback):
    """The generator's learning rate after every batch."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.values.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_schedule_over_generator_iterations_ends_at_its_minimum(tmp_path):
    """trainer.max_steps=8 is 4 generator iterations; T_max = ${jr_floordiv:${trainer.max_steps},2} (the override the
    config documents) reaches eta_min after the last one, following the cosine of 4 steps."""
    import math

    schedule = ('model.scheduler={_target_: torch.optim.lr_scheduler.CosineAnnealingLR, '
                'T_max: "${jr_floordiv:${trainer.max_steps},2}", eta_min: 1e-6}')
    cfg = compose_train([*POSTERIOR_TINY, *TINY_CRITIC, "experiment=posterior_gan", "model.variant=ffhq",
                         "model.draws=1", "trainer.max_steps=8", "trainer.val_check_interval=100", schedule], tmp_path)
    assert cfg.model.scheduler.T_max == 4
    datamodule, model, trainer = build(cfg)
    recorder = LearningRates()
    trainer.callbacks.append(recorder)
    trainer.fit(model, datamodule=datamodule)
    lr0 = cfg.model.optimizer.lr
    expected = [1e-6 + (lr0 - 1e-6) * (1 + math.cos(math.pi * k / 4)) / 2 for k in range(1, 5)]
    assert trainer.global_step == 8 and recorder.values == pytest.approx(expected, rel=1e-9)
    assert recorder.values[-1] == pytest.approx(1e-6)



def test_schedule_over_max_steps_is_warned_about(tmp_path, caplog):
    """T_max = trainer.max_steps would stop halfway (two steps per batch): configure_optimizers says so."""
    schedule = ("model.scheduler={_target_: torch.optim.lr_scheduler.CosineAnnealingLR, "
                "T_max: '${trainer.max_steps}'}")
    for t_max, warned in ((schedule, True), (schedule.replace("trainer.max_steps", "jr_floordiv:${trainer.max_steps},2"),
                                              False)):
        cfg = compose_train([*POSTERIOR_TINY, *TINY_CRITIC, "experiment=posterior_gan", "model.variant=ffhq",
                             "trainer.max_steps=8", t_max], tmp_path)
        _, model, trainer = build(cfg)
        model._trainer = trainer  # as trainer.fit attaches it
        caplog.clear()
        with caplog.at_level("WARNING", logger="jpegrestore.tasks.base"):
            model.configure_optimizers()
        assert ("it will stop halfway" in caplog.text) is warned


def test_consistency_gradient_reaches_the_generator(runs):
    model = runs["model"]
    model.net.load_state_dict(noisy_generator().state_dict())  # outputs far from consistent
    image = torch.rand(2, 3, 32, 32)
    coeffs = jpeg.encode(image, quality=torch.tensor([10, 50]), rounding="exact")
    batch = {"target": image, "input": jpeg.decode(coeffs, rounding="exact"), "coeffs": coeffs,
             "quality": torch.tensor([10, 50])}
    terms = model.generator_loss(batch, model.draw(batch, 2))
    assert terms["c"] > 0
    params = [p for p in model.net.parameters()]
    grads = torch.autograd.grad(terms["c"], params, allow_unused=True)
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0
    assert grads[-1] is not None and grads[-1].abs().sum() > 0  # the output layer's bias


def test_ffhq_variant_needs_no_mmse_or_vgg(tmp_path):
    metrics = run_train([*POSTERIOR_TINY, *TINY_CRITIC, "experiment=posterior_gan", "model.variant=ffhq",
                         "model.draws=1", "trainer.max_steps=2"], tmp_path)
    assert "val/psnr" in metrics
    logged = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "train/g_fm" in logged and "train/g_c" in logged and "train/g_sm" not in logged


def test_general_variant_errors_name_the_mmse_key_and_recipe(runs, tmp_path):
    def model(*extra):  # Hydra wraps the ValueError; its message is kept
        return instantiate(compose_train([*POSTERIOR_TINY, *TINY_CRITIC, "experiment=posterior_gan", *extra]).model)

    with pytest.raises(Exception, match="model.mmse_checkpoint"):
        model()
    with pytest.raises(Exception, match=r"last.ckpt was written by recipe 'posterior_gan'"):
        model(f"model.mmse_checkpoint={runs['gan']}", f"model.vgg_weights={runs['vgg']}")
    with pytest.raises(Exception, match="model.variant"):
        model("model.variant=faces")


def test_lambda_c_schedule_is_piecewise_linear():
    from jpegrestore.tasks.schedules import piecewise_linear

    points = [[0, 1.0], [100, 5.0], [200, 5.0]]
    assert [piecewise_linear(points, s) for s in (-5, 0, 25, 100, 150, 10_000)] == [1.0, 1.0, 2.0, 5.0, 5.0, 5.0]
    assert piecewise_linear([[0, 3.0]], 7) == 3.0
    with pytest.raises(ValueError, match="ascending"):
        piecewise_linear([[10, 1.0], [5, 2.0]], 0)
    with pytest.raises(ValueError, match="at least one"):
        piecewise_linear([], 0)


def _two_quality_batch(seed: int = 0) -> dict:
    """Two 32x32 photo crops JPEG'd at QF 10 and QF 50 (so the two inputs have different tables)."""
    from jpeg_helpers import photo, to_tensor

    target = torch.cat([to_tensor(photo("astronaut", 32, 32, 100 + 40 * i, 150 + 40 * seed)) for i in range(2)])
    coeffs = jpeg.encode(target, quality=torch.tensor([10, 50]), rounding="exact")
    return {"target": target, "input": jpeg.decode(coeffs, rounding="exact"), "coeffs": coeffs,
            "quality": torch.tensor([10, 50])}


def _eight_bit_draws(batch: dict, draws: int = 2) -> torch.Tensor:
    """[P, B, 3, H, W] draws near the inputs (an offset shared by the draws and a smaller one of each), on 8-bit
    values (so libjpeg can compress them as they are)."""
    g = torch.Generator().manual_seed(3)
    shared = 0.1 * torch.randn(batch["input"].shape, generator=g)
    own = 0.01 * torch.randn(draws, *batch["input"].shape, generator=g)
    return ((batch["input"] + shared + own).clamp(0, 1) * 255).round() / 255


def test_generator_total_is_eq10_with_the_configured_weights(runs, tmp_path):
    """Eq. 10 written out: V + lambda_C C + lambda_FM FM + lambda_P P + lambda_SM SM, each term recomputed here
    from its definition (Eq. 4-7) and each weight read from the composed config; lambda_C from a steep ramp at
    generator iteration global_step // 2 (two optimizer steps per batch). Every weighted term is large enough that
    leaving one out, swapping two weights or ramping over optimizer steps changes the total."""
    from unittest import mock

    import torch.nn.functional as F
    from jpeg_helpers import pillow_decode, pillow_jpeg, to_tensor, to_uint8
    from jpegrestore.tasks.posterior import PosteriorGAN

    vgg = write_random_vgg19(tmp_path / "vgg19-he.pth", he_init=True)  # P well above zero
    cfg = compose_train([*runs["gan_overrides"], "model.lambda_c=[[0,1.0],[10,5.0]]", f"model.vgg_weights={vgg}"]).model
    model = instantiate(cfg).eval()
    batch = _two_quality_batch()
    samples = _eight_bit_draws(batch)
    with mock.patch.object(PosteriorGAN, "global_step", new_callable=mock.PropertyMock, return_value=6):
        with torch.no_grad():
            terms = model.generator_loss(batch, samples)
    p, flat = samples.shape[0], samples.flatten(0, 1)
    target = batch["target"]
    with torch.no_grad():
        gan = F.softplus(-model.discriminator(flat)).mean()
        fm = (target - samples.mean(0)).square().mean()
        mmse = model.mmse.generate(batch["input"], batch["coeffs"].qt, noise=False)
        sm = ((target - mmse).square() - samples.var(0, correction=1)).abs().mean()
        perceptual = model.perceptual(flat, target.repeat(p, 1, 1, 1))
    # C (Eq. 4): each draw compressed by libjpeg (Pillow) at its own input's quality, against the input.
    layout = batch["coeffs"].subsampling
    recompressed = torch.stack([torch.cat([
        to_tensor(pillow_decode(pillow_jpeg(to_uint8(samples[d, b:b + 1]), int(q), layout)))
        for b, q in enumerate(batch["quality"])]) for d in range(p)])
    c = (batch["input"] - recompressed).square().mean()
    lambda_c = 1.0 + (5.0 - 1.0) * (6 // 2) / 10  # the ramp at generator iteration 3
    weighted = {"gan": gan, "c": lambda_c * c, "fm": cfg.lambda_fm * fm, "p": cfg.lambda_p * perceptual,
                "sm": cfg.lambda_sm * sm}
    assert cfg.lambda_fm != cfg.lambda_sm and cfg.lambda_p != cfg.lambda_fm
    for name, expected in [("gan", gan), ("c", c), ("fm", fm), ("sm", sm), ("p", perceptual)]:
        assert float(terms[name]) == pytest.approx(float(expected), rel=1e-4), name
    total = sum(weighted.values())
    assert min(float(v) for v in weighted.values()) > 1e-3 * float(total)  # no term hides under the tolerance
    assert float(terms["total"]) == pytest.approx(float(total), rel=1e-5)


def test_consistency_uses_each_inputs_own_tables(runs):
    """Two inputs at QF 10 and QF 50 in one batch: C equals the mean of C over each input alone, and it is far
    from the C of the same draws measured with one input's tables for both."""
    model = runs["model"].eval()
    batch = _two_quality_batch(seed=1)
    samples = _eight_bit_draws(batch)
    with torch.no_grad():
        both = float(model.generator_loss(batch, samples)["c"])
        alone = []
        for b in range(2):
            single = {"target": batch["target"][b:b + 1], "input": batch["input"][b:b + 1],
                      "coeffs": batch["coeffs"][b:b + 1], "quality": batch["quality"][b:b + 1]}
            alone.append(float(model.generator_loss(single, samples[:, b:b + 1])["c"]))
        swapped = batch["coeffs"][[1, 0]]
        wrong = jpeg.compress(samples.flatten(0, 1), tables=swapped.qt.repeat(2, 1, 1, 1), subsampling="4:2:0")
        wrong_c = float((batch["input"].repeat(2, 1, 1, 1) - wrong).square().mean())
    assert both == pytest.approx(sum(alone) / 2, rel=1e-5)
    assert abs(wrong_c - both) > 0.2 * both
