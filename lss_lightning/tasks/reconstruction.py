"""VelocityReconstruction: density crops -> velocity (or momentum) crops with a field-to-field backbone.

Inputs are normalised inside the module (statistics from the training split, stored as buffers, so
every checkpoint carries them). With ``loss="mse"`` the network predicts the target divided by its
training rms; with ``loss="magnitude_direction"`` it predicts Wu et al. 2023's 5-channel encoding
(see ``tasks.losses``). ``predict_physical`` always returns the target in physical units (km/s).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from lss_lightning.data.normalisation import ChannelNormaliser, FieldLayout, as_layouts
from lss_lightning.evaluate.metrics import CropCorrelation
from lss_lightning.tasks.base import TaskModule
from lss_lightning.tasks.losses import ENCODED_CHANNELS, make_loss

log = logging.getLogger(__name__)


class VelocityReconstruction(TaskModule):
    """net: a partial taking (in_channels, out_channels) -> nn.Module with valid convolutions;
    optimizer / scheduler: partials (Hydra ``_partial_: true``) taking params / optimizer;
    input_layouts / target_layouts: the data module's channel layouts; metric_k: k (h/Mpc) at which the
    validation r(k) and T(k) of crops are logged."""

    target_kind = "fields"  # what the data module must provide as targets

    def __init__(
        self,
        net: Callable[..., nn.Module],
        input_layouts: Sequence[FieldLayout | Mapping],
        target_layouts: Sequence[FieldLayout | Mapping],
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        scheduler_interval: str = "epoch",
        loss: str = "mse",
        metric_k: Sequence[float] = (0.1, 0.3, 0.5, 1.0),
        compile: bool = False,
    ):
        super().__init__(optimizer, scheduler, scheduler_interval)
        self.input_layouts, self.target_layouts = as_layouts(input_layouts), as_layouts(target_layouts)
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler", "input_layouts", "target_layouts"])
        # plain dicts in the checkpoint, so a model can be rebuilt without its training store
        self.hparams["input_layouts"] = [asdict(f) for f in self.input_layouts]
        self.hparams["target_layouts"] = [asdict(f) for f in self.target_layouts]
        target_channels = sum(f.channels for f in self.target_layouts)
        self.loss_fn = make_loss(loss)
        if loss == "magnitude_direction":
            if len(self.target_layouts) != 1 or self.target_layouts[0].kind != "vector":
                raise ValueError("the magnitude_direction loss needs exactly one vector target (velocity)")
            out_channels = ENCODED_CHANNELS
        else:
            out_channels = target_channels
        self.net = net(in_channels=sum(f.channels for f in self.input_layouts), out_channels=out_channels)
        self.input_norm = ChannelNormaliser(self.input_layouts)
        self.target_norm = ChannelNormaliser(self.target_layouts)
        self.val_spectra: CropCorrelation | None = None
        if compile:
            self.net = torch.compile(self.net)

    # -- wiring to the data ---------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule
        geometry = dm.geometry
        self.net.check_crop_padding(geometry.crop, geometry.pad)
        if not bool(self.input_norm.fitted):
            self.input_norm.set_statistics(dm.statistics)
            self.target_norm.set_statistics(dm.statistics)
        cell = dm.store.box_size / dm.store.grid
        self.val_spectra = CropCorrelation(geometry.crop, cell, self.hparams.metric_k)

    # -- forward in physical units --------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw network output for a physical-unit input batch."""
        return self.net(self.input_norm(x))

    def encode_target(self, target: torch.Tensor) -> torch.Tensor:
        if self.hparams.loss == "magnitude_direction":
            return self.loss_fn.encode_target(target)
        return self.target_norm(target)

    def decode_output(self, out: torch.Tensor) -> torch.Tensor:
        out = out.float()
        if self.hparams.loss == "magnitude_direction":
            return self.loss_fn.decode_prediction(out)
        return self.target_norm.inverse(out)

    @torch.no_grad()
    def predict_physical(self, x: torch.Tensor) -> torch.Tensor:
        """Prediction in the target's physical units (km/s) for a physical-unit input batch."""
        return self.decode_output(self(x))

    # -- steps ----------------------------------------------------------------------------------
    def step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        out = self(batch["input"])
        loss = self.loss_fn(out.float(), self.encode_target(batch["target"]))
        return loss, out

    def update_validation_metrics(self, output: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        self.val_spectra.update(self.decode_output(output), batch["target"])

    def on_validation_epoch_end(self) -> None:
        if self.val_spectra is None or not self.val_spectra.k_values:
            return
        for name, value in self.val_spectra.compute().items():
            self.log(f"val/{name}", value.float(), prog_bar=name.startswith("r_"))
        self.val_spectra.reset()
