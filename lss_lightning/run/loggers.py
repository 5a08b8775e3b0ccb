"""Loggers: figures to the loggers that take images, closing W&B runs, and a CSV logger whose training
history survives resuming: Lightning's CSVLogger deletes an existing
``metrics.csv`` when a run directory is reused (``version: ""``), so every ``ckpt_path=last`` resume and
every SLURM requeue lost the curves of the earlier attempts. Here an existing file is kept and the new
rows are appended (the header grows if new columns appear), so ``csv/metrics.csv`` holds every attempt.
Rows logged after the resumed checkpoint and before the stop appear twice (once per attempt), with the
same epoch and step, which is how the attempts can be told apart."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path

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


def log_evaluation(loggers, flat: Mapping[str, float], figures: Mapping[str, Path]) -> None:
    """An evaluation's flat metrics and figures (``eval/<name>``) to every logger but the CSV one."""
    for logger in loggers:
        if isinstance(logger, CSVLogger):
            continue  # metrics.json is the file record; a CSV written by DDP ranks cannot take new columns here
        logger.log_metrics(dict(flat))
        for name, path in figures.items():
            log_figure(logger, f"eval/{name}", path)
        logger.save()


def log_figure(logger, name: str, path: Path) -> None:
    """Send a PNG to loggers that take images (TensorBoard, Weights & Biases); others keep the file."""
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    if isinstance(logger, WandbLogger):
        logger.log_image(key=name, images=[str(path)])
    elif isinstance(logger, TensorBoardLogger):
        import matplotlib.image as mpimg

        logger.experiment.add_image(name, mpimg.imread(path)[..., :3], dataformats="HWC")


def finish_loggers(loggers, exit_code: int = 0) -> None:
    """Close W&B runs (the trainer already finalised the loggers it used); a non-zero exit code marks
    the W&B run as failed (e.g. preempted: it resumes under the same id)."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            wandb.finish(exit_code=exit_code)  # otherwise the next multirun job logs into this run
