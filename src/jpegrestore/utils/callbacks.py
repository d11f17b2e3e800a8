"""Extra Lightning callbacks."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch


class SaveRankWeights(pl.Callback):
    """At the end of fitting, every DDP rank saves its module's parameters and buffers to ``dirpath/rank{r}.pt``.

    A debugging aid for data-parallel runs: all files should hold identical tensors. Add it with
    ``+callbacks.rank_weights._target_=jpegrestore.utils.callbacks.SaveRankWeights
    +callbacks.rank_weights.dirpath=<dir>``.
    """

    def __init__(self, dirpath: str | Path) -> None:
        super().__init__()
        self.dirpath = Path(dirpath)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        parameters = {name: p.detach().cpu().clone() for name, p in pl_module.named_parameters()}
        buffers = {name: b.detach().cpu().clone() for name, b in pl_module.named_buffers()}
        torch.save({"global_step": trainer.global_step, "parameters": parameters, "buffers": buffers},
                   self.dirpath / f"rank{trainer.global_rank}.pt")
