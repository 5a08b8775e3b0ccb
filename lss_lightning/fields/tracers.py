"""Halo and galaxy catalogues -> gridded fields: one code path for the mocks' FoF haloes (and their HOD
galaxies) and Quijote's FoF/Rockstar.

Fields made from a catalogue (N^3 grids, CIC, the project's grid convention; ``_rsd``: haloes shifted by
v_los / (a H) along the line of sight first):
- ``halos_m<i>``: number-density contrast delta = n / nbar - 1 of the haloes in mass bin i,
  nbar = (haloes in the bin) / N^3. Bins are [lo, hi) in Msun/h; hi = None leaves a bin open above.
  The shorthands ``halos`` / ``halos_rsd`` expand to one channel per bin (``expand_halo_fields``).
- ``halo_velocity``: the mass-weighted velocity sum(M v) / sum(M) in km/s of the haloes in any bin.
  Most cells hold no halo: they get the rule of ``fields.particles.mass_weighted_velocity`` (the same
  ratio after Gaussian smoothing with R = dx, 2 dx, ... until filled); ``empty_fraction`` records how many.
- ``halo_mass``: the CIC-painted mass of the haloes in any bin (the same haloes, painting and redshift-space
  shift as ``halo_velocity``) divided by its box mean, sum(M W) / (sum(M) / N^3): dimensionless, mean 1 over the
  box (to float32 rounding), O(1) where haloes are and exactly 0 in every cell no halo's CIC cloud touches. Per-cell weights
  for a halo-level loss: sum_c w_c v_c / sum_c w_c with v = ``halo_velocity`` is the mass-weighted mean velocity
  of the haloes, sum(M v) / sum(M). Attributes: ``mean_mass_per_cell`` (Msun/h) to undo the division.
- ``halo_number``: the same with every halo weighted 1 (CIC halo count over its box mean): loss weights under
  which each halo counts once, as in the per-halo tables and the halo 2PCF. Attribute ``mean_number_per_cell``.
- ``velocity_linear_halos``: linear theory v(k) = i a H f delta_h(k) k / k^2 exp(-k^2 R^2 / 2) from the
  number-density contrast of all haloes in the bins (no bias divided out: an observer's estimate, with
  bias b the amplitude is b times the matter's). R = ``smoothing`` (Mpc/h, the mock's ``linear_smoothing``)
  keeps the haloes' shot noise, white in delta_h, from turning into large small-scale velocities.

Fields made from a galaxy catalogue (any object with positions and velocities, e.g. the HOD galaxies of
``lss_lightning.galaxies``; all its galaxies, no mass bins):
- ``galaxies``: number-density contrast n / nbar - 1 of the galaxies, nbar = (galaxies) / N^3 (CIC).
- ``galaxy_velocity``: the galaxies' mean velocity per cell in km/s (each galaxy weighted 1), empty cells
  filled by the rule of ``halo_velocity`` (the same painting code).
- ``velocity_linear_galaxies``: linear theory from ``galaxies``, as ``velocity_linear_halos`` from the haloes.
Their attributes: n_galaxies, number_density ((h/Mpc)^3) and the catalogue's HOD as hod_<name>. With redshift
errors (``fields/redshift_errors.py``) the ``_rsd`` galaxy fields paint the galaxies at their error-moved
line-of-sight positions (true velocities) and record sigma_z, outlier_fraction and n_outliers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from lss_lightning.fields.mesh import cic_paint
from lss_lightning.fields.particles import ParticleGridder, add_linear_velocities
from lss_lightning.fields.redshift_errors import RedshiftErrors, observed_positions
from lss_lightning.fields.velocity import linear_velocity, redshift_space_positions

HALO_BIN_CHANNEL = re.compile(r"halos_m(\d+)(_rsd)?")  # one channel per mass bin
HALO_SHORTHANDS = {"halos": "real", "halos_rsd": "redshift"}
HALO_SCALAR_FIELDS = ("halo_mass", "halo_number")  # each also with "_rsd"
HALO_VECTOR_FIELDS = ("halo_velocity", "velocity_linear_halos")  # each also with "_rsd"
# every one-channel (scalar, dimensionless) catalogue field (store.schema.field_spec declares them scalars)
HALO_CHANNEL = re.compile(r"halos_m\d+(_rsd)?|" + "|".join(rf"{n}(_rsd)?" for n in HALO_SCALAR_FIELDS))
GALAXY_SCALAR_FIELDS = ("galaxies",)  # each also with "_rsd"
GALAXY_VECTOR_FIELDS = ("galaxy_velocity", "velocity_linear_galaxies")  # each also with "_rsd"
GALAXY_FIELDS = (*GALAXY_SCALAR_FIELDS, *GALAXY_VECTOR_FIELDS)


class Catalogue(Protocol):
    """What a halo catalogue (``store.schema.HaloCatalogue``) offers the painting: positions (H, 3) Mpc/h,
    velocities (H, 3) km/s, masses (H,) Msun/h, the finder's name, and subsets."""

    positions: Any
    velocities: Any
    masses: Any
    finder: str

    def subset(self, keep: np.ndarray) -> Catalogue: ...


class Tracers(Protocol):
    """What a galaxy catalogue (``store.schema.GalaxyCatalogue``) offers the painting: positions (G, 3) Mpc/h,
    velocities (G, 3) km/s, its length, and optionally ``hod`` (name -> value) for the field attributes."""

    positions: Any
    velocities: Any

    def __len__(self) -> int: ...


class Bin(Protocol):
    """A mass bin (``store.schema.MassBin``): [lo, hi) in Msun/h, hi None for open."""

    lo: float
    hi: float | None

    def select(self, masses: np.ndarray) -> np.ndarray: ...

    def describe(self) -> str: ...


def in_any_bin(bins: Sequence[Bin], masses: np.ndarray) -> np.ndarray:
    """Which haloes (masses, Msun/h) fall in at least one of the bins."""
    keep = np.zeros(len(masses), dtype=bool)
    for b in bins:
        keep |= b.select(masses)
    return keep


def halo_channel_names(n_bins: int, spaces: Iterable[str] = ("real",)) -> list[str]:
    suffix = {"real": "", "redshift": "_rsd"}
    return [f"halos_m{i}{suffix[s]}" for s in spaces for i in range(n_bins)]


def expand_halo_fields(fields: Sequence[str], n_bins: int) -> list[str]:
    """Replace the shorthands ``halos`` / ``halos_rsd`` by one channel per mass bin (order kept, no repeats)."""
    out = []
    for name in fields:
        out += halo_channel_names(n_bins, [HALO_SHORTHANDS[name]]) if name in HALO_SHORTHANDS else [name]
    return list(dict.fromkeys(out))


def is_catalogue_field(name: str) -> bool:
    """True for the fields this module makes from a halo catalogue."""
    return bool(HALO_CHANNEL.fullmatch(name)) or name.removesuffix("_rsd") in HALO_VECTOR_FIELDS


def is_galaxy_field(name: str) -> bool:
    """True for the fields this module makes from a galaxy catalogue."""
    return name.removesuffix("_rsd") in GALAXY_FIELDS


@dataclass(frozen=True)
class BoxGrid:
    """Where a simulation's fields are painted: grid cells per side, box side (Mpc/h), a H(z) and a H(z) f(z)
    at the output ((km/s)/(Mpc/h)), the line-of-sight axis, the Gaussian smoothing of linear velocities
    (Mpc/h) and the torch device."""

    grid: int
    box_size: float
    a_h: float
    a_h_f: float
    los_axis: int = 2
    smoothing: float = 0.0
    device: Any = None


def store_fields(
    grids: dict,
    attrs: dict,
    names: Sequence[str],
    box: BoxGrid,
    catalogue=None,
    bins=(),
    allow_empty=False,
    galaxies: Tracers | None = None,
    redshift_errors: RedshiftErrors | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """The fields of one simulation as the store holds them (float32 numpy, with attributes): the painted
    particle ``grids`` (name -> tensor), linear velocities from them, the catalogue fields among ``names``
    from the haloes in ``bins`` and the galaxy fields from ``galaxies`` (their ``_rsd`` fields with
    ``redshift_errors``). The one path of the mocks and the Quijote converter."""
    add_linear_velocities(grids, attrs, names, box.box_size, box.a_h_f, box.smoothing)
    fields = {name: grids[name].cpu().numpy() for name in names if name in grids}
    painting = vars(box)  # grid, box_size, a_h, a_h_f, los_axis, smoothing, device
    halo_names = [name for name in names if is_catalogue_field(name)]
    if halo_names:
        halo_fields, halo_attrs = catalogue_fields(
            catalogue, bins, halo_names, allow_empty=allow_empty, **painting
        )
        fields.update(halo_fields)
        attrs.update(halo_attrs)
    galaxy_names = [name for name in names if is_galaxy_field(name)]
    if galaxy_names:
        if galaxies is None:
            raise ValueError(
                f"{galaxy_names} need a galaxy catalogue: give an hod block to populate the haloes"
            )
        new_fields, new_attrs = galaxy_fields(
            galaxies, galaxy_names, allow_empty=allow_empty, redshift_errors=redshift_errors, **painting
        )
        fields.update(new_fields)
        attrs.update(new_attrs)
    return fields, attrs


def catalogue_fields(
    catalogue: Catalogue,
    bins: Sequence[Bin],
    names: Sequence[str],
    *,
    grid: int,
    box_size: float,
    a_h: float,
    a_h_f: float,
    los_axis: int,
    device=None,
    allow_empty: bool = False,
    smoothing: float = 0.0,
) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """The requested catalogue fields (see the module docstring) as float32 (C, N, N, N), with attributes.

    a_h = a H(z) and a_h_f = a H(z) f(z) in (km/s)/(Mpc/h): the redshift-space shift and linear theory.
    An empty mass bin is an error, or with ``allow_empty`` (Latin hypercubes, whose corners may hold no
    massive haloes) a field of zeros with n_halos = 0 (and empty_fraction = 1 for the halo velocity).
    """
    common = {"finder": catalogue.finder}
    paint = {"grid": grid, "box_size": box_size, "a_h": a_h, "los_axis": los_axis, "device": device}
    channels, pooled = _group_names(names)
    fields, attrs = _bin_channels(catalogue, bins, channels, paint, common, allow_empty)
    if pooled:
        if not bins:
            raise ValueError(f"{pooled} need mass_bins to choose the haloes; give mass_bins=[[lo, hi], ...]")
        selected = _nonempty(
            catalogue, in_any_bin(bins, catalogue.masses), "the mass bins together", allow_empty
        )
        selection = {
            **common,
            "mass_min": min(b.lo for b in bins),
            "mass_max": np.inf if any(b.hi is None for b in bins) else max(b.hi for b in bins),
            "n_halos": len(selected),
        }
        for name in pooled:
            fields[name], extra = _pooled_field(selected, name, paint, a_h_f, smoothing)
            attrs[name] = {**selection, **extra}
    return fields, attrs


def _group_names(names: Sequence[str]) -> tuple[dict[int, list[str]], list[str]]:
    """Catalogue field names -> {mass bin: its channel names}, and the fields of all binned haloes together
    (halo_velocity, velocity_linear_halos, halo_mass, halo_number, each optionally _rsd)."""
    channels: dict[int, list[str]] = {}
    pooled = []
    for name in names:
        match = HALO_BIN_CHANNEL.fullmatch(name)
        if match:
            channels.setdefault(int(match.group(1)), []).append(name)
        elif name.removesuffix("_rsd") in (*HALO_VECTOR_FIELDS, *HALO_SCALAR_FIELDS):
            pooled.append(name)
        else:
            raise ValueError(
                f"{name!r} is not made from a halo catalogue (halos_m<i>[_rsd], "
                f"{', '.join((*HALO_SCALAR_FIELDS, *HALO_VECTOR_FIELDS))} [+ '_rsd'])"
            )
    return channels, pooled


def _bin_channels(catalogue, bins, channels, paint: dict, common: dict, allow_empty: bool):
    """The number-density contrast of each mass bin's haloes (``halos_m<i>[_rsd]``), with attributes."""
    fields: dict[str, np.ndarray] = {}
    attrs: dict[str, dict] = {}
    grid = paint["grid"]
    for i, channel_names in sorted(channels.items()):
        if i >= len(bins):
            raise ValueError(
                f"{channel_names[0]} needs mass bin {i}, but only {len(bins)} mass_bins are given"
            )
        selected = _nonempty(
            catalogue, bins[i].select(catalogue.masses), f"mass bin {i} {bins[i].describe()}", allow_empty
        )
        grids = _paint(selected, channel_names, "density", **paint)[0] if len(selected) else {}
        for name in channel_names:
            fields[name] = grids.get(name, np.zeros((1, grid, grid, grid), dtype=np.float32))
            attrs[name] = {
                **common,
                "mass_min": bins[i].lo,
                "mass_max": np.inf if bins[i].hi is None else bins[i].hi,
                "n_halos": len(selected),
                "number_density": len(selected) / paint["box_size"] ** 3,  # (h/Mpc)^3
                "weighting": "number",
            }
    return fields, attrs


def _pooled_field(selected: Catalogue, name: str, paint: dict, a_h_f: float, smoothing: float):
    """One field of all the binned haloes (see the module docstring) and its own attributes."""
    kind, grid = name.removesuffix("_rsd"), paint["grid"]
    if not len(selected):
        scalar = kind in HALO_SCALAR_FIELDS
        zeros = np.zeros((1 if scalar else 3, grid, grid, grid), dtype=np.float32)
        return zeros, ({f"mean_{kind[5:]}_per_cell": 0.0} if scalar else {"empty_fraction": 1.0})
    if kind in HALO_SCALAR_FIELDS:  # halo_mass, halo_number: "mean_mass_per_cell" / "mean_number_per_cell"
        weights = selected.masses if kind == "halo_mass" else np.ones(len(selected))
        field, mean = _paint_weights(selected, weights, redshift_space=name.endswith("_rsd"), **paint)
        return field, {"weighting": kind[5:], f"mean_{kind[5:]}_per_cell": mean}
    if kind == "halo_velocity":
        grids, empty = _paint(selected, [name], "velocity", weights=selected.masses, **paint)
        return grids[name], {"weighting": "mass", "empty_fraction": empty[name]}
    return _linear_velocity(selected, name, paint, a_h_f, smoothing)


def _linear_velocity(tracers, name: str, paint: dict, a_h_f: float, smoothing: float):
    """Linear theory (no bias divided out) from the number-density contrast of the tracers, in the space
    ``name`` says; the field and its attributes."""
    density_name = "tracers_rsd" if name.endswith("_rsd") else "tracers"
    grids, _ = _paint(tracers, [density_name], "density", **paint)
    delta = torch.from_numpy(grids[density_name])
    field = linear_velocity(delta, paint["box_size"], a_h_f, smoothing=smoothing).numpy()
    return field, {"weighting": "number", "a_h_f": a_h_f, "bias": 1.0, "smoothing": smoothing}


def galaxy_fields(
    galaxies: Tracers,
    names: Sequence[str],
    *,
    grid: int,
    box_size: float,
    a_h: float,
    a_h_f: float,
    los_axis: int,
    device=None,
    allow_empty: bool = False,
    smoothing: float = 0.0,
    redshift_errors: RedshiftErrors | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """The requested galaxy fields (see the module docstring) as float32 (C, N, N, N), with attributes.

    a_h, a_h_f in (km/s)/(Mpc/h) as for ``catalogue_fields``. No galaxies is an error, or with ``allow_empty``
    fields of zeros with n_galaxies = 0 (and empty_fraction = 1 for the velocity). ``redshift_errors``
    (fields/redshift_errors.py) moves the galaxies of the ``_rsd`` fields first, drawn from the catalogue's seed;
    those fields record sigma_z, outlier_fraction and the outliers' count."""
    hod = getattr(galaxies, "hod", None) or {}
    common = {
        "n_galaxies": len(galaxies),
        "number_density": len(galaxies) / box_size**3,  # (h/Mpc)^3
        **{f"hod_{key}": float(value) for key, value in hod.items()},
    }
    if not len(galaxies) and not allow_empty:
        source = getattr(galaxies, "source", "") or "the galaxy catalogue"
        raise ValueError(
            f"{source} holds no galaxies: the HOD puts none in these haloes; lower hod.log_M_min "
            "(or set allow_empty_bins=true for fields of zeros)"
        )
    paint = {"grid": grid, "box_size": box_size, "a_h": a_h, "los_axis": los_axis, "device": device}
    observed, observed_attrs = galaxies, {}
    if redshift_errors is not None and redshift_errors.active and any(n.endswith("_rsd") for n in names):
        positions, outlier = observed_positions(
            np.asarray(galaxies.positions),
            redshift_errors,
            a_h=a_h,
            box_size=box_size,
            los_axis=los_axis,
            seed=getattr(galaxies, "seed", -1),
        )
        observed = _ObservedTracers(positions, np.asarray(galaxies.velocities))
        observed_attrs = {**redshift_errors.to_dict(), "n_outliers": int(outlier.sum())}
    fields, attrs = {}, {}
    for name in names:
        if not is_galaxy_field(name):
            raise ValueError(
                f"{name!r} is not made from a galaxy catalogue ({', '.join(GALAXY_FIELDS)} [+ '_rsd'])"
            )
        rsd = name.endswith("_rsd")
        fields[name], extra = _galaxy_field(observed if rsd else galaxies, name, paint, a_h_f, smoothing)
        attrs[name] = {**common, **extra, **(observed_attrs if rsd else {})}
    return fields, attrs


@dataclass(frozen=True)
class _ObservedTracers:
    """Galaxies at their redshift-error-moved positions, true velocities (what the ``_rsd`` fields paint)."""

    positions: np.ndarray
    velocities: np.ndarray

    def __len__(self) -> int:
        return len(self.positions)


def _galaxy_field(galaxies: Tracers, name: str, paint: dict, a_h_f: float, smoothing: float):
    """One galaxy field and its own attributes; zeros without galaxies."""
    kind, grid = name.removesuffix("_rsd"), paint["grid"]
    if not len(galaxies):
        scalar = kind in GALAXY_SCALAR_FIELDS
        zeros = np.zeros((1 if scalar else 3, grid, grid, grid), dtype=np.float32)
        return zeros, ({"empty_fraction": 1.0} if kind == "galaxy_velocity" else {})
    if kind == "galaxies":
        return _paint(galaxies, [name], "density", **paint)[0][name], {"weighting": "number"}
    if kind == "galaxy_velocity":
        grids, empty = _paint(galaxies, [name], "velocity", **paint)
        return grids[name], {"weighting": "number", "empty_fraction": empty[name]}
    return _linear_velocity(galaxies, name, paint, a_h_f, smoothing)


def _nonempty(catalogue: Catalogue, keep: np.ndarray, what: str, allow_empty: bool) -> Catalogue:
    if not keep.any() and not allow_empty:
        span = (
            f"{catalogue.masses.min():.4g}..{catalogue.masses.max():.4g} Msun/h"
            if len(catalogue)
            else "no haloes"
        )
        raise ValueError(
            f"{catalogue.source}: {what} holds no haloes (the catalogue spans {span}); "
            "widen or drop that bin in mass_bins"
        )
    return catalogue.subset(keep)


def _paint_weights(
    haloes: Catalogue,
    weights: np.ndarray,
    *,
    redshift_space: bool,
    grid: int,
    box_size: float,
    a_h: float,
    los_axis: int,
    device=None,
) -> tuple[np.ndarray, float]:
    """(1, N, N, N) CIC sum of the haloes' weights (masses in Msun/h, or ones) over its box mean (exact zeros
    where no halo reaches), and that mean per cell. Positions, velocities, the shift and the CIC stencil are
    ParticleGridder's (float32), so mass weights sit exactly under the mass that ``halo_velocity[_rsd]``
    divides by."""
    device = torch.device(device or "cpu")
    positions = torch.from_numpy(np.asarray(haloes.positions)).to(device, torch.float32)
    if redshift_space:
        velocities = torch.from_numpy(np.asarray(haloes.velocities)).to(device, torch.float32)
        positions = redshift_space_positions(positions, velocities, a_h, box_size, los_axis)
    weights = torch.from_numpy(np.asarray(weights, dtype=np.float64))
    mean = float(weights.sum()) / grid**3  # per cell
    # paint w / mean (O(1) numbers in float32); the box sum is then N^3 up to float32 rounding
    painted = cic_paint(positions, grid, box_size, (weights / mean).to(device, torch.float32))
    return painted.unsqueeze(0).cpu().numpy(), mean


def _paint(
    haloes: Catalogue,
    names: Sequence[str],
    kind: str,
    *,
    grid: int,
    box_size: float,
    a_h: float,
    los_axis: int,
    device=None,
    weights: np.ndarray | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Paint haloes (or galaxies) with ParticleGridder: ``kind`` density or velocity, in the space each name
    says; weights None weights each tracer 1."""
    sources = [f"{kind}_rsd" if n.endswith("_rsd") else kind for n in names]
    gridder = ParticleGridder(grid, box_size, sources, a_h=a_h, los_axis=los_axis, device=device)
    masses = 1.0 if weights is None else torch.from_numpy(np.asarray(weights, dtype=np.float32))
    positions, velocities = np.asarray(haloes.positions), np.asarray(haloes.velocities)
    gridder.add(torch.from_numpy(positions), torch.from_numpy(velocities), masses)
    painted = gridder.finalise()
    grids = {n: painted[s].cpu().numpy() for n, s in zip(names, sources, strict=True)}
    empty = {
        n: gridder.empty_fraction[s]
        for n, s in zip(names, sources, strict=True)
        if s in gridder.empty_fraction
    }
    return grids, empty


# catalogue field names
