"""Every recipe trains under ``trainer.precision=bf16-mixed`` (CPU autocast, tiny widths): the networks run in
bfloat16, the parts each recipe keeps in float32 (losses, JPEG operator, frozen and loss networks; see the README's
precision table) do, losses are finite, checkpoints hold float32 tensors, the run resumes, and evaluate.py restores
from the checkpoint with ``method.precision=bf16``. Also: the posterior GAN's consistency term C computed as
``training_step`` computes it (inside Lightning's autocast context) equals its float32 value on the same draws."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import CONF, TINY, compose_train, run_train
from jpegrestore.tasks.runner import build
from test_resume_every_recipe import RECIPES as RESUME_RECIPES
from test_train import TINY_D

BF16 = ["trainer.precision=bf16-mixed"]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
#: trainer overrides that put a run on each device
ON_DEVICE = {"cpu": [], "cuda": ["trainer.accelerator=gpu", "trainer.devices=1"]}


def _qgac_stage3(root: Path, random_vgg16: Path) -> list[str]:
    stage2 = root / "stage2" / "checkpoints" / "last.ckpt"
    if not stage2.exists():
        run_train(RESUME_RECIPES["qgac_stage2"][0](root, random_vgg16), root / "stage2")
    return [*TINY, *TINY_D, "experiment=qgac_stage3", f"model.generator_checkpoint={stage2}",
            "model.texture_network=imagenet_vgg16",
            f"model.vgg_weights={random_vgg16}"]


# recipe -> (overrides given a scratch folder and a random VGG16, optimizer steps per batch)
RECIPES = {
    "quickstart": RESUME_RECIPES["quickstart"],
    "qgac_stage1": (lambda root, vgg: [*TINY, "experiment=qgac_stage1"], 1),
    "qgac_stage2": RESUME_RECIPES["qgac_stage2"],
    "qgac_stage3": (_qgac_stage3, 2),
    "codiff_stage1": RESUME_RECIPES["codiff_stage1"],
    "codiff_stage2": RESUME_RECIPES["codiff_stage2"],
    "posterior_mmse": RESUME_RECIPES["posterior_mmse"],
    "posterior_gan": RESUME_RECIPES["posterior_gan"],
    "ddpm_prior": RESUME_RECIPES["ddpm_prior"],
}
#: module prefixes (of the LightningModule) that must compute in float32 during training under autocast.
FLOAT32_PARTS = {
    "qgac_stage3": ("texture_loss.",),
    "codiff_stage2": ("net.cave.", "discriminator.", "dists_loss."),
    "posterior_gan": ("perceptual.",),
}
#: how evaluate.py restores with each recipe's checkpoint (None: not a restorer).
EVALUATION = {"codiff_stage1": None, "ddpm_prior": ["method=ddrm_jpeg", "method.prior=${ckpt}", "method.steps=2"]}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Scratch folder of the prerequisites (stage-1/2 checkpoints, tiny SD, ...) and one 64x64 photo crop."""
    from skimage import data
    from PIL import Image

    root = tmp_path_factory.mktemp("mixed_precision_inputs")
    (root / "photo").mkdir()
    Image.fromarray(data.chelsea()[100:164, 200:264]).save(root / "photo" / "chelsea.png")
    return root


class OutputDtypes:
    """Forward hooks on every conv / linear layer of a module: the dtypes each produced (training and validation)."""

    def __init__(self, module: nn.Module) -> None:
        self.seen: dict[str, set[torch.dtype]] = {}
        for name, layer in module.named_modules():
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                layer.register_forward_hook(self._hook(name))

    def _hook(self, name: str):
        def record(layer, args, output):
            if isinstance(output, torch.Tensor):
                self.seen.setdefault(name, set()).add(output.dtype)
        return record

    def dtypes(self, prefixes: tuple[str, ...], exclude: tuple[str, ...] = ()) -> set[torch.dtype]:
        return {d for name, ds in self.seen.items() if name.startswith(prefixes) and not name.startswith(exclude)
                for d in ds}


def _fit(overrides: list[str], out: Path, ckpt_path: Path | None = None):
    datamodule, model, trainer = build(compose_train(overrides, out))
    hooks = OutputDtypes(model)
    trainer.fit(model, datamodule=datamodule, ckpt_path=None if ckpt_path is None else str(ckpt_path))
    return model, trainer, hooks


def _assert_float32_checkpoint(path: Path) -> dict:
    saved = torch.load(path, weights_only=False)
    wrong = {k: v.dtype for k, v in saved["state_dict"].items() if v.is_floating_point() and v.dtype != torch.float32}
    assert not wrong, f"non-float32 tensors in {path.name}: {wrong}"
    for optimizer in saved["optimizer_states"]:
        for state in optimizer["state"].values():
            for key, value in state.items():
                if torch.is_tensor(value) and value.is_floating_point() and key != "step":
                    assert value.dtype == torch.float32, (key, value.dtype)
    return saved


#: recipes that need prerequisite runs or a tiny Stable Diffusion: run with the slow tests.
SLOW = ("qgac_stage1", "qgac_stage2", "qgac_stage3", "codiff_stage2", "posterior_gan")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("recipe", [pytest.param(r, marks=pytest.mark.slow) if r in SLOW else r for r in RECIPES])
def test_recipe_trains_in_bf16_mixed_resumes_and_evaluates(recipe, device, inputs, tmp_path, random_vgg16):
    from hydra import compose, initialize_config_dir

    from jpegrestore.evaluation import evaluate_config

    make_overrides, steps_per_batch = RECIPES[recipe]
    overrides = [*make_overrides(inputs, random_vgg16), *BF16, *ON_DEVICE[device],
                 f"trainer.val_check_interval={steps_per_batch}"]
    model, trainer, hooks = _fit([*overrides, f"trainer.max_steps={steps_per_batch}"], tmp_path / "run")
    losses = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/") and "loss" in k}
    assert losses and all(math.isfinite(v) for v in losses.values()), losses

    # The networks ran in bfloat16, the parts kept in float32 did not.
    float32_parts = FLOAT32_PARTS.get(recipe, ())
    assert torch.bfloat16 in hooks.dtypes(("net.",), exclude=float32_parts), hooks.seen
    for part in float32_parts:
        assert hooks.dtypes((part,)) == {torch.float32}, (part, hooks.dtypes((part,)))

    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert _assert_float32_checkpoint(last)["global_step"] == steps_per_batch

    _, resumed, _ = _fit([*overrides, f"trainer.max_steps={2 * steps_per_batch}"], tmp_path / "resumed", last)
    assert resumed.global_step == 2 * steps_per_batch
    assert all(math.isfinite(float(v)) for k, v in resumed.callback_metrics.items() if k.startswith("train/"))
    _assert_float32_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.ckpt")

    evaluation = EVALUATION.get(recipe, [])
    if evaluation is None:
        return
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=[
            f"ckpt={last}", "qf=[10]", "metrics=[psnr]", "max_images=1", f"device={device}", "progress=false",
            "comparisons=0", f"data.source={inputs / 'photo'}", *evaluation, "method.precision=bf16"])
    result = evaluate_config(cfg, tmp_path / "eval")
    psnr = [row["psnr"] for row in result.rows if row["method"] == result.method]
    assert psnr and all(math.isfinite(v) for v in psnr), psnr


@pytest.mark.parametrize("device", DEVICES)
def test_posterior_consistency_term_under_bf16_mixed_equals_float32(inputs, device):
    from jpegrestore.losses import consistency_loss

    from posterior_helpers import POSTERIOR_TINY, TINY_CRITIC, write_posterior_checkpoint

    noisy = write_posterior_checkpoint(inputs / "noisy_generator.ckpt")  # visible noise: C is far from 0
    overrides = [*POSTERIOR_TINY, *TINY_CRITIC, "experiment=posterior_gan", "model.variant=ffhq", *BF16,
                 f"model.generator_checkpoint={noisy}", *ON_DEVICE[device]]
    datamodule, model, trainer = build(compose_train(overrides, inputs / f"c_term_{device}"))
    datamodule.setup("fit")
    raw = {k: v.to(device) if torch.is_tensor(v) else v for k, v in next(iter(datamodule.train_dataloader())).items()}
    batch = datamodule.on_after_batch_transfer(raw, 0)  # compressed on the device, as in training
    model.to(device)
    coeffs, p = batch["coeffs"], model.draws
    hooks = OutputDtypes(model.net)
    with trainer.precision_plugin.train_step_context():  # the autocast Lightning wraps training_step in
        samples = model.draw(batch, p, torch.Generator(device=device).manual_seed(0))
        mixed = model.generator_loss(batch, samples)["c"]
    assert torch.bfloat16 in hooks.dtypes(("",)), "the generator did not run in reduced precision"
    reference = consistency_loss(samples.float().flatten(0, 1), batch["input"].repeat(p, 1, 1, 1),
                                 coeffs.qt.repeat(p, 1, 1, 1), coeffs.subsampling)
    assert mixed.dtype == torch.float32 and reference > 1e-4
    assert torch.equal(mixed, reference), (float(mixed), float(reference))
