"""What every task module shares: optimiser and scheduler built from Hydra partials, and the composed
run configuration carried inside each checkpoint (so eval.py can rebuild data and model from it).
Checkpoints hold plain containers only, so they load with ``torch.load(..., weights_only=True)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch

from lss_lightning.checkpoints import plain


class TaskModule(L.LightningModule):
    """Subclasses call ``super().__init__(optimizer, scheduler, scheduler_interval)``, set ``target_kind``
    ("fields" or "parameters": what the data module must provide as targets) and implement
    ``step(batch) -> (loss, raw output)`` and ``update_validation_metrics(output, batch)``."""

    target_kind = "fields"

    def __init__(
        self,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        scheduler_interval: str = "epoch",
    ):
        super().__init__()
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.scheduler_interval = scheduler_interval
        self.run_config: dict | None = None  # the composed Hydra config, set by run.train

    def step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def update_validation_metrics(self, output: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _ = self.step(batch)
        size = len(batch["input"])
        # sync_dist: the epoch mean over all ranks (one scalar all-reduce per step, small next to a 3D step)
        self.log(
            "train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=size, sync_dist=True
        )
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss, output = self.step(batch)
        size = len(batch["input"])
        self.log("val/loss", loss, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=size)
        self.update_validation_metrics(output, batch)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["lss_config"] = plain(self.run_config)
        # Hydra list/dict arguments (e.g. metric_k) would need weights_only=False to load
        checkpoint["hyper_parameters"] = plain(checkpoint.get("hyper_parameters", {}))

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.run_config = checkpoint.get("lss_config")

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": scheduler,
                "interval": self.scheduler_interval,
                "monitor": "val/loss",
            },
        }
