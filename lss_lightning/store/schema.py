"""The field-store schema: one format for mocks and Quijote (README, "The field store"): names, specs, manifest,
and the catalogue types its ``halos/`` and ``galaxies/`` groups hold.

A store is a directory holding ``manifest.json`` and one HDF5 file per simulation:

    manifest.json   {"schema_version", "source", "box_size", "grid", "redshift", "los_axis",
                     "fields": {name: {kind, channels, units, space, los_axis, mas}},
                     "simulations": [{"id", "file", "seed", "params": {Omega_m, ...}[, "hod": {...}]}],
                     "generator": {...}, "halos": {finder settings} | null, "galaxies": {HOD settings} | null}
    sim_00000.h5    attrs: schema_version, sim_id, box_size, grid, redshift, seed, los_axis, source,
                           Omega_m, Omega_b, h, n_s, sigma_8, M_nu, w0, wa, complete
                    fields/<name>: float32 (C, N, N, N), chunked, attrs kind, units, space, los_axis, mas
                           (lightcone with survey effects also: observed (N, N) uint8 RA/DEC cells, 1 = observed,
                           with a mask; nz_shortfall with an n(z) selection; mocks/survey.py)
                    halos/ (when the manifest has "halos"): position (H, 3) float32 Mpc/h, velocity (H, 3)
                           float32 km/s, mass (H,) float64 Msun/h, n_particles (H,) int64;
                           attrs particle_mass (Msun/h), linking_length, min_particles, finder
                    galaxies/ (when the manifest has "galaxies"; needs halos/): position (G, 3) float32 Mpc/h,
                           velocity (G, 3) float32 km/s, central (G,) bool, host (G,) int64 (row in halos/);
                           attrs: the HOD parameters (e.g. log_M_min), seed (of the galaxy draws)
                    with an HOD per simulation, also the file attrs hod_<name> (e.g. hod_log_M_min)
    splits.json     {"train": [ids], "val": [ids], "test": [ids], "seed"} (written by the data modules)

Every file is written under a temporary name in the same directory and renamed when complete, so an
interrupted writer never leaves a file that reads as valid; ``complete = 1`` is the last attribute set.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from lss_lightning.fields.tracers import (
    GALAXY_SCALAR_FIELDS,
    GALAXY_VECTOR_FIELDS,
    HALO_CHANNEL,
    HALO_VECTOR_FIELDS,
)

# files of a store
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
SPLITS = "splits.json"
FIELD_KINDS = ("scalar", "vector", "pseudovector")
FIELD_AXES = ("x,y,z", "ra,dec,z")  # box coordinates, or (right ascension, declination, observed redshift)
LIGHTCONE_FIELD = "lightcone"
_FILE_ATTRS = ("schema_version", "sim_id", "box_size", "grid", "redshift", "seed", "complete")
# the halos/ group of a simulation file
HALO_GROUP = "halos"
# dataset -> (HaloCatalogue attribute, dtype, shape after the halo axis)
HALO_DATASETS = {
    "position": ("positions", np.float32, (3,)),
    "velocity": ("velocities", np.float32, (3,)),
    "mass": ("masses", np.float64, ()),
    "n_particles": ("n_particles", np.int64, ()),
}
HALO_ATTRS = ("particle_mass", "linking_length", "min_particles", "finder")
# the galaxies/ group: dataset -> (GalaxyCatalogue attribute, dtype, shape after the galaxy axis)
GALAXY_GROUP = "galaxies"
GALAXY_DATASETS = {
    "position": ("positions", np.float32, (3,)),
    "velocity": ("velocities", np.float32, (3,)),
    "central": ("central", np.bool_, ()),
    "host": ("host", np.int64, ()),
}
# attribute of the galaxies/ group: the seed of the galaxy draws (its other attributes are the HOD)
GALAXY_SEED_ATTR = "seed"
HOD_ATTR_PREFIX = "hod_"  # file attrs hod_<name>: the simulation's HOD, beside its cosmological parameters
UNKNOWN_COUNT = -1  # n_particles / min_particles when a finder does not record them


class StoreError(RuntimeError):
    """A field store that cannot be used as it is; the message names the file and the fix."""


@dataclass(frozen=True)
class FieldSpec:
    """What a stored field is: kind (scalar/vector/pseudovector), channels, units, space, los axis, MAS, and
    the meaning of its three grid axes: "x,y,z" (comoving box) or "ra,dec,z" (a light-cone histogram)."""

    kind: str
    channels: int
    units: str
    space: str = "real"
    los_axis: int = -1
    mas: str = "cic"
    axes: str = "x,y,z"

    def __post_init__(self):
        if self.kind not in FIELD_KINDS:
            raise ValueError(f"field kind must be one of {FIELD_KINDS}, got {self.kind!r}")
        if self.space not in ("real", "redshift"):
            raise ValueError(f"field space must be 'real' or 'redshift', got {self.space!r}")
        if self.axes not in FIELD_AXES:
            raise ValueError(f"field axes must be one of {FIELD_AXES}, got {self.axes!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def field_spec(name: str, los_axis: int = 2, mas: str = "cic") -> FieldSpec:
    """The spec of a standard field name: density, velocity, momentum, halos_m<i>, each optionally ``_rsd``."""
    space = "redshift" if name.endswith("_rsd") else "real"
    base = name.removesuffix("_rsd")
    los = los_axis if space == "redshift" else -1
    if base == "density" or HALO_CHANNEL.fullmatch(base) or base in GALAXY_SCALAR_FIELDS:
        return FieldSpec("scalar", 1, "1", space, los, mas)
    if base in ("velocity", "momentum", "velocity_linear", *HALO_VECTOR_FIELDS, *GALAXY_VECTOR_FIELDS):
        return FieldSpec("vector", 3, "km/s", space, los, mas)
    if name == LIGHTCONE_FIELD:  # halo counts in (RA, DEC, observed z) cells; redshift distortions along z
        return FieldSpec("scalar", 1, "count", "redshift", 2, "ngp", "ra,dec,z")
    tracers = ", ".join((*HALO_VECTOR_FIELDS, *GALAXY_SCALAR_FIELDS, *GALAXY_VECTOR_FIELDS))
    raise ValueError(
        f"no standard spec for field {name!r}; standard names are density, velocity, momentum, "
        f"velocity_linear, halos_m<i>, {tracers}, each with an optional '_rsd' suffix, and {LIGHTCONE_FIELD}"
    )


def sim_file_name(sim_id: str) -> str:
    return f"{sim_id}.h5"


def build_manifest(
    *,
    source: str,
    box_size: float,
    grid: int,
    redshift: float,
    los_axis: int,
    fields: Mapping[str, FieldSpec],
    simulations: Iterable[Mapping],
    generator: Mapping | None = None,
    halos: Mapping | None = None,
    galaxies: Mapping | None = None,
) -> dict:
    """The manifest of a store; ``halos`` (e.g. {"finder": "fof", ...}) declares a ``halos/`` group per file,
    ``galaxies`` (the galaxy model, e.g. {"model": "zheng07", "hod": {...}, "hod_prior": ...}) a ``galaxies/``
    group (which needs the ``halos/`` of its hosts)."""
    if galaxies and not halos:
        raise ValueError("a store with galaxy catalogues needs halo catalogues too (their hosts): give halos")
    return {
        "schema_version": SCHEMA_VERSION,
        "source": source,
        "box_size": float(box_size),
        "grid": int(grid),
        "redshift": float(redshift),
        "los_axis": int(los_axis),
        "fields": {name: spec.to_dict() for name, spec in fields.items()},
        "simulations": [dict(s) for s in simulations],
        "generator": dict(generator or {}),
        "halos": dict(halos) if halos else None,
        "galaxies": dict(galaxies) if galaxies else None,
    }


@dataclass(frozen=True)
class HaloCatalogue:
    """Haloes of one simulation in project units (the store's ``halos/`` group holds exactly this).

    positions (H, 3) comoving Mpc/h in [0, L); velocities (H, 3) peculiar km/s; masses (H,) Msun/h;
    n_particles (H,) member particles (-1 where the finder does not say). particle_mass in Msun/h,
    linking_length in units of the mean interparticle separation (NaN where it does not apply),
    min_particles (-1 if unknown), finder ("fof", "rockstar:<mass column>[:hosts]"), source (for messages).
    """

    positions: np.ndarray
    velocities: np.ndarray
    masses: np.ndarray
    n_particles: np.ndarray
    particle_mass: float = math.nan
    linking_length: float = math.nan
    min_particles: int = UNKNOWN_COUNT
    finder: str = "unknown"
    source: str = ""

    def __post_init__(self):
        n = len(self.masses)
        shapes = {
            "positions": (np.shape(self.positions), (n, 3)),
            "velocities": (np.shape(self.velocities), (n, 3)),
            "n_particles": (np.shape(self.n_particles), (n,)),
        }
        for name, (got, want) in shapes.items():
            if tuple(got) != want:
                raise ValueError(f"{self.source or 'halo catalogue'}: {name} shaped {got}, expected {want}")

    def __len__(self) -> int:
        return len(self.masses)

    def subset(self, keep: np.ndarray) -> HaloCatalogue:
        return replace(
            self,
            positions=self.positions[keep],
            velocities=self.velocities[keep],
            masses=self.masses[keep],
            n_particles=self.n_particles[keep],
        )


@dataclass
class GalaxyCatalogue:
    """Galaxies of one box (the store's ``galaxies/`` group holds exactly this): positions (G, 3) float32
    comoving Mpc/h in [0, L); velocities (G, 3) float32 peculiar km/s; central (G,) bool; host (G,) int64 index
    into the halo catalogue they were drawn from. Ordered by host, the central (if any) first. hod: the galaxy
    model's parameters (name -> value, e.g. log_M_min), seed: of the draws (-1 unknown), source: for messages."""

    positions: np.ndarray
    velocities: np.ndarray
    central: np.ndarray
    host: np.ndarray
    hod: Mapping[str, float] = field(default_factory=dict)
    seed: int = UNKNOWN_COUNT
    source: str = ""

    def __post_init__(self):
        n = len(self.host)
        for name, want in {"positions": (n, 3), "velocities": (n, 3), "central": (n,)}.items():
            got = np.shape(getattr(self, name))
            if tuple(got) != want:
                raise ValueError(f"{self.source or 'galaxy catalogue'}: {name} shaped {got}, expected {want}")

    def __len__(self) -> int:
        return len(self.host)

    def subset(self, keep) -> GalaxyCatalogue:
        """The galaxies selected by a boolean mask (G,) or an index array; host indices are unchanged."""
        keep = np.asarray(keep)
        return replace(
            self,
            positions=self.positions[keep],
            velocities=self.velocities[keep],
            central=self.central[keep],
            host=self.host[keep],
        )


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
