"""Stopping when the cluster says stop: a mid-epoch checkpoint, a non-zero exit, a resumable run.

How the pieces fit together (Lightning 2.x):

- SIGTERM (sent by SLURM, Kubernetes or ``kill`` before a kill): Lightning's signal connector notes it
  and raises ``SIGTERMException`` at the end of the current training batch, on every DDP rank at the same
  step. ``PreemptionCheckpoint`` then saves ``<run>/checkpoints/preempted.ckpt`` and ``run.train`` exits
  with ``EXIT_PREEMPTED`` (Lightning's exception is a ``SystemExit`` with code 0, which tells a scheduler
  that the job succeeded).
- SLURM's warning signal (``#SBATCH --signal=SIGUSR1@120``): Lightning's ``SLURMEnvironment`` (detected
  automatically, ``auto_requeue=True``) saves ``<run>/hpc_ckpt_<n>.ckpt`` and runs ``scontrol requeue``;
  SLURM then stops the job with SIGTERM, as above.
- The requeued job starts in the same run directory (``conf/hydra``: named after the SLURM job id) and
  ``ckpt_path=last`` resumes from the newest of those checkpoints (``lss_lightning.run.checkpoints``).
"""

from __future__ import annotations

import logging
import os
import signal
from contextlib import contextmanager
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lss_lightning.run.checkpoints import PREEMPTED_NAME

log = logging.getLogger(__name__)

EXIT_PREEMPTED = 128 + signal.SIGTERM  # 143, the shell's code for "terminated by SIGTERM"


class PreemptionCheckpoint(Checkpoint):
    """Save ``<dirpath>/preempted.ckpt`` when training stops on SIGTERM or Ctrl-C (not on other errors,
    whose state may be broken), written under a temporary name and renamed, so a kill during the write
    never leaves a truncated file for ``ckpt_path=last`` to pick. Removed when a fit completes.

    Not Lightning's ``OnExceptionCheckpoint``: that one saves on every exception, and its presence makes
    ``fit(ckpt_path=None)`` resume anyway, so ``ckpt_path=null`` could not mean "from scratch".
    """

    def __init__(self, dirpath: str | os.PathLike):
        super().__init__()
        self.path = Path(dirpath) / f"{PREEMPTED_NAME}.ckpt"

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, SIGTERMException | KeyboardInterrupt):
            return
        partial = self.path.with_suffix(".ckpt.partial")
        trainer.save_checkpoint(partial, weights_only=False)  # with optimizer state; every rank takes part
        if trainer.is_global_zero:
            os.replace(partial, self.path)
            log.warning(
                "stopped by %s at epoch %d, global step %d: saved %s",
                type(exception).__name__,
                trainer.current_epoch,
                trainer.global_step,
                self.path,
            )

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self.path.exists():
            self.path.unlink()  # the run finished: the end-of-training last.ckpt supersedes it


class SigtermDuringEvaluation(SystemExit):
    """Raised by ``stop_on_sigterm`` (exit code 143) so a scheduler sees the job did not finish."""


@contextmanager
def stop_on_sigterm(what: str):
    """SIGTERM inside the block ends the process with exit code 143 and one message (evaluation has no
    checkpoint to save: its outputs are written atomically, so nothing partial is left to read as done)."""

    def handler(signum, frame):
        log.error(
            "%s stopped by SIGTERM: outputs written so far are whole, nothing is half-written; rerun it", what
        )
        raise SigtermDuringEvaluation(EXIT_PREEMPTED)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals to whoever owns them
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
