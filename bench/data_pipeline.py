"""Images per second the training data pipeline delivers, next to a Pillow-in-workers pipeline and the training
step rate of the QGAC paper recipe, in one process on one machine.

    python bench/data_pipeline.py [--batches 20] [--workers 2] [--crop 256] [--batch 32] [--device auto]
        [--source sample|FOLDER|'shards:/data/shards/*.parquet'] [--recipe-batch N]

Pipelines (same crops, same qualities 10..100, 4:2:0):
- ours: read + crop in DataLoader workers, JPEG on the training device (``jpegrestore.jpeg``, exact libjpeg);
- pillow: read + crop + Pillow (libjpeg) encode/decode and coefficient read-back in the workers.
Recipe: one QGAC stage-1 training step at the paper's width (Adam, L1 - 0.05 SSIM) on the same device; on a CPU
the step is timed at ``--recipe-batch`` (default 2) and its images/s reported as measured. The pipeline keeps up
when its images/s exceed the recipe's.
"""

from __future__ import annotations

import argparse
import time

import torch


def pipeline_rate(source: str, compression: str, batches: int, workers: int, crop: int, batch: int,
                  device: torch.device) -> float:
    """Training images per second delivered to ``device`` (after the batch is on it, compressed)."""
    from jpegrestore.data import RestorationDataModule, UniformQuality

    train = source
    if source.startswith("shards:"):
        from jpegrestore.data import ShardedSource

        train = ShardedSource(source.split(":", 1)[1])
    datamodule = RestorationDataModule(
        train_source=train, val_source=None, test_source=None, crop_size=crop, quality=UniformQuality(10, 100),
        compression=compression, batch_size=batch, num_workers=workers, samples_per_epoch=batch * (batches + 2),
        persistent_workers=False,
    )
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    iterator = iter(loader)
    first = datamodule.on_after_batch_transfer(_to(next(iterator), device), 0)  # warm-up: workers start
    _sync(device)
    start, images = time.perf_counter(), 0
    for _ in range(batches):
        batch_dict = datamodule.on_after_batch_transfer(_to(next(iterator), device), 0)
        images += batch_dict["target"].shape[0]
    _sync(device)
    del first
    return images / (time.perf_counter() - start)


def recipe_rate(batch: int, crop: int, device: torch.device, steps: int = 2) -> float:
    """Images per second of QGAC stage-1 training steps at the paper's width (best of ``steps`` after warm-up)."""
    from jpegrestore import jpeg
    from jpegrestore.losses.pixel import L1SSIMLoss
    from jpegrestore.nn.qgac import QGAC

    model = QGAC(block_channels=256, freq_channels=256, color_channels=[32, 64], cfm_hidden=64, inner_channels=64,
                 fusion_width=4, color=False).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = L1SSIMLoss(0.05)
    target = torch.rand(batch, 1, crop, crop, device=device)
    coeffs = jpeg.encode(target, quality=torch.full((batch,), 30), rounding="exact")
    best = float("inf")
    for step in range(steps + 1):
        _sync(device)
        start = time.perf_counter()
        loss = loss_fn(model(coeffs), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _sync(device)
        if step:
            best = min(best, time.perf_counter() - start)
    return batch / best


def _to(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="sample")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--recipe-batch", type=int, default=None, help="default: --batch on GPU, 2 on CPU")
    args = parser.parse_args()
    from jpegrestore.evaluation.methods import resolve_device

    device = resolve_device(args.device)
    print(f"device {device}, {torch.get_num_threads()} threads, {args.workers} workers, batch {args.batch} of "
          f"{args.crop}x{args.crop}, source {args.source}")
    ours = pipeline_rate(args.source, "device", args.batches, args.workers, args.crop, args.batch, device)
    print(f"ours (read+crop in workers, exact JPEG on {device.type}): {ours:8.1f} images/s")
    pillow = pipeline_rate(args.source, "pillow", args.batches, args.workers, args.crop, args.batch, device)
    print(f"pillow (read+crop+libjpeg in workers):          {pillow:8.1f} images/s   ours/pillow = {ours / pillow:.2f}x")
    recipe_batch = args.recipe_batch or (args.batch if device.type == "cuda" else 2)
    recipe = recipe_rate(recipe_batch, args.crop, device)
    print(f"QGAC stage-1 paper-width training (batch {recipe_batch}): {recipe:8.2f} images/s   "
          f"ours/recipe = {ours / recipe:.1f}x ({'keeps up' if ours > recipe else 'BOTTLENECK'})")


if __name__ == "__main__":
    main()
