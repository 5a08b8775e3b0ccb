"""Callbacks that tests add to a run through the config (+callbacks.<name>._target_=training_probes.<Class>)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class SignalAtStep(Callback):
    """Send ``signal_name`` to this process once training reaches global step ``step`` (mid-epoch)."""

    def __init__(self, step: int, signal_name: str = "SIGTERM"):
        self.step, self.signum = int(step), getattr(signal, signal_name)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


class RecordTrainingItems(Callback):
    """Append each training batch's item indices, per rank and epoch, to <out_dir>/items_rank<r>.jsonl."""

    def __init__(self, out_dir: str):
        self.out_dir = Path(out_dir)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        record = {
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "index": batch["index"].tolist(),
            "corner": batch["corner"].tolist(),
        }
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_dir / f"items_rank{trainer.global_rank}.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")
