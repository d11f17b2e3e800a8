"""bench/gpu_check.py, the GPU acceptance check: ``--tiny`` runs every row at tiny sizes (on the CPU here, on CUDA
when present) and writes the table as markdown and JSON; failures are rows; without CUDA the full check exits 0."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO, compose_train

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
RECIPES = ["qgac_stage1", "qgac_stage2", "qgac_stage3", "codiff_stage1", "codiff_stage2", "posterior_mmse",
           "posterior_gan", "ddpm_prior"]
JPEG_OP = ["kornia jpeg_codec_differentiable", "ours ste (default)", "ours cubic", "ours exact, forward only"]
#: (part, name, precision) of every row of the tiny check, in order; the training precision is the recipe's.
EXPECTED = [
    ("bit-exact", f"JPEG op on {DEVICE} vs cpu", "32"),
    *[("jpeg op", name, "32") for name in JPEG_OP],
    ("inference", "QGAC 32x32", "32"),
    ("inference", "posterior decoder 32x32", "32"),
    ("inference", "CODiff 48x48", "16"),
    ("inference", "CODiff 48x48", "32"),
    ("inference", "DDRM-JPEG 32x32 per evaluation", "16"),
    ("inference", "DDRM-JPEG 32x32 per evaluation", "32"),
    *[("train", recipe, None) for recipe in RECIPES],
]
ROW_KEYS = {"part", "name", "precision", "status", "seconds", "unit", "images_per_second", "peak_memory_gib", "note"}


def _module():
    sys.path.insert(0, str(REPO / "bench"))
    try:
        return importlib.import_module("gpu_check")
    finally:
        sys.path.remove(str(REPO / "bench"))


def _run(*args: str, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), *args, "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=900, env=env)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    result = _run("--tiny", "--devices", "1", out=out)  # several GPUs: test_several_devices_...
    return result, out


def test_tiny_check_runs_every_row_and_writes_markdown_and_json(tiny) -> None:  # ~30 s on 2 quiet cores
    result, out = tiny
    report = json.loads((out / "gpu_check.json").read_text())
    rows = report["rows"]
    assert {"mode", "device", "devices", "total_seconds", "failed", "rows"} <= set(report)
    assert report["mode"] == "tiny" and report["device"] == DEVICE
    assert [(r["part"], r["name"]) for r in rows] == [(p, n) for p, n, _ in EXPECTED]
    for row, (_, name, precision) in zip(rows, EXPECTED):
        assert set(row) == ROW_KEYS
        if precision is None:  # a recipe runs at its own default precision
            precision = str(compose_train([f"experiment={name}"]).trainer.precision)
        assert row["precision"] == precision, name

    failed = {(r["part"], r["name"], r["precision"]): r["note"] for r in rows if r["status"] != "ok"}
    assert not failed, failed
    assert report["failed"] == 0
    assert result.returncode == 0, result.stderr[-3000:]

    for row in rows:
        if row["status"] != "ok":
            continue
        if row["part"] == "bit-exact":
            assert f"{DEVICE} vs cpu" in row["name"] and " 0 of " in row["note"] and "differ" in row["note"]
            assert int(row["note"].split(" 0 of ")[1].split()[0]) > 0, "nothing was compared"
            continue
        assert row["seconds"] > 0 and row["unit"].startswith("s/"), row
        if row["part"] in ("train", "jpeg op"):
            assert row["images_per_second"] > 0, row
        assert bool(row["peak_memory_gib"]) == CUDA, row  # memory per GPU on CUDA, none on the CPU
    train = {r["name"]: r for r in rows if r["part"] == "train"}
    assert train["qgac_stage1"]["unit"] == "s/batch" and "batch 2 x 1" in train["qgac_stage1"]["note"]
    # images/s = images per batch / seconds per batch
    assert train["qgac_stage1"]["images_per_second"] == pytest.approx(2 / train["qgac_stage1"]["seconds"])

    markdown = (out / "gpu_check.md").read_text()
    table = [line for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("| part")]
    assert len(table) == len(EXPECTED)
    for line, row in zip(table, rows):
        assert line.startswith(f"| {row['part']} | {row['name']} | {row['precision']} | {row['status']} |")
        assert line in result.stdout  # the same table is printed
    assert "total" in result.stdout


def test_without_cuda_the_full_check_says_so_and_exits_0(tmp_path, monkeypatch, capsys) -> None:
    gpu_check = _module()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path / "out")]) == 0
    assert "no CUDA device" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()


def test_a_failing_part_is_a_failed_row_and_the_exit_status_is_1(tmp_path, monkeypatch) -> None:
    gpu_check = _module()

    def broken() -> dict:
        raise RuntimeError("out of memory\nat step 3")

    checks = [gpu_check.Check("train", "broken", "32-true", broken),
              gpu_check.Check("inference", "fine", "32", lambda: {"seconds": 0.5, "unit": "s/image"})]
    monkeypatch.setattr(gpu_check, "plan", lambda *args: checks)
    assert gpu_check.main(["--tiny", "--out", str(tmp_path)]) == 1
    rows = json.loads((tmp_path / "gpu_check.json").read_text())["rows"]
    assert [(r["name"], r["status"]) for r in rows] == [("broken", "failed"), ("fine", "ok")]
    assert rows[0]["note"] == "RuntimeError: out of memory at step 3"
    assert "| train | broken | 32-true | failed |" in (tmp_path / "gpu_check.md").read_text()


def test_bit_exact_reports_a_device_that_differs_from_the_cpu(monkeypatch) -> None:
    gpu_check = _module()
    settings = gpu_check.SETTINGS["tiny"]()
    exact = gpu_check.exact_outputs
    calls = []

    def second_call_differs(x, quality, subsampling, with_project):
        outputs = exact(x, quality, subsampling, with_project)
        calls.append(x.device.type)
        if len(calls) == 2:  # the device's outputs of the first photo
            outputs["decode"][0, 0, 0, 0] += 1 / 255
        return outputs

    monkeypatch.setattr(gpu_check, "exact_outputs", second_call_differs)
    with pytest.raises(AssertionError, match=r"not bit-identical to cpu: .* 1 of \d+ values differ .*chelsea"):
        gpu_check.bit_exact(settings, torch.device(DEVICE))
    assert len(calls) > 2 and calls == ["cpu", DEVICE] * (len(calls) // 2), "CPU results against the device's"


def test_full_size_training_runs_compose_with_the_recipes_sizes_and_precision(tmp_path, monkeypatch) -> None:
    """What the full check asks of train.py on 4 GPUs (composed, not run): the recipe's networks, crops and
    precision, its total batch split over the GPUs (at most 16 each), DDP, 1 + 3 batches (GAN recipes: 2 optimizer
    steps each)."""
    gpu_check = _module()
    settings = gpu_check.SETTINGS["full"]()
    workspace = gpu_check.Workspace(tmp_path, settings, torch.device("cpu"))
    monkeypatch.setattr(workspace, "file", lambda kind: tmp_path / kind)
    workspace.checkpoints = {recipe: tmp_path / f"{recipe}.ckpt" for recipe in RECIPES}
    from omegaconf import OmegaConf

    for recipe in RECIPES:
        _, cfg = gpu_check.recipe_overrides(recipe, settings, workspace, gpu_check.Launch("gpu", 4), None)
        paper = compose_train([f"experiment={recipe}"])
        network = OmegaConf.to_container(cfg.model.network, resolve=False)
        assert network == OmegaConf.to_container(paper.model.network, resolve=False), recipe
        assert cfg.data.crop_size == paper.data.crop_size and cfg.trainer.precision == paper.trainer.precision
        assert cfg.data.batch_size == min(16, paper.data.batch_size // 4), recipe  # at most 16 per GPU
        assert cfg.trainer.devices == 4 and "DDPStrategy" in cfg.trainer.strategy._target_
        steps = 2 if recipe in ("qgac_stage3", "codiff_stage2", "posterior_gan") else 1
        assert cfg.trainer.max_steps == 4 * steps and cfg.trainer.val_check_interval == 4, recipe
        assert cfg.data.samples_per_epoch == 4 * 4 * cfg.data.batch_size
        assert cfg.callbacks.step_timer.warmup == 1
        if recipe == "codiff_stage2":  # the random full-size Stable Diffusion folder
            assert cfg.model.pretrained == str(tmp_path / "stable_diffusion")


def test_step_timer_times_batches_after_the_warmup_without_validation(tmp_path, monkeypatch) -> None:
    from types import SimpleNamespace

    from jpegrestore.utils import step_timer

    clock = iter([0.0, 1.0, 3.0, 6.0, 10.0, 12.0])  # start, batch ends at 1, 3, 6, validation ends at 10, batch at 12
    monkeypatch.setattr(step_timer.time, "perf_counter", lambda: next(clock))
    module = SimpleNamespace(device=torch.device("cpu"))
    trainer = SimpleNamespace(global_rank=1, world_size=2, global_step=8, state=SimpleNamespace(fn="fit"))
    timer = step_timer.StepTimer(tmp_path, warmup=1)
    timer.on_train_start(trainer, module)
    for index in range(3):
        timer.on_train_batch_end(trainer, module, None, {"target": torch.zeros(5, 3, 8, 8)}, index)
    timer.on_validation_end(trainer, module)
    timer.on_train_batch_end(trainer, module, None, {"target": torch.zeros(5, 3, 8, 8)}, 3)
    timer.on_fit_end(trainer, module)
    record = json.loads((tmp_path / "rank1.json").read_text())
    assert record["batch_seconds"] == [2.0, 3.0, 2.0]  # the first batch (1 s) is the warm-up; validation left out
    assert record["images_per_batch"] == 5 and record["world_size"] == 2 and record["peak_memory_bytes"] is None


@pytest.mark.slow  # two training processes over gloo: about 40 s on 2 cores
@pytest.mark.skipif(CUDA and torch.cuda.device_count() < 2, reason="needs two GPUs or none")
def test_several_devices_train_through_train_py_with_ddp(tmp_path) -> None:
    result = _run("--tiny", "--devices", "2", "--only", "train / qgac_stage1", out=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (row,) = json.loads((tmp_path / "gpu_check.json").read_text())["rows"]
    assert row["status"] == "ok" and "batch 2 x 2 process(es)" in row["note"]
    assert row["images_per_second"] == pytest.approx(4 / row["seconds"])  # both ranks' images
