"""Halo catalogues in project units, mass bins, and one number-density channel per bin.

A channel is the number-weighted CIC density contrast of the haloes in one bin,
delta = n / nbar - 1 with nbar = (haloes in the bin) / N^3, in real space or, with the suffix ``_rsd``,
after shifting each halo by v_los / (a H) along the line of sight. Bins are [lo, hi) in Msun/h;
hi = None (null) leaves a bin open above, so a plain mass cut is one bin [M_min, None).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lss_lightning.data.quijote.errors import QuijoteError
from lss_lightning.fields.particles import ParticleGridder

HALO_CHANNEL = re.compile(r"halos_m(\d+)(_rsd)?")


@dataclass(frozen=True)
class HaloCatalogue:
    """Haloes: positions (H, 3) comoving Mpc/h in [0, L), peculiar velocities (H, 3) km/s, masses (H,) Msun/h."""

    positions: np.ndarray
    velocities: np.ndarray
    masses: np.ndarray
    source: str  # the file(s) read, for error messages
    finder: str

    def __len__(self) -> int:
        return len(self.masses)


@dataclass(frozen=True)
class MassBin:
    lo: float  # Msun/h, inclusive
    hi: float | None = None  # Msun/h, exclusive; None = no upper limit

    def select(self, masses: np.ndarray) -> np.ndarray:
        keep = masses >= self.lo
        return keep if self.hi is None else keep & (masses < self.hi)

    def describe(self) -> str:
        return f"[{self.lo:.4g}, {'inf' if self.hi is None else f'{self.hi:.4g}'}) Msun/h"


def parse_mass_bins(bins: Iterable[Sequence[float | None]] | None) -> list[MassBin]:
    """Mass bins from [[lo, hi], ...] (hi may be null); bins may overlap (e.g. cumulative cuts)."""
    out = []
    for i, pair in enumerate(bins or []):
        if len(pair) != 2:
            raise ValueError(f"mass_bins[{i}] = {list(pair)}: give [lo, hi] in Msun/h (hi may be null)")
        lo, hi = float(pair[0]), None if pair[1] is None else float(pair[1])
        if lo < 0 or (hi is not None and not hi > lo):
            raise ValueError(f"mass_bins[{i}] = {list(pair)}: need 0 <= lo < hi")
        out.append(MassBin(lo, hi))
    return out


def halo_channel_names(n_bins: int, spaces: Iterable[str] = ("real",)) -> list[str]:
    suffix = {"real": "", "redshift": "_rsd"}
    return [f"halos_m{i}{suffix[s]}" for s in spaces for i in range(n_bins)]


def halo_channels(
    catalogue: HaloCatalogue,
    bins: Sequence[MassBin],
    names: Sequence[str],
    *,
    grid: int,
    box_size: float,
    a_h: float,
    los_axis: int,
) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """The requested ``halos_m<i>[_rsd]`` channels as (1, N, N, N) float32, with per-channel attributes."""
    fields, attrs = {}, {}
    wanted = {}
    for name in names:
        match = HALO_CHANNEL.fullmatch(name)
        if not match:
            raise ValueError(f"{name!r} is not a halo channel name (halos_m<i> or halos_m<i>_rsd)")
        wanted.setdefault(int(match.group(1)), []).append(name)
    for i, channel_names in sorted(wanted.items()):
        if i >= len(bins):
            raise ValueError(
                f"{channel_names[0]} needs mass bin {i}, but only {len(bins)} mass_bins are given"
            )
        keep = bins[i].select(catalogue.masses)
        count = int(keep.sum())
        if count == 0:
            span = (
                f"{catalogue.masses.min():.4g}..{catalogue.masses.max():.4g} Msun/h"
                if len(catalogue)
                else "no haloes"
            )
            raise QuijoteError(
                f"{catalogue.source}: mass bin {i} {bins[i].describe()} holds no haloes (the catalogue spans {span}); "
                "widen or drop that bin in mass_bins"
            )
        gridder_fields = ["density_rsd" if n.endswith("_rsd") else "density" for n in channel_names]
        gridder = ParticleGridder(grid, box_size, gridder_fields, a_h=a_h, los_axis=los_axis)
        gridder.add(
            torch.from_numpy(catalogue.positions[keep]), torch.from_numpy(catalogue.velocities[keep]), 1.0
        )
        painted = gridder.finalise()
        for name, source in zip(channel_names, gridder_fields, strict=True):
            fields[name] = painted[source].numpy()
            attrs[name] = {
                "finder": catalogue.finder,
                "mass_min": bins[i].lo,
                "mass_max": np.inf if bins[i].hi is None else bins[i].hi,
                "n_halos": count,
                "number_density": count / box_size**3,  # (h/Mpc)^3
                "weighting": "number",
            }
    return fields, attrs
