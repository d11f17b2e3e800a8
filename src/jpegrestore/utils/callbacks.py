"""Extra Lightning callbacks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, OnExceptionCheckpoint
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


def fitting_ends_here(trainer: pl.Trainer) -> bool:
    """Whether fitting stops after the batch that just ran (asked in ``on_train_batch_end`` or
    ``on_train_epoch_end``): ``max_steps`` reached, the last batch of the last epoch (``max_epochs``), or a stop
    requested (e.g. by Lightning's ``Timer``). The same answer on every DDP rank (it reads only shared state)."""
    if trainer.max_steps is not None and trainer.max_steps >= 0 and trainer.global_step >= trainer.max_steps:
        return True
    if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch and trainer.max_epochs is not None \
            and trainer.max_epochs >= 0 and trainer.current_epoch + 1 >= trainer.max_epochs:
        return True
    return bool(trainer.should_stop)


class LastCheckpoint(ModelCheckpoint):
    """The unmonitored ``last`` checkpoint: written after every validation, and also when fitting reaches its
    final step, so a run always ends with it at that step whatever ``max_steps``, ``max_epochs`` and the
    validation interval are (Lightning alone refreshes it only on validation, so steps after the last validation
    were lost).

    The final save happens where a run resumed from it continues exactly: after the last batch when that batch
    ends the run inside an epoch (where Lightning's step-triggered checkpoints are saved), at the epoch's end when
    it is the epoch's last batch (a save after that batch resumes one epoch too far in Lightning 2.6). A
    validation at that same step does not save again; any other way fitting ends normally is covered in
    ``on_train_end``. Every rank calls ``trainer.save_checkpoint`` (DDP needs all of them); rank 0 writes the
    file. Use with ``monitor=None`` (the default config: ``filename: last``, ``save_top_k: 1``).
    """

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch and fitting_ends_here(trainer):
            self.save_final(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if fitting_ends_here(trainer):
            self.save_final(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self.save_final(trainer)

    def save_final(self, trainer: pl.Trainer) -> None:
        """Save now unless this step is already saved (or fitting is not running, e.g. a sanity check)."""
        if self._should_skip_saving_checkpoint(trainer):
            return
        candidates = self._monitor_candidates(trainer)
        self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)


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
