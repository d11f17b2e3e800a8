"""Compute QGAC's per-frequency DCT statistics from a data config's training stream.

    python -m jpegrestore.tasks.dct_stats data=folder data.train_source=/data/train out=stats.json

Writes a ``DCTStats`` file (.json or .pt) with mean/std [3, 8, 8] of the dequantized coefficients of Y, Cb
and Cr, as the JPEGs the model will see are encoded (same crops, qualities and subsampling). Pass it to
training with ``dct_stats=<file>``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from jpegrestore.utils import get_logger

log = get_logger(__name__)


@torch.no_grad()
def compute_dct_stats(datamodule: Any, max_batches: int | None = None, min_std: float = 1.0) -> Any:
    """Accumulate the stats over up to ``max_batches`` training batches. -> ``DCTStats``.

    Stds are floored at ``min_std`` so rarely non-zero frequencies (e.g. chroma of grayscale photos) are not
    blown up by the normalization.
    """
    from jpegrestore.nn.qgac import DCTStatsAccumulator

    datamodule.setup("fit")
    accumulator = DCTStatsAccumulator(min_std=min_std)
    batches = 0
    for batch in datamodule.train_dataloader():
        batch = datamodule.on_after_batch_transfer(batch, 0)
        accumulator.update_coefficients(batch["coeffs"])
        batches += 1
        if max_batches is not None and batches >= max_batches:
            break
    if batches == 0:
        raise ValueError("the training data yielded no batch; nothing to compute DCT statistics from")
    return accumulator.compute(allow_missing=True)


def run(cfg: DictConfig) -> Path:
    """Instantiate ``cfg.data``, compute the stats, save them to ``cfg.out``. -> the written path."""
    from hydra.utils import instantiate

    out = Path(str(cfg.out))
    if out.suffix not in (".json", ".pt"):
        raise ValueError(f"out={out}: the stats file must end in .json or .pt")
    stats = compute_dct_stats(instantiate(cfg.data), cfg.get("max_batches"), float(cfg.get("min_std", 1.0)))
    out.parent.mkdir(parents=True, exist_ok=True)
    stats.save(out)
    log.info("wrote %s (Y DC mean %.1f, std %.1f)", out, float(stats.mean[0, 0, 0]), float(stats.std[0, 0, 0]))
    print(f"wrote {out}")
    return out


def _config_dir() -> str:
    """conf/ next to the source tree (editable install), else ./conf."""
    candidate = Path(__file__).resolve().parents[3] / "conf"
    return str(candidate if (candidate / "dct_stats.yaml").is_file() else Path.cwd() / "conf")


def main() -> None:
    import hydra

    hydra.main(version_base="1.3", config_path=_config_dir(), config_name="dct_stats")(run)()


if __name__ == "__main__":
    sys.exit(main())
