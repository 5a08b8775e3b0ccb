"""ParameterInference: crops of fields -> cosmological parameters with a field-to-vector backbone.

Conventions:
- Inputs are (B, C, n, n, n) float32 crops in physical units, normalised inside the module with the
  training statistics (``ChannelNormaliser``, buffers, so checkpoints carry them).
- Targets are (B, P) parameter values in physical units (Omega_m, sigma_8, ...), in the order of
  ``parameter_names``. The network works in u = (theta - lo) / (hi - lo), with [lo, hi] the prior box
  (``parameter_ranges``) or, if none is given, the training split's min/max per parameter.
- ``loss="mse"``: the network predicts u, loss = mean squared error in u.
  ``loss="moment"``: it predicts 2P numbers, the posterior mean of u and, through softplus, its
  standard deviation; loss = the CAMELS moment-network loss (``tasks.losses.moment_network_loss``).
- ``predict_parameters`` returns mean and std (None for mse) in physical units.

Optional extra inputs (Min et al.: "configuration space + Fourier space", and data summaries):
- ``fourier_channel=True`` appends, for every (normalised) input channel f, the channel
  log(1 + |F_m|^2 / n^3) with F = fftn(f) over the crop treated as periodic, fftshift-ed so that m = 0
  sits at cell (n//2, n//2, n//2) and cell j holds m = j - n//2 per axis. It is the per-mode power in
  grid units (a unit-variance white field has E|F_m|^2 / n^3 = 1), unchanged by periodic shifts of the
  crop and, for real fields, symmetric under m -> -m. The network therefore takes 2C channels.
- ``summaries=[power_spectrum, correlation_function, scattering]``: summary statistics of the normalised
  ``summary_field`` channel(s) of each crop, standardised with training-split statistics, fed to the head
  beside the pooled features (``tasks.summaries``). A backbone without a field input
  (``models.summary_mlp``, ``takes_field = False``) sees the summaries only: the P(k) and xi(r) baselines.
  For an input without transform, P_phys(k) = exp(log P_j) scale^2 dx^3 in (Mpc/h)^3 at
  k = 2 pi |m| / (n dx) (scale from the normaliser); no window deconvolution, no shot-noise subtraction.

Losses with a standard deviation (``moment``, ``gaussian_nll``) make the network predict 2P numbers: the
posterior mean of u and, through softplus, its standard deviation. Training also logs
``train/seconds_per_epoch`` and ``train/samples_per_second`` (wall clock of each training epoch).
"""

from __future__ import annotations

import inspect
import itertools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from torch import nn
from torchmetrics import Metric

from lss_lightning.data.normalisation import ChannelNormaliser, FieldLayout, as_layouts
from lss_lightning.fields.spectra import batch_power_spectrum
from lss_lightning.tasks.base import TaskModule
from lss_lightning.tasks.losses import GaussianNLLLoss, MomentNetworkLoss, mse_loss
from lss_lightning.tasks.summaries import BINNINGS, SummaryStatistics, power_shells

log = logging.getLogger(__name__)

LOSSES = {"mse": None, "moment": MomentNetworkLoss, "gaussian_nll": GaussianNLLLoss}


# ----------------------------------------------------------------------------------------------------
# Fourier-space inputs computed on the fly (batched, on the input's device, float32)
# ----------------------------------------------------------------------------------------------------


def fourier_power_channels(x: torch.Tensor) -> torch.Tensor:
    """(B, C, n, n, n) -> (B, C, n, n, n): log(1 + |fftn|^2 / n^3) per channel, fftshift-ed (m = 0 at
    cell n//2 of each axis). See the module docstring."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.float()
        cells = x.shape[-3] * x.shape[-2] * x.shape[-1]
        f = torch.fft.fftn(x, dim=(-3, -2, -1))
        power = (f.real.square() + f.imag.square()) / cells
        return torch.fft.fftshift(torch.log1p(power), dim=(-3, -2, -1))


def binned_power_spectrum(x: torch.Tensor, n_bins: int, binning: str = "log") -> torch.Tensor:
    """(B, C, n, n, n) -> (B, n_bins): shell means of sum_c |rfftn(x_c)|^2 / n^3 (grid units, see the
    module docstring); every shell holds at least one mode (ValueError otherwise)."""
    if x.ndim != 5 or not x.shape[-1] == x.shape[-2] == x.shape[-3]:
        raise ValueError(f"expected cubic crops shaped (B, C, n, n, n), got {tuple(x.shape)}")
    return batch_power_spectrum(x, power_shells(x.shape[-1], int(n_bins), binning))


# ----------------------------------------------------------------------------------------------------
# Targets: physical units <-> [0, 1]
# ----------------------------------------------------------------------------------------------------


class ParameterScaler(nn.Module):
    """u = (theta - lo) / (hi - lo) per parameter; buffers, so the box travels in the checkpoint."""

    def __init__(self, names: Sequence[str]):
        super().__init__()
        self.names = list(names)
        self.register_buffer("low", torch.zeros(len(self.names)))
        self.register_buffer("span", torch.ones(len(self.names)))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def set_ranges(self, ranges: Mapping[str, Any]) -> dict[str, list[float]]:
        """ranges: name -> (lo, hi), or name -> {"min": lo, "max": hi, ...} (the data module's
        ``parameter_statistics``). Returns name -> [lo, hi] as plain python floats, in ``names`` order."""
        plain = {}
        for name in self.names:
            if name not in ranges:
                raise ValueError(f"no range for parameter {name!r}; got ranges for {sorted(ranges)}")
            entry = ranges[name]
            lo, hi = (
                (float(entry["min"]), float(entry["max"]))
                if isinstance(entry, Mapping)
                else map(float, entry)
            )
            if not np.isfinite([lo, hi]).all() or hi <= lo:
                raise ValueError(f"parameter {name!r}: range [{lo}, {hi}] must be finite with lo < hi")
            plain[name] = [lo, hi]
        self.low.copy_(torch.tensor([plain[n][0] for n in self.names]))
        self.span.copy_(torch.tensor([plain[n][1] - plain[n][0] for n in self.names]))
        self.fitted.fill_(True)
        return plain

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        return (theta.float() - self.low) / self.span

    def inverse(self, u: torch.Tensor) -> torch.Tensor:
        return u.float() * self.span + self.low

    def inverse_std(self, std_u: torch.Tensor) -> torch.Tensor:
        return std_u.float() * self.span


# ----------------------------------------------------------------------------------------------------
# Validation metrics in physical units, reduced across DDP ranks
# ----------------------------------------------------------------------------------------------------


class ParameterErrors(Metric):
    """Per parameter over an epoch, in physical units and per crop: RMSE, rel_err = mean |pred - true| /
    |true| (uninformative for parameters whose values straddle 0, e.g. w_a) and mean predicted std
    (0 when no std is given)."""

    full_state_update = False

    def __init__(self, n_params: int):
        super().__init__()
        for name in ("squared", "relative", "std"):
            self.add_state(name, default=torch.zeros(n_params, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor, std: torch.Tensor | None = None) -> None:
        # out-of-place sums: states reset under trainer.validate's inference mode stay usable in fit
        pred, target = pred.double(), target.double()
        error = pred - target
        self.squared = self.squared + error.square().sum(0)
        self.relative = self.relative + (error.abs() / target.abs().clamp(min=1e-12)).sum(0)
        if std is not None:
            self.std = self.std + std.double().sum(0)
        self.count = self.count + len(pred)

    def compute(self) -> dict[str, torch.Tensor]:
        n = self.count.clamp(min=1)
        return {"rmse": (self.squared / n).sqrt(), "rel_err": self.relative / n, "std": self.std / n}


# ----------------------------------------------------------------------------------------------------
# The task
# ----------------------------------------------------------------------------------------------------


class ParameterInference(TaskModule):
    """net: a partial taking (in_channels, num_outputs[, img_size][, num_summaries]) -> nn.Module whose
    forward is net(x), net(x, summaries) or, for summary-only nets, net(summaries); input_layouts: the data
    module's channel layouts; parameter_names: target order; parameter_ranges: name -> [lo, hi] prior box
    (None: training-split min/max from the data module's ``parameter_statistics``); optimizer /
    scheduler: partials (Hydra ``_partial_: true``); loss: "mse", "moment" or "gaussian_nll"; img_size:
    cube side passed to the net (needed by ViT3D, omitted when None); fourier_channel, summaries,
    summary_field (None: the first scalar input field): the optional inputs of the module docstring;
    n_summary_bins / summary_binning (P(k)), xi_bins / xi_range (xi(r)), slice_bins (slice_means),
    scattering_*: their settings (``tasks.summaries``); summary_stats_batches: batches of training crops
    their standardisation is computed from."""

    target_kind = "parameters"  # the targets the data must provide (checked by run.assemble)

    def __init__(
        self,
        net: Callable[..., nn.Module],
        input_layouts: Sequence[FieldLayout | Mapping],
        parameter_names: Sequence[str],
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        scheduler_interval: str = "epoch",
        parameter_ranges: Mapping[str, Sequence[float]] | None = None,
        loss: str = "mse",
        img_size: int | None = None,
        fourier_channel: bool = False,
        summaries: Sequence[str] = (),
        summary_field: str | None = None,
        n_summary_bins: int = 8,
        summary_binning: str = "log",
        xi_bins: int = 8,
        slice_bins: int = 16,
        xi_range: Sequence[float] = (0.0, 0.5),
        scattering_J: int = 3,
        scattering_L: int = 2,
        scattering_sigma: float = 1.0,
        scattering_powers: Sequence[float] = (0.5, 1.0, 2.0),
        summary_stats_batches: int = 16,
        compile: bool = False,
    ):
        super().__init__(optimizer, scheduler, scheduler_interval)
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {list(LOSSES)}, got {loss!r}")
        self.input_layouts = as_layouts(input_layouts)
        self.parameter_names = [str(p) for p in parameter_names]
        if not self.parameter_names or len(set(self.parameter_names)) != len(self.parameter_names):
            raise ValueError(f"parameter_names must be distinct and non-empty, got {self.parameter_names}")
        settings = dict(
            pk_bins=n_summary_bins, pk_binning=summary_binning, xi_bins=xi_bins, xi_range=xi_range
        )
        settings.update(slice_bins=slice_bins, scattering_J=scattering_J, scattering_L=scattering_L)
        settings.update(scattering_sigma=scattering_sigma, scattering_powers=scattering_powers)
        self.summaries = SummaryStatistics(summaries, **settings) if summaries else None
        if summary_binning not in BINNINGS:
            raise ValueError(f"summary_binning must be one of {BINNINGS}, got {summary_binning!r}")
        self.summary_names = [str(s) for s in summaries]
        self.summary_channels = self._summary_channels(summary_field) if self.summary_names else slice(0, 0)
        self._save_plain_hyperparameters()
        self.input_norm = ChannelNormaliser(self.input_layouts)
        self.target_scaler = ParameterScaler(self.parameter_names)
        self.hparams["parameter_ranges"] = (
            None if parameter_ranges is None else self.target_scaler.set_ranges(parameter_ranges)
        )
        self.std_loss = LOSSES[loss]() if LOSSES[loss] is not None else None
        self.net = self._build_net(net, fourier_channel, img_size)
        self.takes_field = bool(getattr(self.net, "takes_field", True))
        if not self.takes_field and fourier_channel:
            raise ValueError("a summary-only network takes no field: set model.fourier_channel=false")
        self.val_errors = ParameterErrors(len(self.parameter_names))
        self._epoch_start, self._epoch_samples = None, 0
        self.epoch_timing: list[dict[str, float]] = []  # per training epoch, kept in checkpoints
        if compile:
            self.net = torch.compile(self.net)

    def _save_plain_hyperparameters(self) -> None:
        """The constructor's arguments (read from its frame) as plain python types in the checkpoint, so a
        model can be rebuilt without its training data."""
        ignore = ["net", "optimizer", "scheduler", "input_layouts"]
        self.save_hyperparameters(ignore=ignore, frame=inspect.currentframe().f_back)
        self.hparams["input_layouts"] = [asdict(f) for f in self.input_layouts]
        self.hparams["parameter_names"] = list(self.parameter_names)
        self.hparams["summaries"] = list(self.summary_names)
        self.hparams["xi_range"] = [float(r) for r in self.hparams["xi_range"]]
        self.hparams["scattering_powers"] = [float(q) for q in self.hparams["scattering_powers"]]
        img_size = self.hparams["img_size"]
        self.hparams["img_size"] = None if img_size is None else int(img_size)

    def _build_net(
        self, net: Callable[..., nn.Module], fourier_channel: bool, img_size: int | None
    ) -> nn.Module:
        """The backbone for these inputs (doubled by the Fourier channel), outputs (a mean, and a std with a
        moment or Gaussian loss, per parameter), cube side and summaries."""
        channels = sum(f.channels for f in self.input_layouts)
        net_kwargs: dict[str, Any] = {
            "in_channels": channels * (2 if fourier_channel else 1),
            "num_outputs": len(self.parameter_names) * (2 if self.std_loss is not None else 1),
        }
        if img_size is not None:
            net_kwargs["img_size"] = int(img_size)
        if self.num_summaries:
            net_kwargs["num_summaries"] = self.num_summaries
        return net(**net_kwargs)

    def _summary_channels(self, field: str | None) -> slice:
        """The channels of the field whose summaries are computed."""
        start = 0
        for f in self.input_layouts:
            if (field is None and f.kind == "scalar") or f.name == field:
                return slice(start, start + f.channels)
            start += f.channels
        names = [f.name for f in self.input_layouts]
        wanted = "a scalar input field" if field is None else f"input field {field!r}"
        raise ValueError(f"summaries need {wanted}; the inputs are {names}")

    @property
    def num_summaries(self) -> int:
        return 0 if self.summaries is None else self.summaries.size

    @property
    def predicts_std(self) -> bool:
        return self.std_loss is not None

    # -- wiring to the data ---------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule
        names = getattr(dm, "parameter_names", None)
        if names is not None and list(names) != self.parameter_names:
            raise ValueError(
                f"the data module's parameters {list(names)} differ from the model's {self.parameter_names} "
                "(order matters)"
            )
        geometry = getattr(dm, "geometry", None)
        if geometry is not None:
            self.check_input_size(int(geometry.input_size))
        if not bool(self.input_norm.fitted):
            self.input_norm.set_statistics(dm.statistics)
        if not bool(self.target_scaler.fitted):
            ranges = getattr(dm, "parameter_statistics", None)
            if not ranges:
                raise ValueError(
                    "parameter_ranges is None and the data module offers no parameter_statistics "
                    "(parameter -> {min, max} over the training split): give one of them"
                )
            constant = [n for n in self.parameter_names if ranges[n]["max"] <= ranges[n]["min"]]
            if constant:
                raise ValueError(
                    f"{constant} take one value in every training simulation of {dm.store_root}: there is nothing "
                    "to infer; use a store with varying cosmologies (e.g. data=mocks_lh, a latin-hypercube design) "
                    "or give model.parameter_ranges"
                )
            self.hparams["parameter_ranges"] = self.target_scaler.set_ranges(ranges)
            log.info(
                "parameters mapped to [0, 1] with training-split ranges %s", self.hparams.parameter_ranges
            )
        if self.summaries is not None and not bool(self.summaries.fitted):
            self.fit_summary_statistics(dm)

    @torch.no_grad()
    def fit_summary_statistics(self, dm) -> None:
        """Standardise the summaries with crops of training simulations: the data module's deterministic
        ``reference_dataloader`` (the same crops on every rank) or, failing that, its training loader."""
        loader = dm.reference_dataloader() if hasattr(dm, "reference_dataloader") else dm.train_dataloader()
        batches = itertools.islice(loader, int(self.hparams.summary_stats_batches))
        device = self.summaries.mean.device
        self.summaries.fit(self.input_norm(b["input"].to(device))[:, self.summary_channels] for b in batches)
        log.info("summary statistics %s standardised over training crops", self.summary_names)

    def check_input_size(self, n: int) -> None:
        """Raise ValueError if an n^3 crop does not fit the net's img_size or the summaries."""
        expected = getattr(self.net, "img_size", None)
        if expected is not None and expected != n:
            raise ValueError(
                f"the data module cuts {n}^3 crops but the network was built for img_size={expected}; "
                f"set the task's img_size to {n}"
            )
        if self.summaries is not None:
            channels = self.summary_channels.stop - self.summary_channels.start
            self.summaries.check(n, channels)

    # -- forward in physical units --------------------------------------------------------------
    def network_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Physical-unit crops -> (normalised crops [+ Fourier channels], standardised summaries or None)."""
        x = self.input_norm(x)
        summaries = None if self.summaries is None else self.summaries(x[:, self.summary_channels])
        if self.hparams.fourier_channel:
            x = torch.cat([x, fourier_power_channels(x).to(x.dtype)], dim=1)
        return x, summaries

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw network output for a physical-unit input batch: (B, P) or, with a std, (B, 2P)."""
        x, summaries = self.network_inputs(x)
        if not self.takes_field:
            return self.net(summaries)
        return self.net(x) if summaries is None else self.net(x, summaries)

    def decode_output(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Raw output -> (mean, std or None) in physical units."""
        if self.std_loss is None:
            return self.target_scaler.inverse(out.float()), None
        mean, std = self.std_loss.split(out)
        return self.target_scaler.inverse(mean), self.target_scaler.inverse_std(std)

    @torch.no_grad()
    def predict_parameters(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, C, n, n, n) physical-unit crops -> posterior mean (B, P) and std (B, P) or None (mse),
        in the parameters' physical units."""
        return self.decode_output(self(x))

    # -- steps ----------------------------------------------------------------------------------
    def step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        target = batch["target"]
        if target.ndim != 2 or target.shape[1] != len(self.parameter_names):
            raise ValueError(
                f"targets must be shaped (B, {len(self.parameter_names)}) for {self.parameter_names}, "
                f"got {tuple(target.shape)}"
            )
        out = self(batch["input"]).float()
        u = self.target_scaler(target)
        loss = mse_loss(out, u) if self.std_loss is None else self.std_loss(out, u)
        return loss, out

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        self._epoch_samples += len(batch["input"])
        return super().training_step(batch, batch_idx)

    def on_train_epoch_start(self) -> None:
        self._epoch_start, self._epoch_samples = time.perf_counter(), 0

    def on_train_epoch_end(self) -> None:
        if self._epoch_start is None:
            return
        seconds = time.perf_counter() - self._epoch_start  # training batches only (validation runs after)
        rate = self._epoch_samples / max(seconds, 1e-9)
        self.epoch_timing.append({"seconds": seconds, "samples_per_second": rate})
        self.log("train/seconds_per_epoch", seconds)
        self.log("train/samples_per_second", rate)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["lss_epoch_timing"] = list(self.epoch_timing)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self.epoch_timing = list(checkpoint.get("lss_epoch_timing", []))

    def update_validation_metrics(self, output: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        mean, std = self.decode_output(output)
        self.val_errors.update(mean, batch["target"], std)

    def on_validation_epoch_end(self) -> None:
        if not bool(self.val_errors.update_called):
            return
        errors = self.val_errors.compute()
        metrics = ("rmse", "rel_err", "std") if self.predicts_std else ("rmse", "rel_err")
        for i, name in enumerate(self.parameter_names):
            for metric in metrics:
                self.log(f"val/{metric}_{name}", errors[metric][i].float())
        self.val_errors.reset()
