"""End-to-end training on tiny QGACs: every experiment under fast_dev_run, the stage 1 -> 2 -> 3 chain with
checkpoints, frozen Y weights, validation metrics against scikit-image, image grids and checkpoint rebuilds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from skimage.metrics import peak_signal_noise_ratio

from conftest import TINY, compose_train, run_train
from jpegrestore.metrics import psnrb, ssim
from jpegrestore.nn.qgac import DCTStats
from jpegrestore.tasks import export_interpolated
from jpegrestore.checkpoints import load_network
from jpegrestore.tasks.runner import build

TINY_D = ["model.discriminator.base_channels=8", "model.discriminator.num_layers=2"]


def _fit(overrides: list[str], out: Path):
    """Build from the composed config and fit. -> (cfg, datamodule, model, trainer)."""
    cfg = compose_train(overrides, out)
    datamodule, model, trainer = build(cfg)
    return cfg, datamodule, model, trainer


def _clone(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def chain(tmp_path_factory, random_minc_vgg16):
    """Stage 1, then stage 2 from its checkpoint, then stage 3 from stage 2; 2 batches each."""
    root = tmp_path_factory.mktemp("chain")
    runs = {}
    cfg, dm, model, trainer = _fit([*TINY, "experiment=qgac_stage1"], root / "s1")
    trainer.fit(model, datamodule=dm)
    runs["s1"] = (cfg, dm, model, trainer)

    s1_ckpt = root / "s1" / "checkpoints" / "last.ckpt"
    cfg, dm, model, trainer = _fit([*TINY, "experiment=qgac_stage2", f"model.y_checkpoint={s1_ckpt}"], root / "s2")
    model.initial_state = _clone(model.net)
    trainer.fit(model, datamodule=dm)
    runs["s2"] = (cfg, dm, model, trainer)

    s2_ckpt = root / "s2" / "checkpoints" / "last.ckpt"
    cfg, dm, model, trainer = _fit(
        [*TINY, *TINY_D, "experiment=qgac_stage3", f"model.generator_checkpoint={s2_ckpt}",
         f"model.vgg_weights={random_minc_vgg16}", "trainer.max_steps=4", "trainer.val_check_interval=2"], root / "s3")
    model.initial_state = {"net": _clone(model.net), "disc": _clone(model.discriminator)}
    trainer.fit(model, datamodule=dm)
    runs["s3"] = (cfg, dm, model, trainer)
    return root, runs


@pytest.mark.parametrize("name", ["quickstart", "qgac_stage1"])
def test_fast_dev_run(name, tmp_path):
    metrics = run_train([*TINY, f"experiment={name}", "+trainer.fast_dev_run=true"], tmp_path)
    assert "train/loss" in metrics and np.isfinite(metrics["train/loss"])
    assert "val/psnr_q10" in metrics and "val/psnr_jpeg_q10" in metrics


def test_fast_dev_run_stage2_and_stage3(chain, tmp_path, random_vgg16):
    """Stage 3 also runs with the ImageNet texture network (texture_network=imagenet_vgg16)."""
    root, _ = chain
    s1, s2 = root / "s1" / "checkpoints" / "last.ckpt", root / "s2" / "checkpoints" / "last.ckpt"
    metrics = run_train([*TINY, "experiment=qgac_stage2", f"model.y_checkpoint={s1}", "+trainer.fast_dev_run=true"],
                        tmp_path / "s2")
    assert np.isfinite(metrics["train/loss"]) and "val/ssim_q10" in metrics
    metrics = run_train([*TINY, *TINY_D, "experiment=qgac_stage3", f"model.generator_checkpoint={s2}",
                         "model.texture_network=imagenet_vgg16", f"model.vgg_weights={random_vgg16}",
                         "+trainer.fast_dev_run=true"], tmp_path / "s3")
    assert np.isfinite(metrics["train/d_loss"]) and np.isfinite(metrics["train/g_texture"])


def test_stage1_trains_luma_and_writes_run_dir(chain):
    root, runs = chain
    _, _, model, trainer = runs["s1"]
    assert trainer.global_step == 2 and model.net.color_net is None
    out = root / "s1"
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert len(list((out / "checkpoints").glob("best-*.ckpt"))) == 1
    assert (out / "csv" / "metrics.csv").is_file()
    grids = sorted((out / "images").glob("val_step*.png"))
    assert grids, "the validation grid is saved as PNG when no image logger is configured"
    from PIL import Image

    width, height = Image.open(grids[-1]).size
    assert height == 3 * 32 + 4 * 2  # JPEG / restored / original rows of 32 px crops, 2 px padding
    checkpoint = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    meta = checkpoint["jpegrestore"]
    assert meta["recipe"] == "qgac_stage1" and meta["network"]["color"] is False
    assert "stats" not in meta["network"] and meta["network"]["_target_"] == "jpegrestore.nn.qgac.QGAC"
    # dct_stats=null: the statistics were computed from the (colour) training stream at setup, written next to the
    # checkpoints, and carried by the checkpoint, chroma included
    assert meta["dct_stats"].startswith("computed from the training data")
    written = DCTStats.load(out / "dct_stats.json")
    carried = DCTStats(checkpoint["state_dict"]["net.stats_mean"], checkpoint["state_dict"]["net.stats_std"])
    assert written.allclose(carried, rtol=1e-6) and not carried.is_prior()
    prior_std = DCTStats.prior().std
    assert (carried.std[1:, 0, 0] / prior_std[1:, 0, 0]).max() < 0.4  # measured chroma DC spread: far below the prior
    assert carried.std[0, 0, 0] > 2 * carried.std[1:, 0, 0].max()  # and below luma's (the prior gives all three alike)


def test_stage2_keeps_frozen_y_weights(chain):
    root, runs = chain
    _, _, model, trainer = runs["s2"]
    assert trainer.global_step == 2 and model.recipe == "qgac_stage2"
    stage1 = load_network(root / "s1" / "checkpoints" / "last.ckpt")
    for key, value in stage1.y_net.state_dict().items():
        assert torch.equal(model.net.y_net.state_dict()[key], value), key
    assert torch.equal(model.net.stats_mean, stage1.stats_mean) and torch.equal(model.net.stats_std, stage1.stats_std)
    assert all(not p.requires_grad for p in model.net.y_net.parameters())
    model.train()
    assert not model.net.y_net.training and model.net.color_net.training
    changed = [k for k, v in model.net.color_net.state_dict().items()
               if not torch.equal(v, model.initial_state[f"color_net.{k}"])]
    assert changed, "the colour network must have been updated"
    assert model.trainer.optimizers[0].param_groups[0]["params"][0].requires_grad
    optimized = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert not optimized & {id(p) for p in model.net.y_net.parameters()}


def test_stage2_uses_the_stage1_runs_chroma_statistics(chain):
    """Regression: stage 2 once copied only the Y statistics and normalized Cb/Cr with the prior."""
    root, runs = chain
    stage1_run = DCTStats.load(root / "s1" / "dct_stats.json")
    for stage in ("s2", "s3"):
        net = runs[stage][2].net
        for component in (1, 2):  # Cb, Cr
            torch.testing.assert_close(net.stats_std[component].double(), stage1_run.std[component], rtol=1e-6, atol=0)
            torch.testing.assert_close(net.stats_mean[component].double(), stage1_run.mean[component],
                                       rtol=1e-6, atol=1e-9)
        checkpoint = torch.load(root / stage / "checkpoints" / "last.ckpt", weights_only=True)
        assert "inherited from" in checkpoint["jpegrestore"]["dct_stats"]
        carried_std = checkpoint["state_dict"]["net.stats_std"].double()
        torch.testing.assert_close(carried_std, stage1_run.std, rtol=1e-6, atol=0)


def test_stage2_rejects_missing_y_checkpoint(tmp_path):
    cfg = compose_train([*TINY, "experiment=qgac_stage2", f"model.y_checkpoint={tmp_path}/none.ckpt"], tmp_path)
    with pytest.raises(Exception, match="none.ckpt"):
        instantiate(cfg.model)


def test_validation_metrics_match_scikit_image(chain):
    root, runs = chain
    cfg, dm, model, trainer = runs["s2"]
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    net = load_network(root / "s2" / "checkpoints" / "last.ckpt")
    expected: dict[str, list[float]] = {}
    with torch.no_grad():
        for batch in dm.val_dataloader():
            batch = dm.on_after_batch_transfer(batch, 0)
            # scored like evaluate.py: the restored image rounded to 8 bits as the PNG writer does
            restored = torch.floor(net(batch["coeffs"]).clamp(0, 1) * 255 + 0.5) / 255
            for suffix, pred in (("", restored), ("_jpeg", batch["input"])):
                for i in range(batch["target"].shape[0]):
                    target, image = batch["target"][i : i + 1], pred[i : i + 1]
                    expected.setdefault(f"psnr{suffix}", []).append(
                        peak_signal_noise_ratio(target.double().numpy(), image.double().numpy(), data_range=1))
                    expected.setdefault(f"psnrb{suffix}", []).append(psnrb(image, target).item())
                    expected.setdefault(f"ssim{suffix}", []).append(ssim(image, target).item())
    assert len(expected["psnr"]) == 2  # the two val photos at QF 10
    for name, values in expected.items():
        assert metrics[f"val/{name}_q10"] == pytest.approx(np.mean(values), abs=1e-4), name
    assert metrics["val/psnrb_q10"] != pytest.approx(metrics["val/psnr_q10"], abs=1e-3)  # PSNR-B is not PSNR
    assert metrics["val/psnr"] == pytest.approx(metrics["val/psnr_q10"], abs=1e-6)
    assert metrics["data/skipped_files"] == 0


def test_load_network_rebuilds_the_trained_network(chain):
    root, runs = chain
    _, dm, model, _ = runs["s2"]
    net = load_network(root / "s2" / "checkpoints" / "last.ckpt")
    assert type(net) is type(model.net) and not net.training
    batch = dm.on_after_batch_transfer(next(iter(dm.val_dataloader())), 0)
    model.eval()
    with torch.no_grad():
        assert torch.equal(net(batch["coeffs"]), model.net(batch["coeffs"]))


def test_load_network_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        load_network(tmp_path / "missing.ckpt")
    bogus = tmp_path / "bogus.ckpt"
    torch.save({"state_dict": {}}, bogus)
    with pytest.raises(ValueError, match="bogus.ckpt"):
        load_network(bogus)


def test_stage3_gan_updates_both_networks(chain):
    root, runs = chain
    _, _, model, trainer = runs["s3"]
    assert not model.automatic_optimization
    assert trainer.global_step == 4  # 2 batches x (G step + D step)
    for part, module in (("net", model.net), ("disc", model.discriminator)):
        before = model.initial_state[part]
        assert any(not torch.equal(v, before[k]) for k, v in module.state_dict().items()), part
    checkpoint = torch.load(root / "s3" / "checkpoints" / "last.ckpt", weights_only=True)
    assert not any(k.startswith("texture_loss.") for k in checkpoint["state_dict"])
    assert any(k.startswith("discriminator.") for k in checkpoint["state_dict"])
    assert len(checkpoint["optimizer_states"]) == 2 and len(checkpoint["lr_schedulers"]) == 2
    assert checkpoint["jpegrestore"]["recipe"] == "qgac_stage3"
    assert checkpoint["jpegrestore"]["texture_network"] == "minc_vgg16"
    assert model.texture_loss.convention == "caffe_bgr"
    scheduler_lr = trainer.lr_scheduler_configs[0].scheduler.get_last_lr()[0]
    assert scheduler_lr < 1e-4  # cosine annealing stepped once per batch


def test_stage3_checkpoint_resumes_with_vgg(chain, random_minc_vgg16, tmp_path):
    root, _ = chain
    s2, s3 = root / "s2" / "checkpoints" / "last.ckpt", root / "s3" / "checkpoints" / "last.ckpt"
    metrics = run_train([*TINY, *TINY_D, "experiment=qgac_stage3", f"model.generator_checkpoint={s2}",
                         f"model.vgg_weights={random_minc_vgg16}", "trainer.max_steps=6", f"ckpt_path={s3}"], tmp_path)
    assert np.isfinite(metrics["train/g_loss"])


def test_export_interpolated_blends_stage2_and_stage3(chain, tmp_path):
    root, runs = chain
    s2, s3 = root / "s2" / "checkpoints" / "last.ckpt", root / "s3" / "checkpoints" / "last.ckpt"
    out = export_interpolated(s2, s3, tmp_path / "interp.ckpt", alpha=0.7)
    blended, psnr, gan = load_network(out), load_network(s2), load_network(s3)
    for key, value in blended.state_dict().items():
        expected = 0.3 * psnr.state_dict()[key] + 0.7 * gan.state_dict()[key]
        assert torch.allclose(value, expected, atol=1e-6), key
    assert any(not torch.equal(psnr.state_dict()[k], gan.state_dict()[k]) for k in psnr.state_dict())
    model = runs["s3"][2]
    out2 = model.export_interpolated(tmp_path / "interp2.ckpt", alpha=1.0)
    for key, value in load_network(out2).state_dict().items():
        assert torch.equal(value, model.net.state_dict()[key].cpu()), key


def test_texture_loss_requires_vgg_weights(chain, tmp_path, monkeypatch):
    root, _ = chain
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("JPEGRESTORE_WEIGHTS", raising=False)
    cfg = compose_train([*TINY, *TINY_D, "experiment=qgac_stage3",
                         f"model.generator_checkpoint={root / 's2' / 'checkpoints' / 'last.ckpt'}"], tmp_path)
    with pytest.raises(Exception, match="minc_vgg16.pth"):  # the paper's texture network is the default
        instantiate(cfg.model)


def test_evaluation_header_names_texture_network_grouping_and_statistics(chain, tmp_path):
    from hydra import compose, initialize_config_dir

    from conftest import CONF
    from jpegrestore.evaluation import evaluate_config

    root, _ = chain
    ckpt = root / "s3" / "checkpoints" / "last.ckpt"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=[f"ckpt={ckpt}", "qf=[10]", "metrics=[psnr]", "max_images=1",
                                                          "tile=0", "device=cpu", "progress=false", "comparisons=0"])
    evaluate_config(cfg, tmp_path / "out")
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "- recipe: qgac_stage3" in summary and "- texture network: minc_vgg16" in summary
    assert "- QGAC frequency grouping: isolated" in summary
    assert "- DCT statistics: computed from the training data at setup" in summary


def test_stage3_gan_resumes_midepoch_bit_identically(chain, random_minc_vgg16, tmp_path):
    """Manual optimization with two optimizers (global_step counts G and D steps): a run stopped mid-epoch and
    resumed from last.ckpt ends on the weights of both networks of an uninterrupted run."""
    root, _ = chain
    s2 = root / "s2" / "checkpoints" / "last.ckpt"
    # 8 crops / batch 2 = 4 batches per epoch; last.ckpt after batch 3 (global step 6), mid-epoch.
    base = [*TINY, *TINY_D, "experiment=qgac_stage3", f"model.generator_checkpoint={s2}",
            f"model.vgg_weights={random_minc_vgg16}", "data.samples_per_epoch=8", "trainer.val_check_interval=3"]

    def fit(out, max_steps, ckpt_path=None):
        _, dm, model, trainer = _fit([*base, f"trainer.max_steps={max_steps}"], out)
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
        return model

    full = fit(tmp_path / "full", 12)
    fit(tmp_path / "first", 6)
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 6
    resumed = fit(tmp_path / "resumed", 12, str(last))
    for part in ("net", "discriminator"):
        a, b = getattr(full, part).state_dict(), getattr(resumed, part).state_dict()
        for key, value in a.items():
            assert torch.equal(value, b[key]), f"{part}.{key}"
