"""What every task module shares: optimiser and scheduler built from Hydra partials, and the composed
run configuration carried inside each checkpoint (so eval.py can rebuild data and model from it).
Checkpoints hold plain containers only, so they load with ``torch.load(..., weights_only=True)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torchmetrics import Metric

from lss_lightning.config import plain


class WeightedMean(Metric):
    """Mean of per-batch values weighted by batch size, exact across DDP ranks (summed float64 states).

    Not torchmetrics' MeanMetric: its in-place updates fail on states that trainer.validate reset under
    inference mode, when fit runs afterwards."""

    full_state_update = False

    def __init__(self):
        super().__init__()
        self.add_state("total", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("weight", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, value: torch.Tensor, weight: int) -> None:
        self.total = self.total + value.detach().double() * weight
        self.weight = self.weight + weight

    def compute(self) -> torch.Tensor:
        return (self.total / self.weight.clamp(min=1e-300)).float()


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
        # epoch means as torchmetrics with summed states, weighted by crops: Lightning's own sync_dist mean
        # floors the integer crop count when DDP ranks hold different numbers of crops (Lightning #21859)
        self.train_loss, self.val_loss = WeightedMean(), WeightedMean()

    def step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def update_validation_metrics(self, output: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _ = self.step(batch)
        self.train_loss(loss.detach(), weight=len(batch["input"]))  # this rank's step value; epoch: all ranks
        self.log("train/loss", self.train_loss, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss, output = self.step(batch)
        self.val_loss.update(loss, weight=len(batch["input"]))
        self.log("val/loss", self.val_loss, on_epoch=True, prog_bar=True)
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
