"""Cost of DDRM-JPEG: time per 256x256 image per network evaluation, and evaluations per image.

    python bench/ddrm_cost.py [--prior PATH] [--steps 3] [--repeats 1] [--threads N] [--full-cpu] [--cpu-width 32]

1. The tiny random diffusers prior (``jpegrestore.sampling.write_tiny_ddpm``, or ``--prior``) on CPU: one
   256x256 JPEG (QF 10, 4:2:0) restored with ``--steps`` steps (the time per evaluation does not depend on the
   step count, and the tiny prior's attention at 128x128 makes each evaluation slow on a CPU; the paper's 20 steps
   cost 20 of them); the wall time per network evaluation, the network alone per evaluation, and the
   measurement operator's time per step.
2. The paper's prior architecture, guided-diffusion 256x256 unconditional (552.8M parameters, random weights),
   in float32 and in half precision as the authors run it (``convert_to_fp16``: the torso's convolutions in
   half, norms and the rest in float32): float16 on a GPU when one is present; on this CPU one evaluation with
   ``--full-cpu``, otherwise the same architecture at base width ``--cpu-width`` (32: 1/64 of the multiply-adds).
   On CPU the half dtype is bfloat16: PyTorch 2.14 runs float16 convolutions on a CPU too, but about 100x slower
   than float32 (a 64-channel 3x3 convolution at 64x64 on one thread: 12 ms float32, 2.7 ms bfloat16, 1.5 s
   float16, measured on a loaded AMD EPYC with AVX512-BF16).
3. The count of network evaluations per image, measured by the sampler, against the paper's 20 per sample.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from jpegrestore import jpeg
from jpegrestore.sampling import DDRMJPEG, load_prior

SIZE = 256


def photo_jpeg(quality: int = 10) -> jpeg.Coefficients:
    import skimage.data

    img = torch.from_numpy(skimage.data.astronaut()[100:100 + SIZE, 150:150 + SIZE]).permute(2, 0, 1)[None] / 255
    return jpeg.encode(img.float(), quality, rounding="exact")


def best_of(repeats: int, run) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def network_time(eps_model, device, dtype, repeats: int, warm_up: bool = True) -> float:
    x = torch.randn(1, 3, SIZE, SIZE, device=device, dtype=dtype)
    t = torch.tensor([150], device=device)
    with torch.no_grad():
        if warm_up:
            eps_model(x, t)
        return best_of(repeats, lambda: eps_model(x, t))


def operator_time(coeffs: jpeg.Coefficients, repeats: int) -> float:
    """Seconds of one H+(H(x0)) on the 256x256 canvas: the sampler's work per step besides the network."""
    from jpegrestore.sampling import JPEGMeasurement

    op = JPEGMeasurement(coeffs)
    x0 = torch.rand(1, 3, SIZE, SIZE) * 2 - 1
    op.pinv(op.forward(x0))
    return best_of(max(repeats, 5), lambda: op.pinv(op.forward(x0)))


def tiny_prior_on_cpu(prior_path: str | None, steps: int, repeats: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if prior_path is None:
            from jpegrestore.sampling import write_tiny_ddpm

            prior_path = str(write_tiny_ddpm(Path(tmp) / "tiny-ddpm"))
            label = "tiny random UNet2DModel (write_tiny_ddpm)"
        else:
            label = prior_path
        prior = load_prior(prior_path, device="cpu")
        params = sum(p.numel() for p in prior.eps_model.parameters())
        sampler = DDRMJPEG.from_prior(prior, steps=steps)  # otherwise the paper's settings (t_start 300)
        coeffs = photo_jpeg()
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():  # warm-up on a small input
            prior.eps_model(torch.zeros(1, 3, 32, 32), torch.tensor([0]))
        before = sampler.network_evaluations
        per_image = best_of(repeats, lambda: sampler(coeffs, generator=generator))
        nfe = (sampler.network_evaluations - before) // repeats
        net = network_time(prior.eps_model, "cpu", torch.float32, repeats, warm_up=False)
    print(f"\n## 1. CPU, {label}, {params:,} parameters, {torch.get_num_threads()} thread(s)")
    print(f"restore one {SIZE}x{SIZE} JPEG (QF 10, 4:2:0), {steps} steps: {per_image:.2f} s, {nfe} network evaluations")
    print(f"per network evaluation (whole sampler): {1000 * per_image / nfe:.1f} ms "
          f"(so the paper's 20 steps: {20 * per_image / nfe:.1f} s per sample)")
    print(f"network alone per evaluation:          {1000 * net:.1f} ms")
    print(f"measurement operator per step (H+(H(x0)), measured alone): {1000 * operator_time(coeffs, repeats):.1f} ms")


def full_size_architecture(repeats: int, full_cpu: bool, cpu_width: int) -> None:
    try:
        from jpegrestore.nn.guided_diffusion import GUIDED_DIFFUSION_256_UNCOND, GuidedDiffusionUNet
    except ImportError as error:
        print(f"\n## 2. guided-diffusion 256x256: architecture not available ({error})")
        return
    runs = [("cuda", GUIDED_DIFFUSION_256_UNCOND)] if torch.cuda.is_available() else []
    if full_cpu:
        runs.append(("cpu", GUIDED_DIFFUSION_256_UNCOND))
    elif not runs:
        print("\n## 2. no GPU present: guided-diffusion 256x256 uncond timed on this CPU at base width "
              f"{cpu_width} (the paper's: 256; --full-cpu times the full size)")
        runs.append(("cpu", {**GUIDED_DIFFUSION_256_UNCOND, "model_channels": cpu_width}))
    for device, config in runs:
        torch.manual_seed(0)
        model = GuidedDiffusionUNet(**config).eval().to(device)
        params = sum(p.numel() for p in model.parameters())
        half = torch.float16 if device == "cuda" else torch.bfloat16  # see the module docstring
        name = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} thread(s)"
        on_gpu = device == "cuda"
        for dtype in (half, torch.float32):
            model.convert_to_fp16(dtype)  # float32 undoes it; x and the output stay float32 either way
            seconds = network_time(model, device, torch.float32, repeats if on_gpu else 1, warm_up=on_gpu)
            label = "float32" if dtype == torch.float32 else f"{dtype} torso (norms and the rest float32)"
            print(f"\n## 2. guided-diffusion 256x256 uncond, width {config['model_channels']}, {params:,} parameters "
                  f"(random weights), {name}, {label}")
            print(f"per network evaluation: {1000 * seconds:.1f} ms; "
                  f"20 evaluations (one sample): {20 * seconds:.2f} s; "
                  f"8 samples: {160 * seconds:.1f} s per image")


def evaluation_counts() -> None:
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
    counting = DDRMJPEG(lambda x, t: torch.zeros_like(x), abar)
    coeffs = photo_jpeg()
    print("\n## 3. network evaluations per 256x256 image (counted by the sampler)")
    print("| run | ours | paper |")
    print("|---|---|---|")
    for samples, paper in ((1, "20"), (8, "160 (8-sample average in the authors' code; the (A) rows: 30, 600)")):
        before = counting.network_evaluations
        counting(coeffs, num_samples=samples, generator=torch.Generator().manual_seed(0))
        print(f"| {samples} sample(s), 20 steps | {counting.network_evaluations - before} | {paper} |")
    tiled = DDRMJPEG(lambda x, t: torch.zeros_like(x), abar, image_size=SIZE)
    big = jpeg.encode(torch.rand(1, 3, 512, 768), 10, rounding="exact")
    before = tiled.network_evaluations
    tiled(big, generator=torch.Generator().manual_seed(0))
    print(f"| 1 sample of a 512x768 image, prior fixed at 256x256 (tiled) | {tiled.network_evaluations - before} | "
          "(square 256 only) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prior", default=None, help="a prior for part 1 instead of the tiny random one")
    parser.add_argument("--steps", type=int, default=3, help="steps of the timed run of part 1")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--full-cpu", action="store_true", help="also time the full-size network on the CPU")
    parser.add_argument("--cpu-width", type=int, default=32,
                        help="base width of the guided-diffusion network timed on a CPU without --full-cpu or a GPU")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tiny_prior_on_cpu(args.prior, args.steps, args.repeats)
    full_size_architecture(args.repeats, args.full_cpu, args.cpu_width)
    evaluation_counts()


if __name__ == "__main__":
    main()
