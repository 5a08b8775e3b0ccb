"""VelocityReconstruction: density crops -> velocity (or momentum) crops with a field-to-field backbone.

Inputs are normalised inside the module (statistics from the training split, stored as buffers, so
every checkpoint carries them). With ``loss="mse"`` the network predicts the target divided by its
training rms; with ``loss="magnitude_direction"`` it predicts Wu et al. 2023's 5-channel encoding
(see ``tasks.losses``). ``predict_physical`` always returns the target in physical units (km/s).

Residual target (``residual_of``): the network predicts the correction to a baseline field that is one
of its inputs (e.g. ``velocity_linear``, linear theory from the whole box), in units of the target's
training rms; the baseline (the input channels of that field, centre-cropped to the output) is added
back before every loss and metric, so a network that outputs zero reproduces the baseline exactly. With
the magnitude + direction loss the corrected velocity is encoded before the loss. ``"auto"`` takes the
first ``velocity_linear*`` input when the target is a velocity of the same kind and channels, else none.

Loss weights: a batch may carry ``weight`` (B, 1, crop, crop, crop), e.g. the haloes' CIC mass per cell
(``data.loss_weight``); the loss is then the weighted mean over cells (``tasks.losses.weighted_cell_mean``),
so cells of weight 0 (no halo) do not count. ``loss_weight_floor`` is added to every weight.
``residual_gain``: the baseline is multiplied by a learnable factor per channel (starting at 1), e.g. the
1/b of a linear velocity from biased tracers, or the damping of linear theory at the haloes.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from lss_lightning.data.normalisation import ChannelNormaliser, FieldLayout, as_layouts
from lss_lightning.tasks.base import TaskModule
from lss_lightning.tasks.losses import ENCODED_CHANNELS, make_loss
from lss_lightning.tasks.metrics import CropCorrelation

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
        residual_of: str | None = None,
        residual_gain: bool = False,
        loss_weight_floor: float = 0.0,
    ):
        super().__init__(optimizer, scheduler, scheduler_interval)
        self.input_layouts, self.target_layouts = as_layouts(input_layouts), as_layouts(target_layouts)
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler", "input_layouts", "target_layouts"])
        # plain dicts in the checkpoint, so a model can be rebuilt without its training store
        self.hparams["input_layouts"] = [asdict(f) for f in self.input_layouts]
        self.hparams["target_layouts"] = [asdict(f) for f in self.target_layouts]
        target_channels = sum(f.channels for f in self.target_layouts)
        self.loss_fn = make_loss(loss)
        if loss_weight_floor < 0:
            raise ValueError(f"model.loss_weight_floor must be >= 0, got {loss_weight_floor}")
        baseline = residual_baseline(self.input_layouts, self.target_layouts, residual_of)
        self.hparams["residual_of"] = baseline[0] if baseline else None  # "auto" resolved, as recorded
        self.baseline_channels = baseline[1:] if baseline else None
        if residual_gain and baseline is None:
            raise ValueError("model.residual_gain=true needs a residual target: set model.residual_of")
        # one learnable factor per baseline channel, starting at 1 (the untrained network is the baseline)
        self.baseline_gain = nn.Parameter(torch.ones(baseline[2])) if residual_gain else None
        if loss == "magnitude_direction":
            if len(self.target_layouts) != 1 or self.target_layouts[0].kind != "vector":
                raise ValueError("the magnitude_direction loss needs exactly one vector target (velocity)")
        if loss == "magnitude_direction" and self.baseline_channels is None:
            out_channels = ENCODED_CHANNELS
        else:  # the target itself, or the correction to the baseline, in units of the target's rms
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

    def baseline(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """The residual's baseline: its input channels of the physical-unit batch ``x``, centre-cropped
        to the output's spatial ``size``."""
        first, count = self.baseline_channels
        pads = [(n - m) // 2 for n, m in zip(x.shape[2:], size, strict=True)]
        window = tuple(slice(p, p + m) for p, m in zip(pads, size, strict=True))
        base = x[(slice(None), slice(first, first + count), *window)].float()
        if self.baseline_gain is not None:
            base = base * self.baseline_gain.view(1, -1, *([1] * len(size)))
        return base

    def to_physical(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Raw network output for the physical-unit input batch ``x`` -> the target in its units."""
        out = out.float()
        if self.baseline_channels is not None:  # correction in units of the target rms (no shift)
            return self.baseline(x, out.shape[2:]) + self.target_norm.unscale(out)
        if self.hparams.loss == "magnitude_direction":
            return self.loss_fn.decode_prediction(out)
        return self.target_norm.inverse(out)

    @torch.no_grad()
    def predict_physical(self, x: torch.Tensor) -> torch.Tensor:
        """Prediction in the target's physical units (km/s) for a physical-unit input batch."""
        return self.to_physical(self(x), x)

    # -- steps ----------------------------------------------------------------------------------
    def loss(self, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The configured loss of a raw output against the batch's target (weighted by its ``weight``)."""
        weight = batch.get("weight")
        if weight is not None and self.hparams.loss_weight_floor:
            weight = weight + self.hparams.loss_weight_floor
        if self.baseline_channels is None:
            return self.loss_fn(out.float(), self.encode_target(batch["target"]), weight)
        pred = self.to_physical(out, batch["input"])  # the baseline added back before the loss
        return self.loss_fn(self.encode_target(pred), self.encode_target(batch["target"]), weight)

    def step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        out = self(batch["input"])
        return self.loss(out, batch), out

    def update_validation_metrics(self, output: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        self.val_spectra.update(self.to_physical(output, batch["input"]), batch["target"])

    def on_validation_epoch_end(self) -> None:
        if self.val_spectra is None or not self.val_spectra.k_values:
            return
        for name, value in self.val_spectra.compute().items():
            self.log(f"val/{name}", value.float(), prog_bar=name.startswith("r_"))
        self.val_spectra.reset()


def residual_baseline(
    inputs: Sequence[FieldLayout], targets: Sequence[FieldLayout], residual_of: str | None
) -> tuple[str, int, int] | None:
    """(name, first channel, channels) of the baseline input field in the input stack, or None.

    ``"auto"``: the first ``velocity_linear*`` input when the one target is a velocity of its kind and
    channels (so ``data.inputs=[density, velocity_linear]`` makes the velocity task a correction to linear
    theory), else None. A named baseline must be an input of the target's kind and channel count."""
    if residual_of is None or residual_of in ("none", "null"):
        return None
    starts = dict(
        zip(
            [f.name for f in inputs],
            list(itertools.accumulate([0] + [f.channels for f in inputs]))[:-1],
            strict=True,
        )
    )
    by_name = {f.name: f for f in inputs}
    target = targets[0] if len(targets) == 1 else None
    if residual_of == "auto":
        if target is None or "velocity" not in target.name:
            return None
        name = next((f.name for f in inputs if f.name.startswith("velocity_linear")), None)
        if name is None or (by_name[name].kind, by_name[name].channels) != (target.kind, target.channels):
            return None
        return name, starts[name], by_name[name].channels
    if residual_of not in by_name:
        raise ValueError(
            f"model.residual_of={residual_of!r} is not among data.inputs {list(by_name)}: the baseline of a "
            f"residual target is an input channel; add it to data.inputs or set model.residual_of=null"
        )
    base = by_name[residual_of]
    if target is None or (base.kind, base.channels) != (target.kind, target.channels):
        shown = [(f.name, f.kind, f.channels) for f in targets]
        raise ValueError(
            f"model.residual_of={residual_of!r} is a {base.kind} of {base.channels} channels but the target "
            f"{shown} is not one field of that kind; a residual needs one target of the baseline's kind"
        )
    return residual_of, starts[residual_of], base.channels
