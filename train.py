"""Train a JPEG restoration model.

    python train.py                                  # the quickstart: small QGAC on the sample photos, CPU
    python train.py experiment=qgac_stage1 data=folder data.train_source=/data/train data.val_source=/data/val
    python train.py experiment=qgac_stage2 model.y_checkpoint=logs/qgac_stage1/runs/<run>/checkpoints/last.ckpt
    python train.py ... ckpt_path=<run>/checkpoints/last.ckpt        # resume

Configs live in conf/ (train.yaml and its groups); every run writes to its own directory under logs/.
"""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from jpegrestore.tasks.runner import train

    metrics = train(cfg)
    return metrics.get("val/psnr")


if __name__ == "__main__":
    main()
