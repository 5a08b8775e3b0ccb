"""Redshift errors on the galaxies of a periodic box, for their redshift-space (``_rsd``) fields.

A measured redshift z_obs = z + sigma_z (1 + z) N(0, 1) puts a galaxy off along the line of sight by
c sigma_z (1 + z) N / H(z) = c sigma_z N / (a H) comoving Mpc/h (plane-parallel, H in (km/s)/(Mpc/h)): the same
shift as a line-of-sight velocity error of c sigma_z N km/s, whatever the box's redshift (sigma_z = 0.001:
300 km/s, 3 Mpc/h at z = 0; the slitless 0.002-0.005: 6-15 Mpc/h). A fraction ``outlier_fraction`` are
catastrophic outliers, placed uniform along the line of sight over the box (the box's analogue of a redshift
drawn uniform over a survey's range). Light cones have their own block (``lightcone.survey``, mocks/survey.py).

The errors move the positions before the redshift-space shift v_los / (aH); velocities stay true (they are what
``galaxy_velocity_rsd`` paints) and real-space fields never see the errors. Draws: one standard normal, then one
uniform for the outlier flag and one for its place, per galaxy, from SeedSequence([catalogue seed, ZERR_STREAM]):
stores that differ only in sigma_z scatter the same galaxies in the same directions, scaled, and flag the same
outliers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

import numpy as np

from lss_lightning.cosmology import SPEED_OF_LIGHT

ZERR_STREAM = 0x5A4552  # "ZER": the redshift-error draws' stream beside a galaxy catalogue's seed
MAX_SIGMA_Z = 0.1  # a larger Gaussian error is no longer a redshift survey


@dataclass(frozen=True)
class RedshiftErrors:
    """Gaussian redshift errors sigma_z (1 + z) and a fraction of catastrophic outliers (box version)."""

    sigma_z: float = 0.0
    outlier_fraction: float = 0.0

    @classmethod
    def from_mapping(cls, values: Mapping) -> RedshiftErrors:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown redshift_errors settings {unknown}; known: {sorted(known)}")
        return cls(**{k: float(v) for k, v in values.items()})

    def __post_init__(self):
        if not 0 <= self.sigma_z <= MAX_SIGMA_Z:  # also NaN
            raise ValueError(
                f"redshift_errors.sigma_z must be in [0, {MAX_SIGMA_Z}] (e.g. 0.002-0.005 for slitless "
                f"spectroscopy), got {self.sigma_z}"
            )
        if not 0 <= self.outlier_fraction < 1:
            raise ValueError(
                f"redshift_errors.outlier_fraction must be in [0, 1), got {self.outlier_fraction}"
            )

    @property
    def active(self) -> bool:
        return self.sigma_z > 0 or self.outlier_fraction > 0

    @property
    def velocity_scatter(self) -> float:
        """The line-of-sight velocity error equivalent to sigma_z, c sigma_z in km/s."""
        return SPEED_OF_LIGHT * self.sigma_z

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def error_rng(seed: int) -> np.random.Generator:
    """The generator of a catalogue's redshift-error draws (``seed``: the catalogue's own, >= 0)."""
    if seed < 0:
        raise ValueError(
            "redshift errors need the galaxy catalogue's seed (>= 0) for reproducible draws; got an unknown seed"
        )
    return np.random.default_rng(np.random.SeedSequence([int(seed), ZERR_STREAM]))


def observed_positions(
    positions: np.ndarray,
    errors: RedshiftErrors,
    *,
    a_h: float,
    box_size: float,
    los_axis: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Positions (G, 3) Mpc/h with the line-of-sight coordinate moved by the redshift errors, wrapped into
    [0, L), and the outlier flags (G,). a_h = a H(z) in (km/s)/(Mpc/h). Without active errors: a copy, no draws."""
    positions = np.array(positions, dtype=np.float64)
    outlier = np.zeros(len(positions), bool)
    if not errors.active:
        return positions.astype(np.float32), outlier
    rng = error_rng(seed)
    n = len(positions)
    normal, flag, place = rng.standard_normal(n), rng.random(n), rng.random(n)
    los = positions[:, los_axis] + errors.velocity_scatter * normal / a_h  # Mpc/h
    outlier = flag < errors.outlier_fraction
    los[outlier] = place[outlier] * box_size
    positions[:, los_axis] = np.remainder(los, box_size)
    wrapped = positions.astype(np.float32)
    wrapped[wrapped >= np.float32(box_size)] = 0.0  # rounded up to L in float32: the same point as 0
    return wrapped, outlier
