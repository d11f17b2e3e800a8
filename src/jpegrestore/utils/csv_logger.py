"""Lightning's CSV logger, continuing an existing ``metrics.csv`` instead of deleting it.

A SLURM job that is requeued keeps its job id and therefore its run directory (``scripts/slurm/train.sbatch``);
Lightning's ``CSVLogger`` deletes the ``metrics.csv`` it finds there, which would drop every row logged before
the requeue. This one appends to it (under the union of the old and new columns).
"""

from __future__ import annotations

import csv

from lightning.pytorch.loggers import CSVLogger as _LightningCSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


class _ContinuingWriter(ExperimentWriter):
    """Keeps an existing ``metrics.csv`` and starts from its columns."""

    def _check_log_dir_exists(self) -> None:  # called by the writer's constructor, before the first save
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = sorted(next(csv.reader(file), []))


class CSVLogger(_LightningCSVLogger):
    """``lightning.pytorch.loggers.CSVLogger`` (same arguments) whose ``metrics.csv`` survives a restart in the
    same directory: rows are appended after those of the earlier runs."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(log_dir=self.log_dir)
        return self._experiment
