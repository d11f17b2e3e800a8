"""Evaluate a restoration method against plain JPEG on one set of images.

    python evaluate.py                                   # plain JPEG baseline on the sample test images
    python evaluate.py ckpt=logs/.../checkpoints/last.ckpt qf=[5,10,20]
    python evaluate.py ckpt=... data.source=/data/LIVE1 device=cuda tile=512
    python evaluate.py methods=baselines datasets=codiff +methods.mine.ckpt=... qf=[5,10,20]   # several of each

Configs live in conf/evaluate.yaml (lists of methods in conf/methods/, of data sets in conf/datasets/); every run
writes metrics.csv, metrics.json, summary.md and comparison PNGs (and, comparing several methods, plots against QF)
into its own directory under logs/evaluate/.
"""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from jpegrestore.evaluation.runner import evaluate_config

    output_dir = HydraConfig.get().runtime.output_dir
    result = evaluate_config(cfg, output_dir)
    print(result.files["summary"].read_text())
    print(f"results: {output_dir}")


if __name__ == "__main__":
    main()
