"""Summary statistics of crops fed to a network's head beside its pooled features (Min et al.), or alone
(the P(k) and xi(r) baselines of ``models.summary_mlp``), each standardised with training-split statistics.

Every summary is computed on the *normalised* input crop (the network's own input) of the summary field,
each crop treated as a periodic cube of n cells per side:

- ``power_spectrum``: log of the shell-mean power sum_c |rfftn(x_c)|^2 / n^3 in ``pk_bins`` shells of
  |m| between 1 and n/2 (``pk_binning`` linear or log; see ``tasks.parameters``);
- ``correlation_function``: the monopole xi(r) by FFT of the crop (``fields.spectra.batch_correlation_function``,
  crop mean subtracted), in ``xi_bins`` linear bins of |r| from ``xi_range[0] n`` to ``xi_range[1] n``
  cells. Pan et al. 2020 fit s in (0, 130) and (10, 130) Mpc/h of 256 Mpc/h boxes: ``xi_range`` =
  [0, 0.5] and [0.04, 0.5] (130/256 = 0.508, capped at the half side, beyond which a periodic cube has no
  new separations);
- ``scattering``: log of the 3D solid-harmonic scattering coefficients (``fields.scattering``) with
  ``scattering_J`` scales from ``scattering_sigma`` cells, l = 0..``scattering_L`` and integral powers
  ``scattering_powers``.
- ``slice_means``: the crop's mean in ``slice_bins`` equal slices along its last axis (all channels); on a
  light cone's (RA, DEC, z) histogram, the tracer counts per redshift slice (dN/dz, after the transform).

``SummaryStatistics`` concatenates the chosen summaries in the order given and standardises each feature
with its mean and standard deviation over crops of training simulations (``fit``); the statistics are
buffers, so checkpoints carry them, as the field normalisation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from lss_lightning.fields.scattering import scattering_size, solid_harmonic_filters, solid_harmonic_scattering
from lss_lightning.fields.spectra import (
    batch_correlation_function,
    batch_power_spectrum,
    separation_counts,
    shell_modes,
)

SUMMARIES = ("power_spectrum", "correlation_function", "scattering", "slice_means")
BINNINGS = ("linear", "log")


def summary_bin_edges(n: int, n_bins: int, binning: str = "log") -> np.ndarray:
    """P(k) shell edges in |m| (units of the crop's fundamental mode) from 1 to n/2.

    linear: n_bins equal shells over [1/2, n/2 + 1/2] (with n_bins = n/2 these are the integer shells
    of ``fields.spectra``'s default binning); log: log-spaced over [1, n/2]. Shell j holds
    edges[j] <= |m| < edges[j + 1]; the last edge is nudged up so that |m| = n/2 belongs to the last shell.
    """
    if binning not in BINNINGS:
        raise ValueError(f"summary binning must be one of {BINNINGS}, got {binning!r}")
    if n < 2 or n_bins < 1:
        raise ValueError(f"need a crop of at least 2 cells and at least one bin, got n={n}, n_bins={n_bins}")
    top = n // 2
    if binning == "linear":
        edges = np.linspace(0.5, top + 0.5, n_bins + 1)
    else:
        edges = np.geomspace(1.0, top, n_bins + 1) if top > 1 else np.linspace(1.0, 1.0, n_bins + 1)
    edges[-1] *= 1.0 + 1e-9
    return edges


def power_shells(n: int, n_bins: int, binning: str) -> np.ndarray:
    """The P(k) shell edges, after checking that every shell of a n^3 crop holds at least one mode."""
    edges = summary_bin_edges(n, n_bins, binning)
    empty = np.flatnonzero(shell_modes(n, edges) == 0)
    if len(empty):
        feasible = max(
            (b for b in range(1, n_bins) if shell_modes(n, summary_bin_edges(n, b, binning)).all()), default=0
        )
        raise ValueError(
            f"{n_bins} {binning} P(k) shells leave shells {empty.tolist()} empty for a {n}^3 crop; "
            f"use fewer shells (e.g. n_summary_bins={feasible}) or linear binning"
        )
    return edges


def xi_edges(n: int, n_bins: int, r_range: Sequence[float]) -> np.ndarray:
    """xi(r) bin edges in cells: n_bins linear bins over [r_range[0] n, r_range[1] n], each non-empty."""
    lo, hi = (float(r) for r in r_range)
    if not 0.0 <= lo < hi <= 0.5:
        raise ValueError(
            f"xi_range must satisfy 0 <= lo < hi <= 0.5 (fractions of the crop side), got {[lo, hi]}"
        )
    edges = np.linspace(lo * n, hi * n, int(n_bins) + 1)
    edges[-1] *= 1.0 + 1e-9
    empty = np.flatnonzero(separation_counts(n, edges) == 0)
    if len(empty):
        raise ValueError(
            f"{n_bins} xi(r) bins over {[lo, hi]} of a {n}^3 crop leave bins {empty.tolist()} without "
            f"separations; use fewer xi_bins (at most {max(1, int((hi - lo) * n))}) or a wider xi_range"
        )
    return edges


class SummaryStatistics(nn.Module):
    """(B, C, n, n, n) normalised crops -> (B, size) standardised summaries; see the module docstring."""

    def __init__(
        self,
        names: Sequence[str],
        *,
        pk_bins: int = 8,
        pk_binning: str = "log",
        xi_bins: int = 8,
        xi_range: Sequence[float] = (0.0, 0.5),
        scattering_J: int = 3,
        scattering_L: int = 2,
        scattering_sigma: float = 1.0,
        scattering_powers: Sequence[float] = (0.5, 1.0, 2.0),
        slice_bins: int = 16,
    ):
        super().__init__()
        self.names = [str(s) for s in names]
        unknown = sorted(set(self.names) - set(SUMMARIES))
        if unknown:
            raise ValueError(f"unknown summaries {unknown}; known: {list(SUMMARIES)}")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"summaries listed twice: {self.names}")
        if pk_binning not in BINNINGS:
            raise ValueError(f"summary_binning must be one of {BINNINGS}, got {pk_binning!r}")
        self.pk_bins, self.pk_binning = int(pk_bins), pk_binning
        self.xi_bins, self.xi_range = int(xi_bins), [float(r) for r in xi_range]
        if len(self.xi_range) != 2 or not 0.0 <= self.xi_range[0] < self.xi_range[1] <= 0.5:
            raise ValueError(
                f"xi_range must be [lo, hi] with 0 <= lo < hi <= 0.5 (fractions of the crop side), got {self.xi_range}"
            )
        self.scattering = {
            "J": int(scattering_J),
            "L": int(scattering_L),
            "sigma": float(scattering_sigma),
            "powers": [float(q) for q in scattering_powers],
        }
        self.slice_bins = int(slice_bins)
        sizes = {
            "slice_means": self.slice_bins,
            "power_spectrum": self.pk_bins,
            "correlation_function": self.xi_bins,
            "scattering": scattering_size(
                self.scattering["J"], self.scattering["L"], self.scattering["powers"]
            ),
        }
        self.sizes = [sizes[s] for s in self.names]
        self.register_buffer("mean", torch.zeros(self.size))
        self.register_buffer("std", torch.ones(self.size))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @property
    def size(self) -> int:
        return int(sum(self.sizes))

    def check(self, n: int, channels: int) -> None:
        """Raise ValueError, naming the fix, if these summaries cannot be computed on n^3 crops."""
        if "power_spectrum" in self.names:
            power_shells(n, self.pk_bins, self.pk_binning)
        if "correlation_function" in self.names:
            xi_edges(n, self.xi_bins, self.xi_range)
        if "slice_means" in self.names and (self.slice_bins < 1 or n % self.slice_bins):
            raise ValueError(
                f"slice_bins={self.slice_bins} must divide the crop side {n} (the slices of slice_means)"
            )
        if "scattering" in self.names:
            if channels != 1:
                raise ValueError(
                    f"the scattering summary needs a one-channel (scalar) summary_field, got {channels}"
                )
            s = self.scattering
            solid_harmonic_filters(n, s["J"], s["L"], s["sigma"])

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """Unstandardised summaries (B, size) of (B, C, n, n, n) crops."""
        n, parts = x.shape[-1], []
        for name in self.names:
            if name == "power_spectrum":
                power = batch_power_spectrum(x, power_shells(n, self.pk_bins, self.pk_binning))
                parts.append(torch.log(power.clamp(min=1e-30)))
            elif name == "correlation_function":
                parts.append(batch_correlation_function(x, xi_edges(n, self.xi_bins, self.xi_range)))
            elif name == "slice_means":
                parts.append(x.mean(dim=(1, 2, 3)).reshape(len(x), self.slice_bins, -1).mean(-1))
            else:
                s = self.scattering
                coefficients = solid_harmonic_scattering(x[:, 0], s["J"], s["L"], s["sigma"], s["powers"])
                parts.append(torch.log(coefficients.clamp(min=1e-30)))
        return torch.cat(parts, dim=1)

    @torch.no_grad()
    def fit(self, crops: Iterable[torch.Tensor]) -> None:
        """Per-feature mean and standard deviation over batches of normalised training crops (float64 sums)."""
        total = total_sq = None
        count = 0
        for x in crops:
            s = self.raw(x).double()
            total = s.sum(0) if total is None else total + s.sum(0)
            total_sq = s.square().sum(0) if total_sq is None else total_sq + s.square().sum(0)
            count += len(s)
        if count < 2:
            raise ValueError("summary statistics need at least two training crops")
        mean = total / count
        std = (total_sq / count - mean.square()).clamp(min=0).sqrt()
        std = torch.where(
            std > 1e-8 * mean.abs().clamp(min=1.0), std, torch.ones_like(std)
        )  # constant features
        self.mean.copy_(mean.float())
        self.std.copy_(std.float())
        self.fitted.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.raw(x) - self.mean) / self.std
