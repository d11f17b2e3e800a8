"""Blend a PSNR-trained and a GAN-trained checkpoint of one network (ESRGAN/QGAC network interpolation).

    python -m jpegrestore.tasks.interpolate stage2.ckpt stage3.ckpt qgac_interp.ckpt --alpha 0.7

The output holds ``(1 - alpha) * psnr + alpha * gan`` weights and loads with ``load_network``.
"""

from __future__ import annotations

import argparse

from jpegrestore.tasks.qgac import export_interpolated


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("psnr_checkpoint", help="checkpoint of the regression (PSNR) model, e.g. QGAC stage 2")
    parser.add_argument("gan_checkpoint", help="checkpoint of the GAN fine-tuned model, e.g. QGAC stage 3")
    parser.add_argument("out", help="output checkpoint path")
    parser.add_argument("--alpha", type=float, default=0.7, help="weight of the GAN model (default 0.7)")
    args = parser.parse_args(argv)
    path = export_interpolated(args.psnr_checkpoint, args.gan_checkpoint, args.out, args.alpha)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
