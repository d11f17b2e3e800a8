"""Accuracy and speed of jpegrestore.jpeg next to kornia's differentiable JPEG, in one process.

    python bench/jpeg_op.py [--repeats 5] [--threads N]

Table 1: mean RGB PSNR (dB) against Pillow / libjpeg-turbo's own encode+decode, 4:2:0, on five
natural photos (240x320 crops; kornia needs multiples of 16), and the share of identical pixels.
Table 2: forward + backward time of a 16x3x256x256 batch (best of --repeats), and the ratio.
"""

from __future__ import annotations

import argparse
import io
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


def speed_table(repeats: int) -> None:
    x = torch.rand(16, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    q = 50

    def step(compress):
        def run():
            xx = x.clone().requires_grad_(True)
            compress(xx, q).sum().backward()
        return run

    peer = best_time(step(kornia_compress), repeats)
    rows = [("kornia jpeg_codec_differentiable", peer)]
    rows.append(("ours ste (default)", best_time(step(lambda a, b: jpeg.compress(a, b)), repeats)))
    rows.append(("ours cubic", best_time(step(lambda a, b: jpeg.compress(a, b, rounding="cubic")), repeats)))
    with torch.no_grad():
        rows.append(("ours exact, forward only", best_time(lambda: jpeg.compress(x, q, rounding="exact"), repeats)))
    print(f"\nForward + backward, 16x3x256x256, quality {q}, {torch.get_num_threads()} threads, best of {repeats}")
    print(f"{'method':<36} {'seconds':>8} {'kornia / this':>14}")
    for name, t in rows:
        print(f"{name:<36} {t:8.3f} {peer / t:13.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    accuracy_table()
    speed_table(args.repeats)


if __name__ == "__main__":
    main()
