"""Accuracy and speed of jpegrestore.jpeg next to kornia's differentiable JPEG, in one process.

    python bench/jpeg_op.py [--repeats 5] [--threads N]

Table 1: mean RGB PSNR (dB) against Pillow / libjpeg-turbo's own encode+decode, 4:2:0, on five
natural photos (240x320 crops; kornia needs multiples of 16), and the share of identical pixels.
Table 2: forward + backward time of a 16x3x256x256 batch at quality 10 (best of --repeats), and the ratio;
Pillow / libjpeg-turbo's encode + decode of the same 16 patches on one core beside it; then the machine (CPU
model, cores, torch threads, load average) and the three goals as ratios: ``ste`` forward + backward against
kornia (goal >= 4x), ``exact`` forward against Pillow (goal <= 3x) and the on-device data pipeline against
Pillow workers (``bench/data_pipeline.py``; goal >= 1x).
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import time
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from jpegrestore import jpeg

QUALITIES = [1, 5, 10, 20, 30, 50, 75, 90, 95, 100]
PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry"]


def photos() -> list[np.ndarray]:
    import skimage.data as data

    return [np.ascontiguousarray(getattr(data, n)()[:240, :320]) for n in PHOTOS]


def pillow_round_trip(img: np.ndarray, q: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=q, subsampling=2)
    return np.asarray(Image.open(buf)).astype(np.float64)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return (x[0].detach().double() * 255).round().clamp(0, 255).permute(1, 2, 0).numpy()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a - b) ** 2)
    return 99.0 if mse == 0 else 10 * np.log10(255 ** 2 / mse)


def kornia_compress(x: torch.Tensor, q: int) -> torch.Tensor:
    import kornia

    return kornia.enhance.jpeg_codec_differentiable(x, torch.full((x.shape[0],), float(q), device=x.device))


def speed_runs(x: torch.Tensor, q: int) -> dict[str, Callable[[], None]]:
    """method -> one forward + backward of ``x`` (any device) at quality ``q``: kornia first, then ours in every
    rounding mode ("exact": forward only, no gradient). Used by bench/gpu_check.py."""
    def step(compress):
        def run():
            xx = x.clone().requires_grad_(True)
            compress(xx, q).sum().backward()
        return run

    def exact_forward():
        with torch.no_grad():
            jpeg.compress(x, q, rounding="exact")

    return {
        "kornia jpeg_codec_differentiable": step(kornia_compress),
        "ours ste (default)": step(lambda a, b: jpeg.compress(a, b)),
        "ours cubic": step(lambda a, b: jpeg.compress(a, b, rounding="cubic")),
        "ours exact, forward only": exact_forward,
    }


def accuracy_table() -> None:
    imgs = photos()
    methods = {
        "ours ste": lambda x, q: jpeg.compress(x, q),
        "ours exact": lambda x, q: jpeg.compress(x, q, rounding="exact"),
        "ours cubic": lambda x, q: jpeg.compress(x, q, rounding="cubic"),
        "kornia": kornia_compress,
    }
    print("Accuracy against Pillow (libjpeg-turbo), 4:2:0, mean over 5 photos: PSNR dB / identical pixels")
    print(f"{'q':>4} | " + " | ".join(f"{m:>20}" for m in methods))
    for q in QUALITIES:
        refs = [pillow_round_trip(img, q) for img in imgs]
        cells = []
        for fn in methods.values():
            outs = [to_uint8(fn(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255, q)) for img in imgs]
            p = np.mean([psnr(o, r) for o, r in zip(outs, refs)])
            same = np.mean([np.mean(o == r) for o, r in zip(outs, refs)]) * 100
            cells.append(f"{p:7.2f} / {same:7.3f}%")
        print(f"{q:>4} | " + " | ".join(f"{c:>20}" for c in cells))


def best_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def pillow_encode_decode(patches: list[np.ndarray], q: int) -> None:
    """libjpeg-turbo encode + decode of every patch, one after the other (one core), 4:2:0 as ours."""
    for img in patches:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=q, subsampling=2)
        buf.seek(0)
        np.asarray(Image.open(buf).convert("RGB"))


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return (f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} "
            f"threads, load average {load}")


def speed_table(repeats: int) -> dict[str, float]:
    x = torch.rand(16, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    q = 10
    rows = [(name, best_time(run, repeats)) for name, run in speed_runs(x, q).items()]
    peer = rows[0][1]  # kornia
    patches = [np.ascontiguousarray((x[i] * 255).round().byte().permute(1, 2, 0).numpy()) for i in range(16)]
    pillow = best_time(lambda: pillow_encode_decode(patches, q), repeats)
    rows.append(("Pillow encode + decode, one core", pillow))
    print(f"\nForward + backward, 16x3x256x256, quality {q}, {torch.get_num_threads()} threads, best of {repeats}")
    print(f"{'method':<36} {'seconds':>8} {'kornia / this':>14}")
    for name, t in rows:
        print(f"{name:<36} {t:8.3f} {peer / t:13.2f}x")
    times = dict(rows)
    return {"ste": peer / times["ours ste (default)"], "exact": times["ours exact, forward only"] / pillow}


def data_pipeline_ratio(batches: int) -> float:
    """ours / Pillow images per second of ``bench/data_pipeline.py``'s two pipelines, on the CPU."""
    import sys

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from data_pipeline import pipeline_rate

    cpu = torch.device("cpu")
    ours = pipeline_rate("sample", "device", batches, 2, 256, 32, cpu)
    pillow = pipeline_rate("sample", "pillow", batches, 2, 256, 32, cpu)
    print(f"\nData pipeline (bench/data_pipeline.py, CPU, 2 workers, batch 32 of 256x256, {batches} batches): "
          f"ours {ours:.1f} images/s, Pillow workers {pillow:.1f} images/s")
    return ours / pillow


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--pipeline-batches", type=int, default=10, help="batches per pipeline (0: skip that ratio)")
    ap.add_argument("--no-accuracy", action="store_true", help="skip table 1")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.no_accuracy:
        accuracy_table()
    ratios = speed_table(args.repeats)
    pipeline = data_pipeline_ratio(args.pipeline_batches) if args.pipeline_batches else float("nan")
    print(f"\nMachine: {machine()}")
    print(f"ste forward+backward vs kornia:          {ratios['ste']:5.2f}x faster (goal >= 4x, then 8x)")
    print(f"exact forward vs Pillow encode+decode:   {ratios['exact']:5.2f}x Pillow's time (goal <= 3x)")
    print(f"on-device data pipeline vs Pillow workers: {pipeline:5.2f}x the images/s (goal >= 1x)")


if __name__ == "__main__":
    main()
