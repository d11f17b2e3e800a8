"""GPU acceptance check: every training recipe, the inference timings, the JPEG operator beside kornia and its
CUDA-vs-CPU bits, offline, with random weights at the papers' sizes, in one table.

    python bench/gpu_check.py [--out DIR] [--devices N] [--batch-size N] [--only TEXT] [--work DIR]
    python bench/gpu_check.py --tiny     # the same code at tiny sizes (on the CPU when there is no GPU)
    make gpu-check ARGS="--out outputs/gpu_check"

Without CUDA (and without ``--tiny``) it says so and exits 0. Sizes come from one table, :data:`SETTINGS`
("full": the papers', "tiny": seconds on a CPU); everything else is the same code. Rows, in order:

1. ``bit-exact``: the exact JPEG operator (encode, decode, ste compress forward, float_decode, and project at the
   first quality) on the device against the CPU, on six of the sample photos (scikit-image's, cropped to at most
   500x700, sizes not multiples of 16 among them) at q 10 and 90, 4:2:0, 4:4:4 and gray: every value must be
   identical.
2. ``jpeg op``: forward + backward of a 16x3x256x256 batch, ours (each rounding mode) beside kornia's
   ``jpeg_codec_differentiable`` (``bench/jpeg_op.py``'s functions), best of ``repeats`` after a warm-up.
3. ``inference``: one JPEG through the evaluation code (best of ``repeats`` after ``warmup``): QGAC and the posterior
   decoder at 512x512 (fp32), CODiff at 1024x1024 (``CODiffMethod``: latent tiles, colour fix; fp16 autocast and
   fp32; paper 0.57 s on an A6000), DDRM-JPEG at 256x256 on guided-diffusion 256x256 uncond loaded by
   ``load_prior`` in fp16 and fp32 (seconds per network evaluation of the whole sampler).
4. ``train``: ``train.py experiment=<recipe>`` (the composed Hydra config and ``jpegrestore.tasks.runner.train``)
   for ``warmup + repeats`` batches at the recipe's precision and per-GPU batch (its total batch / GPUs, at most
   16 so that one GPU holds every recipe; ``--batch-size`` sets it), on the bundled sample photos, on every
   visible GPU (``trainer=ddp`` through ``train.py`` subprocesses when there are several); stage 2/3 recipes
   start from the checkpoints of the runs before them. Reports seconds per batch
   (one optimizer step; GAN recipes: one generator and one discriminator step), images/s over all GPUs, peak
   memory per GPU (``jpegrestore.utils.step_timer.StepTimer``).

Each row's failure is caught and shown as a failed row (the error in the note); the table is printed and written
to ``DIR/gpu_check.md`` and ``DIR/gpu_check.json``, and the exit status is 1 when any row failed.
Random weights are drawn once per run into ``--work`` (default: a temporary folder, removed at the end); the full
run needs about 16 GB there (Stable Diffusion, guided-diffusion, QGAC checkpoints).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import jpeg_op  # noqa: E402  (the sibling bench)
from codiff_cost import PAPER as CODIFF_PAPER  # noqa: E402
from codiff_cost import SD21_UNET, SD21_VAE  # noqa: E402

#: Wall-time budget of the full run on one H100-class GPU.
BUDGET_SECONDS = 8 * 60
#: A training subprocess (several GPUs) that runs longer is killed and its row fails.
TRAIN_TIMEOUT = 15 * 60
#: reduced and full precision of the inference timings (CODiffMethod's precision names)
HALF, FULL = "16", "32"
DTYPES = {HALF: torch.float16, FULL: torch.float32}


@dataclass(frozen=True)
class Recipe:
    """How a recipe runs in the check: ``upstream`` = (override, recipe whose last.ckpt it takes), ``files`` =
    (override, random weights of :class:`Workspace`), ``extra`` overrides; GAN recipes take 2 optimizer steps per
    batch (``trainer.max_steps`` counts both)."""

    steps_per_batch: int = 1
    upstream: tuple[tuple[str, str], ...] = ()
    files: tuple[tuple[str, str], ...] = ()
    extra: tuple[str, ...] = ()


#: The papers' recipes (conf/experiment/<name>.yaml), in the order they run (stage 2/3 after their inputs).
RECIPES: dict[str, Recipe] = {
    "qgac_stage1": Recipe(extra=("model.dct_stats_batches=2",)),
    "qgac_stage2": Recipe(upstream=(("model.y_checkpoint", "qgac_stage1"),)),
    # the MINC VGG16 of the paper has VGG16's shape; a random torchvision-layout VGG16 stands in
    "qgac_stage3": Recipe(2, upstream=(("model.generator_checkpoint", "qgac_stage2"),),
                          files=(("model.vgg_weights", "vgg16"),), extra=("model.texture_network=imagenet_vgg16",)),
    "codiff_stage1": Recipe(),
    "codiff_stage2": Recipe(2, upstream=(("model.cave_checkpoint", "codiff_stage1"),),
                            files=(("model.pretrained", "stable_diffusion"), ("model.dists_weights", "dists"))),
    "posterior_mmse": Recipe(),
    "posterior_gan": Recipe(2, upstream=(("model.mmse_checkpoint", "posterior_mmse"),),
                            files=(("model.vgg_weights", "vgg19"),)),
    "ddpm_prior": Recipe(extra=("model.save_diffusers=null",)),
}


@dataclass(frozen=True)
class Settings:
    """Sizes of one check run (everything else is shared). Networks are conf/model/network/<name>.yaml."""

    warmup: int                                  # untimed calls / training batches first
    repeats: int                                 # timed calls / training batches
    train_batch: int | None                      # per-process training batch; None: the recipe's total / GPUs,
    max_train_batch: int                         # ... at most this (one GPU must hold every recipe)
    train: dict[str, tuple[str, ...]]            # recipe -> size overrides (none: the recipe as written)
    stable_diffusion: dict[str, dict]            # vae / unet / scheduler constructor arguments
    cave: str
    qgac: str
    posterior: str
    guided_diffusion: dict[str, Any]
    codiff_size: int
    ddrm_size: int
    ddrm_steps: int
    decoder_size: int
    op_batch: tuple[int, int, int, int]
    photo_crop: tuple[int, int]                  # photos are cropped to at most this (height, width)
    photo_names: tuple[str, ...] | None          # sample photos (jpegrestore.data.sources); None: all of them
    qualities: tuple[int, ...]


def _tiny_train() -> dict[str, tuple[str, ...]]:
    qgac = ("model/network=qgac_tiny", "data.crop_size=32", "data.val_crop_size=32")
    posterior = ("model/network=posterior_tiny", "data.crop_size=32", "data.val_crop_size=32")
    return {
        "qgac_stage1": qgac, "qgac_stage2": qgac,
        "qgac_stage3": (*qgac, "model.discriminator.base_channels=4", "model.discriminator.max_channels=8"),
        "codiff_stage1": ("model/network=cave_tiny", "data.crop_size=40", "model.train_crop=32",
                          "data.val_crop_size=32"),
        # 48 px: the latent discriminator's smallest input
        "codiff_stage2": ("model/network=codiff_tiny", "data.crop_size=56", "model.train_crop=48",
                          "data.val_crop_size=48"),
        "posterior_mmse": posterior,
        "posterior_gan": (*posterior, "model.discriminator.base_channels=4", "model.discriminator.stages=3",
                          "model.draws=2"),
        "ddpm_prior": ("model/network=ddpm_unet_tiny", "data.crop_size=32", "data.val_crop_size=32",
                       "model.val_timesteps=[20,400]"),
    }


def _sd21_configs() -> dict[str, dict]:
    from jpegrestore.nn.codiff.pretrained import tiny_configs

    return {"vae": dict(SD21_VAE), "unet": dict(SD21_UNET), "scheduler": tiny_configs()["scheduler"]}


def _tiny_sd_configs() -> dict[str, dict]:
    from jpegrestore.nn.codiff.pretrained import tiny_configs

    return tiny_configs()


def _guided_diffusion_256() -> dict[str, Any]:
    from jpegrestore.nn.guided_diffusion import GUIDED_DIFFUSION_256_UNCOND

    return dict(GUIDED_DIFFUSION_256_UNCOND)


TINY_GUIDED_DIFFUSION = dict(
    image_size=32, in_channels=3, model_channels=32, out_channels=6, num_res_blocks=1, attention_resolutions=(16,),
    channel_mult=(1, 2), num_head_channels=16, use_scale_shift_norm=True, resblock_updown=True,
)

#: "full": the papers' sizes (warm-up 1, timed 3); "tiny": the same checks in seconds on a CPU.
SETTINGS: dict[str, Callable[[], Settings]] = {
    "full": lambda: Settings(
        warmup=1, repeats=3, train_batch=None, max_train_batch=16, train={name: () for name in RECIPES},
        stable_diffusion=_sd21_configs(), cave="cave", qgac="qgac", posterior="posterior",
        guided_diffusion=_guided_diffusion_256(), codiff_size=1024, ddrm_size=256, ddrm_steps=3, decoder_size=512,
        op_batch=(16, 3, 256, 256), photo_crop=(500, 700),
        photo_names=("rocket", "retina", "chelsea", "coffee", "astronaut", "camera"), qualities=(10, 90),
    ),
    "tiny": lambda: Settings(
        warmup=0, repeats=1, train_batch=2, max_train_batch=2, train=_tiny_train(),
        stable_diffusion=_tiny_sd_configs(), cave="cave_tiny", qgac="qgac_tiny", posterior="posterior_tiny",
        guided_diffusion=TINY_GUIDED_DIFFUSION, codiff_size=48, ddrm_size=32, ddrm_steps=2, decoder_size=32,
        op_batch=(2, 3, 32, 32), photo_crop=(37, 53), photo_names=("chelsea", "camera"), qualities=(10,),
    ),
}


@dataclass
class Row:
    """One line of the table. ``seconds`` is in ``unit``; memory per GPU in GiB (empty off CUDA)."""

    part: str
    name: str
    precision: str
    status: str = "ok"
    seconds: float | None = None
    unit: str = ""
    images_per_second: float | None = None
    peak_memory_gib: list[float] = field(default_factory=list)
    note: str = ""


@dataclass
class Check:
    """A row to run: ``run()`` returns the :class:`Row` fields it measured, or raises."""

    part: str
    name: str
    precision: str
    run: Callable[[], dict[str, Any]]  # -> Row fields to set


class Workspace:
    """Scratch folder of one check: random weights (written on first use) and the training runs."""

    def __init__(self, root: Path, settings: Settings, device: torch.device) -> None:
        self.root, self.settings, self.device = root, settings, device
        self.checkpoints: dict[str, Path] = {}
        self._files: dict[str, Path] = {}

    def file(self, kind: str) -> Path:
        """Path of the random weights ``kind`` (stable_diffusion, dists, vgg16, vgg19, guided_diffusion)."""
        if kind not in self._files:
            self._files[kind] = self._write(kind, self.root / "weights" / kind)
        return self._files[kind]

    def _write(self, kind: str, path: Path) -> Path:
        from jpegrestore.utils import random_weights

        if kind == "stable_diffusion":
            from jpegrestore.nn.codiff.pretrained import write_random_stable_diffusion

            return write_random_stable_diffusion(path, self.settings.stable_diffusion, device=self.device)
        if kind == "dists":
            return random_weights.write_random_dists(path)
        if kind in ("vgg16", "vgg19"):
            return random_weights.write_random_vgg_features(path / f"{kind}.pth", "D" if kind == "vgg16" else "E")
        if kind == "guided_diffusion":
            from jpegrestore.nn.guided_diffusion import GuidedDiffusionUNet, save_guided_diffusion

            with torch.random.fork_rng(devices=[]), torch.device(self.device):  # drawn where it runs: quick
                torch.manual_seed(0)
                model = GuidedDiffusionUNet(**self.settings.guided_diffusion)
            return save_guided_diffusion(model.cpu(), path / "prior.pt")
        raise ValueError(f"unknown random weights {kind!r}")


# --------------------------------------------------------------------------------------------- helpers
def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def reset_peaks() -> None:
    for index in range(torch.cuda.device_count()):
        torch.cuda.reset_peak_memory_stats(index)


def peaks_gib(device: torch.device) -> list[float]:
    """Peak allocated memory of ``device`` since :func:`reset_peaks`, GiB ([] off CUDA)."""
    return [torch.cuda.max_memory_allocated(device) / 2**30] if device.type == "cuda" else []


def photos(settings: Settings) -> list[tuple[str, np.ndarray, bool]]:
    """(name, uint8 [H, W, 3], grayscale?) of the bundled sample photos, cropped to ``settings.photo_crop``."""
    from jpegrestore.data.sources import SAMPLE_GRAYSCALE, SampleSource

    source = SampleSource("all")
    height, width = settings.photo_crop
    chosen = [i for i in range(len(source)) if settings.photo_names is None or source.name(i) in settings.photo_names]
    return [(source.name(i), np.array(source.open(i)[:height, :width]), source.name(i) in SAMPLE_GRAYSCALE)  # a copy
            for i in chosen]


def photo_tensor(size: int) -> torch.Tensor:
    """A size x size RGB photo (astronaut, mirrored out when larger than 512) [1, 3, size, size] in [0, 1]."""
    import skimage.data

    image = skimage.data.astronaut()
    pad = max(0, size - min(image.shape[:2]))
    if pad:
        image = np.pad(image, ((0, pad), (0, pad), (0, 0)), mode="symmetric")
    return torch.from_numpy(np.ascontiguousarray(image[:size, :size])).permute(2, 0, 1)[None].float() / 255


def jpeg_of(size: int, quality: int = 10) -> tuple[Any, torch.Tensor]:
    """(coefficients, decoded image) of a size x size photo at ``quality``, 4:2:0, CPU."""
    from jpegrestore import jpeg

    coeffs = jpeg.encode(photo_tensor(size), quality, rounding="exact")
    return coeffs, jpeg.decode(coeffs, rounding="exact")


def network_spec(name: str) -> dict[str, Any]:
    """``{"_target_": ..., **arguments}`` of conf/model/network/<name>.yaml (interpolations left as written)."""
    from omegaconf import OmegaConf

    path = REPO / "conf" / "model" / "network" / f"{name}.yaml"
    spec = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    spec.pop("defaults", None)
    return spec


def network(name: str, **overrides: Any) -> torch.nn.Module:
    """The network of conf/model/network/<name>.yaml (random weights), with ``overrides`` of its arguments."""
    from jpegrestore.utils.instantiate import instantiate_object

    return instantiate_object({**network_spec(name), **overrides})


# --------------------------------------------------------------------------------------------- 1. bit-exact
def exact_outputs(x: torch.Tensor, quality: int, subsampling: str, with_project: bool) -> dict[str, torch.Tensor]:
    """Every exact path of the JPEG operator on ``x`` [1, C, H, W] (any device), moved to the CPU; ``project``
    (60 iterations, the slowest on a CPU) only ``with_project``."""
    from jpegrestore import jpeg

    coeffs = jpeg.encode(x, quality, subsampling=subsampling, rounding="exact")
    decoded = jpeg.decode(coeffs, rounding="exact")
    outputs = {"encode y": coeffs.y, "decode": decoded, "float_decode": jpeg.float_decode(coeffs),
               "compress ste": jpeg.compress(x, quality, subsampling=subsampling)}
    if coeffs.cb is not None:
        outputs.update({"encode cb": coeffs.cb, "encode cr": coeffs.cr})
    if with_project:
        outputs["project"] = jpeg.project((decoded + 0.05 * (x - 0.5)).clamp(0, 1), coeffs)
    return {key: value.detach().cpu() for key, value in outputs.items()}


def bit_exact(settings: Settings, device: torch.device) -> dict[str, Any]:
    """The exact JPEG paths on ``device`` against the CPU on the sample photos; AssertionError if any value
    differs. ``project`` runs at the first quality of each photo and layout."""
    compared = differing = 0
    worst = ""
    images = photos(settings)
    for name, image, gray in images:
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
        layouts = [(x[:, :1], "4:4:4", "gray")] if gray else [(x, "4:2:0", "4:2:0"), (x, "4:4:4", "4:4:4")]
        for planes, subsampling, label in layouts:
            for quality in settings.qualities:
                first = quality == settings.qualities[0]
                on_cpu = exact_outputs(planes, quality, subsampling, first)
                on_device = exact_outputs(planes.to(device), quality, subsampling, first)
                for key, expected in on_cpu.items():
                    differ = int((on_device[key] != expected).sum())
                    compared += expected.numel()
                    differing += differ
                    if differ and not worst:
                        worst = f"first: {name} {label} q{quality} {key}, {differ} values"
    sizes = sorted({f"{im.shape[0]}x{im.shape[1]}" for _, im, _ in images})
    summary = (f"{len(images)} sample photos ({', '.join(sizes)}), q {list(settings.qualities)}, 4:2:0 / 4:4:4 / "
               f"gray; encode, decode, float_decode, ste compress, project: {differing} of {compared} values differ")
    if differing:
        raise AssertionError(f"{device} is not bit-identical to cpu: {summary} ({worst})")
    return {"note": summary}


# --------------------------------------------------------------------------------------------- 2. jpeg op
def jpeg_op_checks(settings: Settings, device: torch.device) -> list[Check]:
    x = torch.rand(*settings.op_batch, generator=torch.Generator().manual_seed(0))
    quality, best = 50, {}
    shape = "x".join(map(str, settings.op_batch))
    names = list(jpeg_op.speed_runs(x, quality))  # kornia first

    def timed(name: str) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            call = jpeg_op.speed_runs(x.to(device), quality)[name]
            seconds = best[name] = best_of(settings, call)
            kornia = best.get(names[0])
            ratio = f"; kornia / this {kornia / seconds:.2f}x" if kornia else ""
            kind = "forward only" if "forward only" in name else "forward + backward"
            return {"seconds": seconds, "unit": "s/batch", "images_per_second": settings.op_batch[0] / seconds,
                    "peak_memory_gib": peaks_gib(device),
                    "note": f"{kind}, {shape}, q {quality}, best of {settings.repeats}{ratio}"}
        return run

    return [Check("jpeg op", name, FULL, timed(name)) for name in names]


# --------------------------------------------------------------------------------------------- 3. inference
def best_of(settings: Settings, call: Callable[[], Any]) -> float:
    """Best seconds of ``settings.repeats`` calls after ``settings.warmup`` untimed ones."""
    for _ in range(settings.warmup):
        call()
    synchronize()
    times = []
    for _ in range(settings.repeats):
        start = time.perf_counter()
        call()
        synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def time_restoration(settings: Settings, device: torch.device, method: Callable, size: int,
                     what: str) -> dict[str, Any]:
    """Row fields of ``method(coeffs, jpeg_image)`` timed on one size x size JPEG (a photo, q 10, 4:2:0)."""
    coeffs, image = jpeg_of(size)
    seconds = best_of(settings, lambda: method(coeffs, image))
    return {"seconds": seconds, "unit": "s/image", "images_per_second": 1 / seconds,
            "peak_memory_gib": peaks_gib(device),
            "note": f"{size}x{size} 4:2:0 q10, best of {settings.repeats}; {what}"}


def decoder_inference(settings: Settings, device: torch.device, name: str, **overrides: Any) -> dict[str, Any]:
    from jpegrestore.evaluation.methods import NetworkMethod

    net = network(name, **overrides)
    params = sum(p.numel() for p in net.parameters())
    method = NetworkMethod(net, device=device, tile=None)
    return time_restoration(settings, device, method, settings.decoder_size,
                            f"{name} ({params:,} parameters) through NetworkMethod")


def codiff_inference(settings: Settings, device: torch.device, workspace: Workspace, precision: str) -> dict[str, Any]:
    from jpegrestore.evaluation.codiff import CODiffMethod
    from jpegrestore.nn.codiff.generator import CODiff

    net = CODiff(pretrained=str(workspace.file("stable_diffusion")), cave=network_spec(settings.cave))
    method = CODiffMethod(network=net, device=device, precision=precision)
    paper = f"paper {CODIFF_PAPER['seconds (A6000)']} s on an A6000 at 1024x1024"
    return time_restoration(settings, device, method, settings.codiff_size,
                            f"CODiffMethod (latent tiles, colour fix); {paper}")


def ddrm_inference(settings: Settings, device: torch.device, workspace: Workspace, precision: str) -> dict[str, Any]:
    from jpegrestore import jpeg
    from jpegrestore.sampling import DDRMJPEG, load_prior

    prior = load_prior(workspace.file("guided_diffusion"), device=device, dtype=DTYPES[precision])
    params = sum(p.numel() for p in prior.eps_model.parameters())
    sampler = DDRMJPEG.from_prior(prior, steps=settings.ddrm_steps)
    coeffs = jpeg.encode(photo_tensor(settings.ddrm_size), 10, rounding="exact")
    before = sampler.network_evaluations
    seconds = best_of(settings, lambda: sampler(coeffs))
    evaluations = (sampler.network_evaluations - before) // (settings.warmup + settings.repeats)
    if evaluations < 1:
        raise RuntimeError("the sampler made no network evaluation")
    seconds /= evaluations
    size = settings.ddrm_size
    return {"seconds": seconds, "unit": "s/evaluation", "peak_memory_gib": peaks_gib(device),
            "note": f"guided-diffusion {size}x{size} uncond ({params:,} parameters, load_prior dtype "
                    f"{DTYPES[precision]}), whole sampler ({settings.ddrm_steps} steps, {evaluations} evaluations) / "
                    f"evaluations, best of {settings.repeats}; the paper's 20 steps: x20 per image"}


def inference_checks(settings: Settings, device: torch.device, workspace: Workspace) -> list[Check]:
    size = settings.decoder_size
    checks = [
        Check("inference", f"QGAC {size}x{size}", FULL,
              lambda: decoder_inference(settings, device, settings.qgac, stats=None)),
        Check("inference", f"posterior decoder {size}x{size}", FULL,
              lambda: decoder_inference(settings, device, settings.posterior)),
    ]
    for precision in (HALF, FULL):
        checks.append(Check("inference", f"CODiff {settings.codiff_size}x{settings.codiff_size}", precision,
                            lambda p=precision: codiff_inference(settings, device, workspace, p)))
    for precision in (HALF, FULL):
        checks.append(Check("inference", f"DDRM-JPEG {settings.ddrm_size}x{settings.ddrm_size} per evaluation",
                            precision, lambda p=precision: ddrm_inference(settings, device, workspace, p)))
    return checks


# --------------------------------------------------------------------------------------------- 4. train
def compose(overrides: list[str]):
    """conf/train.yaml composed with ``overrides`` (Hydra's compose API, as the tests do)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from jpegrestore.utils import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=overrides)


@dataclass(frozen=True)
class Launch:
    """Where training runs: ``devices`` processes on ``accelerator`` ("gpu" or "cpu")."""

    accelerator: str
    devices: int

    def trainer_overrides(self) -> list[str]:
        if self.devices > 1:  # every GPU: DDP through train.py; on the CPU: gloo (ddp_sim)
            group = "ddp" if self.accelerator == "gpu" else "ddp_sim"
            return [f"trainer={group}", f"trainer.devices={self.devices}"]
        return ["trainer=gpu", "trainer.devices=1"] if self.accelerator == "gpu" else ["trainer=cpu"]


def recipe_overrides(recipe: str, settings: Settings, workspace: Workspace, launch: Launch,
                     batch_size: int | None) -> tuple[list[str], Any]:
    """(train.py overrides, composed config) of ``recipe`` for this check."""
    spec = RECIPES[recipe]
    inputs = []
    for key, upstream in spec.upstream:
        if upstream not in workspace.checkpoints:
            raise RuntimeError(f"{recipe} starts from {upstream}'s last.ckpt, which its run did not leave")
        inputs.append(f"{key}={workspace.checkpoints[upstream]}")
    inputs += [f"{key}={workspace.file(kind)}" for key, kind in spec.files]
    base = [f"experiment={recipe}", *launch.trainer_overrides(), *settings.train[recipe], *spec.extra, *inputs]
    run = workspace.root / "runs" / recipe
    paths = [f"paths.output_dir={run}", f"paths.log_dir={run}"]
    batch = batch_size or settings.train_batch  # else the recipe's total batch split over the processes, capped
    if not batch:
        total = int(compose([*base, *paths]).data.batch_size)
        batch = max(1, min(settings.max_train_batch, total // launch.devices))
    batches = settings.warmup + settings.repeats
    overrides = [
        *base, "seed=0", "logger=csv", "callbacks.progress_bar=null", "callbacks.model_checkpoint=null",
        "++trainer.enable_progress_bar=false", "++trainer.enable_model_summary=false",
        f"trainer.max_steps={batches * spec.steps_per_batch}", "trainer.max_epochs=-1",
        f"trainer.val_check_interval={batches}", "trainer.num_sanity_val_steps=0", "trainer.log_every_n_steps=1",
        "++trainer.limit_val_batches=1", f"data.batch_size={batch}", f"data.val_batch_size={batch}",
        f"data.samples_per_epoch={batch * launch.devices * batches}", "data.val_qualities=[10]",
        "+callbacks.step_timer._target_=jpegrestore.utils.step_timer.StepTimer",
        f"+callbacks.step_timer.dirpath={run / 'step_times'}", f"+callbacks.step_timer.warmup={settings.warmup}",
    ]
    return overrides, compose([*overrides, *paths])


def train_recipe(recipe: str, settings: Settings, workspace: Workspace, launch: Launch,
                 batch_size: int | None) -> dict[str, Any]:
    overrides, cfg = recipe_overrides(recipe, settings, workspace, launch, batch_size)
    run = workspace.root / "runs" / recipe
    if launch.devices > 1:
        command = [sys.executable, str(REPO / "train.py"), *overrides, f"hydra.run.dir={run}", f"paths.log_dir={run}"]
        run.mkdir(parents=True, exist_ok=True)
        with open(run / "train.log", "w") as log:  # its own session: a hung DDP job is killed as a whole
            process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                returncode = process.wait(timeout=TRAIN_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                raise RuntimeError(f"train.py did not finish in {TRAIN_TIMEOUT} s ({run / 'train.log'})") from None
        if returncode:
            tail = (run / "train.log").read_text().strip().splitlines()[-3:]
            raise RuntimeError(f"train.py exited with {returncode}: {' | '.join(tail)} ({run / 'train.log'})")
    else:
        from jpegrestore.tasks.runner import train

        train(cfg)
    records = sorted((json.loads(p.read_text()) for p in (run / "step_times").glob("rank*.json")),
                     key=lambda r: r["rank"])
    if len(records) != launch.devices:
        raise RuntimeError(f"{len(records)} of {launch.devices} ranks reported their step times")
    if any(len(r["batch_seconds"]) != settings.repeats for r in records):
        raise RuntimeError(f"expected {settings.repeats} timed batches per rank, got "
                           f"{[len(r['batch_seconds']) for r in records]}")
    last = run / "checkpoints" / "last.ckpt"
    if last.is_file():
        workspace.checkpoints[recipe] = last
    seconds = max(float(np.mean(r["batch_seconds"])) for r in records)  # the slowest rank sets the pace
    images = sum(r["images_per_batch"] for r in records)
    memory = [r["peak_memory_bytes"] / 2**30 for r in records if r["peak_memory_bytes"] is not None]
    crop = cfg.model.get("train_crop") or cfg.data.crop_size
    steps = RECIPES[recipe].steps_per_batch
    return {"precision": str(cfg.trainer.precision), "seconds": seconds, "unit": "s/batch",
            "images_per_second": images / seconds, "peak_memory_gib": memory,
            "note": f"batch {records[0]['images_per_batch']} x {launch.devices} process(es), {crop} px crops, mean "
                    f"of {settings.repeats} timed batch(es) after {settings.warmup} warm-up"
                    + (f", {steps} optimizer steps (G, D) per batch" if steps > 1 else "")}


def train_checks(settings: Settings, workspace: Workspace, launch: Launch, batch_size: int | None) -> list[Check]:
    checks = []
    for recipe in RECIPES:
        try:
            precision = str(compose([f"experiment={recipe}", "paths.output_dir=."]).trainer.precision)
        except Exception:  # reported by the run itself
            precision = "?"
        checks.append(Check("train", recipe, precision,
                            lambda r=recipe: train_recipe(r, settings, workspace, launch, batch_size)))
    return checks


# --------------------------------------------------------------------------------------------- the table
def plan(settings: Settings, device: torch.device, workspace: Workspace, launch: Launch,
         batch_size: int | None) -> list[Check]:
    """Every row of the check, in order."""
    return [
        Check("bit-exact", f"JPEG op on {device.type} vs cpu", FULL, lambda: bit_exact(settings, device)),
        *jpeg_op_checks(settings, device),
        *inference_checks(settings, device, workspace),
        *train_checks(settings, workspace, launch, batch_size),
    ]


def run_check(check: Check, device: torch.device) -> Row:
    """Run one check; any exception becomes a failed row with the error in its note."""
    row = Row(check.part, check.name, check.precision)
    reset_peaks()
    start, cpu = time.perf_counter(), time.process_time()
    try:
        for key, value in check.run().items():
            setattr(row, key, value)
    except Exception as error:  # every failure is a row, never the end of the check
        traceback.print_exc()
        row.status = "failed"
        row.note = f"{type(error).__name__}: {' '.join(str(error).split())[:400]}"
    finally:
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    took = f"{time.perf_counter() - start:6.1f} s, cpu {time.process_time() - cpu:6.1f} s"
    print(f"[{took}] {row.part} / {row.name} ({row.precision}): {row.status}", flush=True)
    return row


def _number(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}g}"


def markdown(rows: list[Row], header: str) -> str:
    """``header``, then the rows as one markdown table."""
    lines = [header, "", "| part | name | precision | status | time | images/s | peak GiB per GPU | note |",
             "|---|---|---|---|---:|---:|---|---|"]
    for row in rows:
        time_cell = f"{_number(row.seconds)} {row.unit}" if row.seconds is not None else ""
        memory = ", ".join(f"{m:.2f}" for m in row.peak_memory_gib) or "n/a"
        note = row.note.replace("|", "/")
        lines.append(f"| {row.part} | {row.name} | {row.precision} | {row.status} | {time_cell} | "
                     f"{_number(row.images_per_second)} | {memory} | {note} |")
    return "\n".join(lines) + "\n"


def write_report(out: Path, rows: list[Row], info: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``out/gpu_check.md`` (the table) and ``out/gpu_check.json`` (``info`` and every row). -> both paths."""
    out.mkdir(parents=True, exist_ok=True)
    header = (f"GPU check ({info['mode']}) on {info['device_name']}, {info['devices']} training device(s), torch "
              f"{info['torch']}: {info['total_seconds']:.0f} s in total")
    md = out / "gpu_check.md"
    md.write_text(markdown(rows, header))
    js = out / "gpu_check.json"
    js.write_text(json.dumps({**info, "rows": [dataclasses.asdict(r) for r in rows]}, indent=1) + "\n")
    return md, js


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (seconds; on the CPU without a GPU)")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "gpu_check",
                        help="folder for gpu_check.md and gpu_check.json (default outputs/gpu_check)")
    parser.add_argument("--devices", type=int, default=None,
                        help="training processes (default: every visible GPU; 1 on the CPU; >1 on the CPU: gloo)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="per-process training batch of every recipe (default: the recipe's total batch "
                             "/ devices, at most 16)")
    parser.add_argument("--only", action="append", default=[],
                        help="run only rows whose 'part / name' contains this text (repeatable; a stage 2 or 3 "
                             "recipe needs the run it starts from)")
    parser.add_argument("--work", type=Path, default=None,
                        help="scratch folder for random weights and runs (kept); default: a temporary one")
    args = parser.parse_args(argv)

    cuda = torch.cuda.is_available()
    if not cuda and not args.tiny:
        print("no CUDA device: nothing to check (python bench/gpu_check.py --tiny runs the same checks at tiny "
              "sizes on the CPU)")
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    settings = SETTINGS["tiny" if args.tiny else "full"]()
    device = torch.device("cuda" if cuda else "cpu")
    devices = args.devices or (torch.cuda.device_count() if cuda else 1)
    launch = Launch("gpu" if cuda else "cpu", devices)
    device_name = torch.cuda.get_device_name(device) if cuda else f"CPU ({torch.get_num_threads()} threads)"
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as scratch:
        root = args.work or Path(scratch)
        workspace = Workspace(root, settings, device)
        checks = [c for c in plan(settings, device, workspace, launch, args.batch_size)
                  if not args.only or any(t in f"{c.part} / {c.name}" for t in args.only)]
        rows = [run_check(check, device) for check in checks]
    total = time.perf_counter() - start
    info = {"mode": "tiny" if args.tiny else "full", "device": str(device), "device_name": device_name,
            "devices": devices, "torch": torch.__version__, "total_seconds": total,
            "budget_seconds": None if args.tiny else BUDGET_SECONDS,
            "failed": sum(r.status != "ok" for r in rows)}
    md, js = write_report(args.out, rows, info)
    print()
    print(md.read_text())
    budget = "" if args.tiny else f" ({'over the' if total > BUDGET_SECONDS else 'within the'} budget of " \
                                  f"{BUDGET_SECONDS} s on one H100-class GPU)"
    print(f"total {total:.0f} s{budget}; {info['failed']} of {len(rows)} rows failed; written to {md} and {js}")
    return 1 if info["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
