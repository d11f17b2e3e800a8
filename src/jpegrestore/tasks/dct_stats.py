"""QGAC's per-frequency DCT statistics: computed once from the training stream, then carried by checkpoints.

    python -m jpegrestore.tasks.dct_stats data=folder data.train_source=/data/train out=stats.json

Writes a ``DCTStats`` file (.json or .pt) with mean/std [3, 8, 8] of the dequantized coefficients of Y, Cb
and Cr, as the JPEGs the model will see are encoded (same crops, qualities and subsampling; always in
colour, also for the grayscale stage-1 stream, so the chroma statistics are measured too). Pass it to
training with ``dct_stats=<file>``.

How the QGAC recipes get their statistics (``dct_stats`` in ``conf/train.yaml``):

- ``null`` (default): a run that starts from no checkpoint (stage 1, the quickstart) computes them from its
  own training data at setup (rank 0, with a progress bar, broadcast to the other ranks) and writes
  ``dct_stats.json`` into the run directory; stages 2 and 3 take them from the checkpoint they start from.
- a file: used as given; stages 2 and 3 refuse a file that disagrees with their checkpoint.
- ``prior``: the data-independent ``DCTStats.prior()`` (equal spread for Y, Cb and Cr, 3-10x too wide for
  chroma); only the quickstart recipe (``qgac_joint``) and tests accept it, with a warning.

Every checkpoint carries the statistics as buffers and their origin in ``checkpoint["jpegrestore"]["dct_stats"]``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from jpegrestore.utils import get_logger

log = get_logger(__name__)

#: ``dct_stats`` value that selects the data-independent prior (quickstart and tests only).
PRIOR = "prior"
#: Origin recorded for statistics that are the prior.
PRIOR_ORIGIN = "prior (data-independent, not measured)"
HOW_TO_COMPUTE = (
    "compute them with `python -m jpegrestore.tasks.dct_stats data=<your data config> out=stats.json` and pass "
    "dct_stats=stats.json, or let stage 1 compute them (dct_stats=null)"
)


@torch.no_grad()
def compute_dct_stats(datamodule: Any, max_batches: int | None = None, min_std: float = 1.0,
                      progress: bool = False) -> Any:
    """Accumulate the stats over up to ``max_batches`` batches of ``datamodule.statistics_dataloader()``.

    -> ``DCTStats`` of Y, Cb and Cr. Stds are floored at ``min_std`` so rarely non-zero frequencies (e.g.
    chroma of grayscale photos) are not blown up by the normalization. ``progress``: show a tqdm bar.
    """
    from tqdm.auto import tqdm

    from jpegrestore.nn.qgac import DCTStatsAccumulator

    loader = datamodule.statistics_dataloader()
    total = len(loader) if max_batches is None else min(len(loader), int(max_batches))
    accumulator = DCTStatsAccumulator(min_std=min_std)
    batches = 0
    for batch in tqdm(loader, total=total, desc="DCT statistics", unit="batch", disable=not progress):
        batch = datamodule.on_after_batch_transfer(batch, 0)
        accumulator.update_coefficients(batch["coeffs"])
        batches += 1
        if batches >= total:
            break
    if batches == 0:
        raise ValueError("the training data yielded no batch; nothing to compute DCT statistics from")
    return accumulator.compute()


def checkpoint_dct_stats(path: str | Path) -> tuple[Any, str]:
    """(DCTStats, origin) carried by a QGAC checkpoint. ValueError naming the file when it holds none.

    The origin is the checkpoint's ``jpegrestore.dct_stats`` entry; checkpoints written before it existed
    report ``PRIOR_ORIGIN`` when their buffers equal the prior, else "carried by <path>".
    """
    from jpegrestore.nn.qgac import DCTStats
    from jpegrestore.checkpoints import checkpoint_metadata, network_state_dict, read_checkpoint

    checkpoint = read_checkpoint(path)
    meta = checkpoint_metadata(checkpoint, str(path))
    state = network_state_dict(checkpoint, meta.get("state_dict_prefix", "net."))
    if "stats_mean" not in state or "stats_std" not in state:
        raise ValueError(f"{path} holds no QGAC DCT statistics (no stats_mean / stats_std in its network)")
    stats = DCTStats(state["stats_mean"], state["stats_std"])
    origin = meta.get("dct_stats")
    if origin is None:
        origin = PRIOR_ORIGIN if stats.is_prior() else f"carried by {path}"
    return stats, str(origin)


def run(cfg: DictConfig) -> Path:
    """Instantiate ``cfg.data``, compute the stats, save them to ``cfg.out``. -> the written path."""
    from hydra.utils import instantiate

    out = Path(str(cfg.out))
    if out.suffix not in (".json", ".pt"):
        raise ValueError(f"out={out}: the stats file must end in .json or .pt")
    stats = compute_dct_stats(instantiate(cfg.data), cfg.get("max_batches"), float(cfg.get("min_std", 1.0)),
                              progress=True)
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
