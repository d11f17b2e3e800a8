"""Sweep JPEG quality 5..95: evaluate a checkpoint (or plain JPEG) and plot metrics against quality and rate.

    python scripts/sweep_qf.py ckpt=logs/<experiment>/runs/<run>/checkpoints/last.ckpt data.source=/data/LIVE1
    python scripts/sweep_qf.py methods=<list in conf/methods> datasets=<list in conf/datasets>
    make sweep-qf CKPT=<run>/checkpoints/last.ckpt DATA=/data/LIVE1

Writes sweep.csv, psnr/ssim/lpips_vs_quality.png, psnr_gain_vs_quality.png and rate_distortion_psnr_bpp.png
(plus the evaluation's metrics.csv, metrics.json and summary.md) into logs/sweep_qf/runs/<timestamp>/.
"""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="../conf", config_name="sweep_qf")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from jpegrestore.evaluation.sweep import run_sweep

    output_dir = HydraConfig.get().runtime.output_dir
    result = run_sweep(cfg, output_dir)
    print(result.files["summary"].read_text())
    sweep_keys = ("sweep_csv", "psnr", "ssim", "lpips", "gain", "rate_distortion")
    for key, path in result.files.items():
        if key.rpartition("/")[2] in sweep_keys:
            print(f"{key}: {path}")


if __name__ == "__main__":
    main()
