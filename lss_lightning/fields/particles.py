"""Particles -> grids: density contrast, momentum and mass-weighted velocity, in real and redshift space.

Painting accumulates CIC mass and mass-weighted velocity sums, so particles can be added in chunks
(one snapshot file at a time) and the grids finalised once:
- ``density``  delta = rho / rho_mean - 1 (dimensionless);
- ``momentum`` (1 + delta) v in km/s: the CIC sum of m v divided by the mean mass per cell;
- ``velocity`` the mass-weighted velocity sum(m v) / sum(m) in km/s. This ratio is not a convolution,
  so no window is divided out. Empty cells (CIC mass below 1e-6 of the mean) hold the same ratio taken
  after Gaussian smoothing of numerator and denominator with R = dx, 2 dx, 4 dx, ... until every cell
  is filled; the filled fraction is recorded as the dataset attribute ``empty_fraction``. The kernel is
  positive in real space and a smoothed cell counts as filled only where its mass stands above the
  FFT's rounding noise (1.2e-3 of the smoothed maximum in float32), so a filled cell is a weighted mean
  of nearby velocities: for sparse tracers such as haloes either lapse let noise be divided by noise.
Redshift-space fields (suffix ``_rsd``) paint particles at s = x + v_los / (a H) along ``los_axis``.
"""

from __future__ import annotations

import torch

from lss_lightning.fields.mesh import cic_paint
from lss_lightning.fields.velocity import gaussian_smooth, linear_velocity, redshift_space_positions

PARTICLE_FIELDS = ("density", "momentum", "velocity")
# linear-theory velocities stored beside the painted fields: name -> the density they are computed from
LINEAR_FIELDS = {"velocity_linear": "density", "velocity_linear_rsd": "density_rsd"}
EMPTY_CELL_THRESHOLD = 1e-6  # in units of the mean mass per cell
FFT_NOISE_EPSILONS = 1e4  # smoothed masses below this many machine epsilons of their maximum are noise


class ParticleGridder:
    """Accumulates particle mass and momentum on an N^3 grid, then finalises the requested fields."""

    def __init__(
        self,
        n: int,
        box_size: float,
        fields: list[str] | tuple[str, ...] = ("density", "velocity", "momentum"),
        *,
        a_h: float | None = None,
        los_axis: int = 2,
        device=None,
    ):
        unknown = [f for f in fields if f.removesuffix("_rsd") not in PARTICLE_FIELDS]
        if unknown:
            raise ValueError(f"cannot paint {unknown} from particles; known: {PARTICLE_FIELDS} (+ '_rsd')")
        self.spaces = sorted({"rsd" if f.endswith("_rsd") else "real" for f in fields})
        if "rsd" in self.spaces and a_h is None:
            raise ValueError("redshift-space fields need a_h = a H(z) in (km/s)/(Mpc/h)")
        self.n, self.box_size, self.fields, self.a_h, self.los_axis = (
            n,
            float(box_size),
            tuple(fields),
            a_h,
            los_axis,
        )
        self.device = torch.device(device or "cpu")
        # per space: channel 0 = mass, 1..3 = mass-weighted velocity
        self._sums = {s: torch.zeros(4, n, n, n, device=self.device) for s in self.spaces}
        self.total_mass = 0.0
        self.count = 0

    def add(
        self, positions: torch.Tensor, velocities: torch.Tensor, masses: torch.Tensor | float = 1.0
    ) -> None:
        """Add particles: positions (P, 3) Mpc/h, peculiar velocities (P, 3) km/s, masses (P,) or scalar."""
        positions = positions.to(self.device, torch.float32)
        velocities = velocities.to(self.device, torch.float32)
        m = torch.as_tensor(masses, dtype=torch.float32, device=self.device).expand(len(positions))
        weights = torch.cat([m[:, None], velocities * m[:, None]], dim=1)
        for space in self.spaces:
            pos = positions
            if space == "rsd":
                pos = redshift_space_positions(positions, velocities, self.a_h, self.box_size, self.los_axis)
            self._sums[space] += cic_paint(pos, self.n, self.box_size, weights)
        self.total_mass += float(m.double().sum())
        self.count += len(positions)

    def finalise(self) -> dict[str, torch.Tensor]:
        """The requested fields as float32 (C, N, N, N) tensors; velocity fields carry ``empty_fraction``."""
        if self.count == 0:
            raise ValueError("no particles were added before finalise()")
        mean = self.total_mass / self.n**3
        out: dict[str, torch.Tensor] = {}
        self.empty_fraction: dict[str, float] = {}
        for name in self.fields:
            space = "rsd" if name.endswith("_rsd") else "real"
            mass, weighted_v = self._sums[space][0], self._sums[space][1:]
            kind = name.removesuffix("_rsd")
            if kind == "density":
                out[name] = (mass / mean - 1.0).unsqueeze(0)
            elif kind == "momentum":
                out[name] = weighted_v / mean
            else:
                velocity, empty = mass_weighted_velocity(mass, weighted_v, mean, self.box_size)
                out[name] = velocity
                self.empty_fraction[name] = empty
        return out


def mass_weighted_velocity(
    mass: torch.Tensor, weighted_v: torch.Tensor, mean_mass: float, box_size: float
) -> tuple[torch.Tensor, float]:
    """sum(m v) / sum(m) per cell with the smoothed fill of empty cells; returns (velocity, empty fraction)."""
    occupied = mass > EMPTY_CELL_THRESHOLD * mean_mass
    velocity = torch.where(occupied, weighted_v / mass.clamp(min=1e-30), 0.0)
    empty = float(1.0 - occupied.double().mean())
    missing = ~occupied
    radius = box_size / mass.shape[-1]
    while bool(missing.any()):
        m_s = gaussian_smooth(mass, box_size, radius)
        p_s = gaussian_smooth(weighted_v, box_size, radius)
        floor = max(
            EMPTY_CELL_THRESHOLD * mean_mass,
            FFT_NOISE_EPSILONS * torch.finfo(m_s.dtype).eps * float(m_s.max()),
        )
        filled = missing & (m_s > floor)
        velocity = torch.where(filled, p_s / m_s.clamp(min=1e-30), velocity)
        missing &= ~filled
        radius *= 2.0
        if radius > box_size:
            raise ValueError("cannot fill empty velocity cells: the grid holds (almost) no mass")
    return velocity, empty


def fields_to_paint(fields: list[str] | tuple[str, ...]) -> list[str]:
    """The particle fields behind ``fields``: the painted ones plus the densities of linear velocities."""
    painted = [f for f in fields if f.removesuffix("_rsd") in PARTICLE_FIELDS]
    return painted + [src for f, src in LINEAR_FIELDS.items() if f in fields and src not in painted]


def add_linear_velocities(
    grids: dict[str, torch.Tensor],
    attrs: dict[str, dict],
    fields: list[str] | tuple[str, ...],
    box_size: float,
    a_h_f: float,
    smoothing: float = 0.0,
) -> None:
    """Add the requested ``velocity_linear[_rsd]`` grids (and their attributes) from the painted densities."""
    for name, source in LINEAR_FIELDS.items():
        if name in fields:
            grids[name] = linear_velocity(grids[source], box_size, a_h_f, smoothing=smoothing)
            attrs[name] = {"source": source, "smoothing": smoothing, "a_h_f": a_h_f}
