"""Extra Lightning callbacks."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import OnExceptionCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException


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


class PreemptionCheckpoint(OnExceptionCheckpoint):
    """``OnExceptionCheckpoint`` (``dirpath/filename.ckpt`` on any exception) that stops cleanly when SIGTERM
    arrives at the end of an epoch.

    Lightning turns SIGTERM into an exception at the end of the current batch, and a checkpoint saved then
    resumes exactly, except after an epoch's last batch: there Lightning defers the exception until it has
    counted the epoch as completed, and a checkpoint saved at that point resumes one epoch too far (Lightning
    2.6). So after the validation that follows an epoch's last batch, and at the epoch's end, this callback asks
    the ranks whether any of them received SIGTERM; if so, all of them save and raise ``SIGTERMException``
    together, before Lightning counts the epoch. (Resuming from the epoch's end relies on the training sampler
    reading the trainer's epoch, see ``data.datasets.EpochSampler``.)
    """

    def __init__(self, dirpath: str | Path, filename: str = "interrupted") -> None:
        super().__init__(dirpath, filename)
        self._saved_for_signal = False

    def _stop_if_signalled(self, trainer: pl.Trainer) -> None:
        if trainer.state.fn != "fit" or not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return
        if trainer.strategy.reduce_boolean_decision(trainer.received_sigterm, all=False):
            trainer.save_checkpoint(self.ckpt_path)
            self._saved_for_signal = True
            raise SIGTERMException

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop_if_signalled(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop_if_signalled(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self._saved_for_signal and isinstance(exception, SIGTERMException):
            return  # the checkpoint saved before raising stands
        super().on_exception(trainer, pl_module, exception)
