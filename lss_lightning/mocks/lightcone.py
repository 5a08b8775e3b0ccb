"""Haloes on the past light cone of an observer, as (RA, DEC, observed redshift), and their histograms.

Geometry: the observer sits at ``observer`` (Mpc/h, box coordinates) and looks along ``direction``
(default +x). A direction is a rotation R whose rows are the cone's own axes in box coordinates: line of
sight, RA axis, DEC axis (``DIRECTIONS``: the six axis directions, each a proper rotation; +x is the
identity). For a halo at comoving offset r from the observer, (x, y, z) = R r in the cone's frame, RA =
atan2(y, x) and DEC = arcsin(z / |r|) in degrees, so the cone -20 < RA, DEC < 20 is centred on the line of
sight. A halo at comoving distance chi = |r| has the cosmological redshift z_cos with chi(z_cos) = chi
(``Cosmology.comoving_distance``, flat w0-wa), and the observed redshift 1 + z_obs = (1 + z_cos)(1 + v_r / c),
v_r = v . r / |r| (redshift-space distortion).

Time: the particle mesh writes halo catalogues at ``snapshots`` redshifts, the centres of equal slices of
the cosmological redshift range [z_min - margin, z_max + margin]; snapshot i fills the comoving shell of
its slice, so every point of the cone is taken from the snapshot nearest in time (haloes that cross a shell
boundary between two snapshots may appear in both shells or in neither: the usual cost of snapshot cones).

Tiling: the cone is wider than the box (chi = 1940 Mpc/h at z = 0.8 for Omega_m = 0.3), so the periodic box
is repeated: replica (i, j, k) holds every halo at position + L (i, j, k). Each replica is a disjoint
translate of the box, so a halo appears at most once per replica and shell; distinct replicas do show the
same structure at different places on the sky or in depth (a cone 40 degrees wide out to chi ~ 1940 Mpc/h
sees each region of a 500 Mpc/h box about 15 times), which is the stated limitation of small boxes.

Several cones per box (``cones_per_box`` K <= 6): one observer looks along the first K of +x, -x, +y, -y,
+z, -z. Inside a cone whose half-widths satisfy |RA| < 45 and tan|DEC| < cos|RA| (checked), the line of
sight is the largest component of every offset, so the six cones are disjoint regions of the tiled space:
no (halo, replica) is placed on two of them (tested). What they share is the box: each cone holds the
same haloes (the same initial conditions, the same large-scale modes and sample variance of one box of
side L) at other places and in other replicas, so the cones of one box are correlated, not independent
realisations; their store entries record ``box``, ``observer`` and ``direction``, and the train/val/test
split keeps all cones of one box in one part (``data.modules.split_simulations`` with groups).

Survey effects (``lightcone.survey``: angular mask, redshift errors, radial selection n(z); ``mocks/survey.py``)
act on the tracers of a cone before its histogram (``apply_survey``); without them the cone is unchanged.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

import numpy as np

from lss_lightning.cosmology import SPEED_OF_LIGHT, Cosmology
from lss_lightning.mocks.survey import (
    SurveySettings,
    cell_index,
    observed_cells,
    radial_selection,
    redshift_errors,
    solid_angle,
)
from lss_lightning.store.schema import HaloCatalogue

# rows: line of sight, RA axis, DEC axis of the cone, in box coordinates (proper rotations, det = +1)
DIRECTIONS = {
    "+x": ((1, 0, 0), (0, 1, 0), (0, 0, 1)),
    "-x": ((-1, 0, 0), (0, -1, 0), (0, 0, 1)),
    "+y": ((0, 1, 0), (-1, 0, 0), (0, 0, 1)),
    "-y": ((0, -1, 0), (1, 0, 0), (0, 0, 1)),
    "+z": ((0, 0, 1), (0, 1, 0), (-1, 0, 0)),
    "-z": ((0, 0, -1), (0, 1, 0), (1, 0, 0)),
}
AXIS_ORDER = ("+x", "-x", "+y", "-y", "+z", "-z")  # cone k of a box looks along AXIS_ORDER[k]


def rotation(direction) -> np.ndarray:
    """The 3x3 rotation (box -> cone frame) of a direction name in ``DIRECTIONS`` or of a 3x3 matrix."""
    if isinstance(direction, str):
        if direction not in DIRECTIONS:
            raise ValueError(f"unknown light-cone direction {direction!r}; choose from {list(DIRECTIONS)}")
        return np.array(DIRECTIONS[direction], dtype=float)
    matrix = np.asarray(direction, dtype=float)
    if matrix.shape != (3, 3) or not np.allclose(matrix @ matrix.T, np.eye(3), atol=1e-9):
        raise ValueError(f"a light-cone direction must be a name or a 3x3 rotation, got {direction!r}")
    if np.linalg.det(matrix) < 0:
        raise ValueError("a light-cone rotation must be proper (det +1): a mirror would flip the sky")
    return matrix


@dataclass(frozen=True)
class LightconeSettings:
    """The cone and its histogram (mirrors the ``lightcone`` block of the mock config); angles in degrees."""

    ra: tuple = (-20.0, 20.0)
    dec: tuple = (-20.0, 20.0)
    z: tuple = (0.3, 0.8)  # observed redshift range
    snapshots: int = 6  # particle-mesh outputs across the range
    margin: float = 0.01  # cosmological redshifts this far outside the range are kept (v_r moves them in)
    mass_min: float = 0.0  # Msun/h
    observer: tuple = (0.0, 0.0, 0.0)  # Mpc/h, box coordinates
    rsd: bool = True  # observed redshifts include v_r / c
    cones_per_box: int = 1  # cones from each box, along AXIS_ORDER[:cones_per_box] (disjoint; module doc)
    survey: SurveySettings | Mapping | None = None  # the survey block (mocks/survey.py); None: no effects

    def __post_init__(self):
        for name, lo_limit, hi_limit in (("ra", -180, 180), ("dec", -90, 90)):
            lo, hi = getattr(self, name)
            if not lo_limit <= lo < hi <= hi_limit:
                raise ValueError(
                    f"lightcone.{name} must be [lo, hi] within [{lo_limit}, {hi_limit}] degrees, got {[lo, hi]}"
                )
        if not 0 <= self.z[0] < self.z[1]:
            raise ValueError(
                f"lightcone.z must be [z_min, z_max] with 0 <= z_min < z_max, got {list(self.z)}"
            )
        if max(abs(self.ra[0]), abs(self.ra[1])) >= 90:
            raise ValueError(
                "lightcone.ra must stay within (-90, 90) degrees of the line of sight (RA = atan2(y, x))"
            )
        if int(self.snapshots) < 1 or self.margin < 0:
            raise ValueError("need lightcone.snapshots >= 1 and lightcone.margin >= 0")
        if not 1 <= int(self.cones_per_box) <= len(AXIS_ORDER):
            raise ValueError(
                f"lightcone.cones_per_box must be 1..{len(AXIS_ORDER)}, got {self.cones_per_box}"
            )
        ra_max = max(abs(v) for v in self.ra)
        dec_max = max(abs(v) for v in self.dec)
        if int(self.cones_per_box) > 1 and not (
            ra_max < 45 and math.tan(math.radians(dec_max)) < math.cos(math.radians(ra_max))
        ):
            raise ValueError(
                "lightcone.cones_per_box > 1 needs cones that cannot overlap along the six axis directions: "
                f"|RA| < 45 and tan|DEC| < cos|RA|, got max |RA| = {ra_max}, max |DEC| = {dec_max}"
            )
        object.__setattr__(self, "cones_per_box", int(self.cones_per_box))
        object.__setattr__(self, "ra", tuple(float(v) for v in self.ra))
        object.__setattr__(self, "dec", tuple(float(v) for v in self.dec))
        object.__setattr__(self, "z", tuple(float(v) for v in self.z))
        object.__setattr__(self, "observer", tuple(float(v) for v in self.observer))
        self._check_survey()

    def _check_survey(self) -> None:
        """The survey block as SurveySettings, its n(z) checked against the cone's redshift range."""
        if self.survey is None:
            return
        if not isinstance(self.survey, SurveySettings):
            object.__setattr__(self, "survey", SurveySettings.from_mapping(self.survey))
        self.survey.check_cone(self.z)

    @property
    def cosmological_range(self) -> tuple[float, float]:
        return max(self.z[0] - self.margin, 0.0), self.z[1] + self.margin

    def snapshot_redshifts(self) -> np.ndarray:
        """Centres of ``snapshots`` equal slices of the cosmological redshift range, highest first."""
        lo, hi = self.cosmological_range
        edges = np.linspace(lo, hi, self.snapshots + 1)
        return (0.5 * (edges[:-1] + edges[1:]))[::-1]

    def slice_edges(self) -> np.ndarray:
        lo, hi = self.cosmological_range
        return np.linspace(lo, hi, self.snapshots + 1)

    @property
    def directions(self) -> tuple[str, ...]:
        """The line of sight of each cone of a box."""
        return AXIS_ORDER[: self.cones_per_box]

    def histogram_edges(self, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return tuple(np.linspace(lo, hi, bins + 1) for lo, hi in (self.ra, self.dec, self.z))


@dataclass(frozen=True)
class LightconeHaloes:
    """Haloes on the cone: RA, DEC (degrees), observed and cosmological redshift, comoving distance (Mpc/h),
    mass (Msun/h), and where each came from (snapshot, replica (i, j, k), index in that catalogue)."""

    ra: np.ndarray
    dec: np.ndarray
    z_obs: np.ndarray
    z_cos: np.ndarray
    chi: np.ndarray
    mass: np.ndarray
    snapshot: np.ndarray
    replica: np.ndarray
    index: np.ndarray

    def __len__(self) -> int:
        return len(self.ra)

    def take(self, keep: np.ndarray) -> LightconeHaloes:
        """The haloes where ``keep`` (a boolean or index array) selects them."""
        return LightconeHaloes(*(getattr(self, f.name)[keep] for f in fields(self)))


def sky_coordinates(offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(RA, DEC in degrees, chi in Mpc/h) of comoving offsets (P, 3) from the observer (line of sight +x)."""
    chi = np.linalg.norm(offsets, axis=1)
    ra = np.degrees(np.arctan2(offsets[:, 1], offsets[:, 0]))
    dec = np.degrees(np.arcsin(np.clip(offsets[:, 2] / np.where(chi > 0, chi, 1.0), -1.0, 1.0)))
    return ra, dec, chi


def replicas(
    box_size: float,
    observer: np.ndarray,
    settings: LightconeSettings,
    chi_min: float,
    chi_max: float,
    direction="+x",
):
    """Integer replica offsets (i, j, k) whose box L [i, i + 1) x ... (box coordinates) can hold points of
    the cone between chi_min and chi_max: the sector's bounding box, from its boundary sampled every
    ~0.5 degree at both radii (plus the axis directions inside it), rotated into box coordinates and
    widened by the sampling error."""
    angles = []
    for lo, hi in (settings.ra, settings.dec):
        grid = np.linspace(lo, hi, max(3, int((hi - lo) / 0.5) + 1))
        angles.append(np.unique(np.r_[grid, [0.0] if lo < 0 < hi else []]))
    ra, dec = np.meshgrid(np.radians(angles[0]), np.radians(angles[1]), indexing="ij")
    sight = np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], -1).reshape(-1, 3)
    points = np.concatenate([chi_min * sight, chi_max * sight]) @ rotation(direction)  # cone -> box frame
    step = np.radians(0.5)
    pad = chi_max * step**2 + 1e-6 * box_size
    lows, highs = points.min(0) - pad + observer, points.max(0) + pad + observer
    ranges = [
        range(math.floor(lo / box_size), math.floor(hi / box_size) + 1)
        for lo, hi in zip(lows, highs, strict=True)
    ]
    return [np.array(r) for r in itertools.product(*ranges)]


def place_on_lightcone(
    snapshots: list[tuple[float, HaloCatalogue]],
    cosmology: Cosmology,
    box_size: float,
    settings: LightconeSettings,
    direction="+x",
) -> LightconeHaloes:
    """The haloes of each (redshift, catalogue) snapshot in its comoving shell of the cone looking along
    ``direction`` (a name in ``DIRECTIONS`` or a 3x3 rotation, rows = the cone's axes), tiled periodically."""
    frame = rotation(direction)
    slice_edges = settings.slice_edges()
    chi_edges = cosmology.comoving_distance(slice_edges)
    observer = np.asarray(settings.observer, dtype=float)
    snapshot_z = settings.snapshot_redshifts()
    parts = []
    for z_snap, catalogue in snapshots:
        i = int(np.argmin(np.abs(snapshot_z - z_snap)))
        if abs(snapshot_z[i] - z_snap) > 1e-6:
            raise ValueError(f"snapshot at z = {z_snap} is not one of the cone's {snapshot_z.tolist()}")
        # snapshot_z is highest first; slice j (low to high) of snapshot i is j = snapshots - 1 - i
        j = settings.snapshots - 1 - i
        chi_lo, chi_hi = chi_edges[j], chi_edges[j + 1]
        keep = catalogue.masses >= settings.mass_min
        pos = catalogue.positions[keep].astype(np.float64)
        vel = catalogue.velocities[keep].astype(np.float64)
        index = np.flatnonzero(keep)
        for replica in replicas(box_size, observer, settings, chi_lo, chi_hi, frame):
            part = _replica_on_cone(
                pos + box_size * replica - observer, vel, (chi_lo, chi_hi), frame, cosmology, settings
            )
            if part is not None:
                n = len(part[0])
                masses, replica_ids = catalogue.masses[keep][part[-1]], np.tile(replica, (n, 1))
                parts.append((*part[:-1], masses, np.full(n, i), replica_ids, index[part[-1]]))
    if not parts:
        empty = np.zeros(0)
        return LightconeHaloes(*[empty] * 6, empty.astype(int), np.zeros((0, 3), int), empty.astype(int))
    columns = [np.concatenate(c) for c in zip(*parts, strict=True)]
    return LightconeHaloes(*columns)


def _replica_on_cone(
    offsets, velocities, chi_range, frame, cosmology: Cosmology, settings: LightconeSettings
):
    """(ra, dec, z_obs, z_cos, chi, inside) of the haloes of one box replica (``offsets``: positions minus
    the observer, Mpc/h) that fall in the cone's sky patch and the shell chi_range; None if none do."""
    ra, dec, chi = sky_coordinates(offsets @ frame.T)
    inside = (
        (chi >= chi_range[0])
        & (chi < chi_range[1])
        & (ra >= settings.ra[0])
        & (ra < settings.ra[1])
        & (dec >= settings.dec[0])
        & (dec < settings.dec[1])
    )
    if not inside.any():
        return None
    z_cos = cosmology.redshift_at_distance(chi[inside])
    z_obs = z_cos
    if settings.rsd:
        v_r = (velocities[inside] * offsets[inside]).sum(1) / chi[inside]
        z_obs = (1 + z_cos) * (1 + v_r / SPEED_OF_LIGHT) - 1
    return ra[inside], dec[inside], z_obs, z_cos, chi[inside], inside


def histogram(haloes: LightconeHaloes, settings: LightconeSettings, bins: int) -> np.ndarray:
    """Halo counts on a bins^3 grid over the (RA, DEC, z_obs) ranges, shaped (1, bins, bins, bins), float32."""
    counts, _ = np.histogramdd(
        np.stack([haloes.ra, haloes.dec, haloes.z_obs], axis=1), bins=settings.histogram_edges(bins)
    )
    return counts.astype(np.float32)[None]


def apply_survey(
    haloes: LightconeHaloes,
    settings: LightconeSettings,
    bins: int,
    cosmology: Cosmology,
    rng: np.random.Generator,
) -> tuple[LightconeHaloes, dict]:
    """The haloes a survey sees (``settings.survey``: mask, then redshift errors in z_obs, then the n(z)
    thinning, on the histogram's bins^3 cells; mocks/survey.py) and the histogram's attributes (``observed``
    cells, ``nz_shortfall``); unchanged, with no draw, without survey effects."""
    survey = settings.survey
    if survey is None or not survey.active:
        return haloes, {}
    ra_edges, dec_edges, z_edges = settings.histogram_edges(bins)
    observed, attrs = observed_cells(survey, ra_edges, dec_edges), {}
    if observed is not None:
        i = np.clip(cell_index(haloes.ra, ra_edges), 0, bins - 1)  # the histogram's (RA, DEC) cell
        j = np.clip(cell_index(haloes.dec, dec_edges), 0, bins - 1)
        haloes = haloes.take(observed[i, j])
        attrs["observed"] = observed.astype(np.uint8)
    if survey.sigma_z > 0 or survey.outlier_fraction > 0:
        haloes = replace(haloes, z_obs=redshift_errors(haloes.z_obs, survey, settings.z, rng)[0])
    if survey.nz is not None:
        steradians = solid_angle(ra_edges, dec_edges, observed)
        keep, shortfall = radial_selection(haloes.z_obs, survey.nz, z_edges, steradians, cosmology, rng)
        haloes = haloes.take(keep)
        attrs["nz_shortfall"] = shortfall
    return haloes, attrs
