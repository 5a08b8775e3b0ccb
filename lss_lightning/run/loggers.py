"""A CSV logger whose training history survives resuming: Lightning's CSVLogger deletes an existing
``metrics.csv`` when a run directory is reused (``version: ""``), so every ``ckpt_path=last`` resume and
every SLURM requeue lost the curves of the earlier attempts. Here an existing file is kept and the new
rows are appended (the header grows if new columns appear), so ``csv/metrics.csv`` holds every attempt.
Rows logged after the resumed checkpoint and before the stop appear twice (once per attempt), with the
same epoch and step, which is how the attempts can be told apart."""

from __future__ import annotations

import csv

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


class AppendingExperimentWriter(ExperimentWriter):
    """Lightning's CSV writer, except that it appends to a metrics file left by an earlier attempt."""

    def _check_log_dir_exists(self) -> None:  # Lightning's deletes the earlier file here
        if not self._fs.isfile(self.metrics_file_path):
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            header = next(csv.reader(file), [])
        self.metrics_keys = sorted(set(header))


class ResumableCSVLogger(CSVLogger):
    """``lightning.pytorch.loggers.CSVLogger`` with ``AppendingExperimentWriter``; same arguments."""

    @property
    @rank_zero_experiment
    def experiment(self) -> AppendingExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment
