"""Survey effects on the tracers of a light cone, applied before the histogram (the ``lightcone.survey`` block).

Three optional effects, applied in this order to the tracers placed on the cone (``lightcone.apply_survey``):

1. Angular mask. The mask is a boolean grid over the histogram's (RA, DEC) cells, ``True`` = observed (the
   survey convention: 1 inside the footprint). It comes from ``mask`` (a .npy file of shape (grid, grid),
   RA along the first axis, as the histogram) and/or ``holes`` ([[ra, dec, radius], ...] in degrees: a cell
   is masked when its centre lies within ``radius`` of the hole's centre, great-circle distance in the
   cone's frame). Tracers in masked cells are removed, so those cells of the histogram are zero; the
   histogram dataset records the grid as its attribute ``observed`` (uint8 (grid, grid), 1 = observed).
   Every cone of a box gets the same mask in its own (RA, DEC) frame.
2. Redshift errors on the observed redshift (RSD included): z + sigma_z (1 + z) N(0, 1) for every tracer;
   then a fraction ``outlier_fraction`` of them (chosen at random) are catastrophic outliers, whose redshift
   is drawn uniform over the cone's ``lightcone.z`` range (``outlier_offset: null``) or shifted by
   ``outlier_offset`` (z + sigma_z (1 + z) N + offset, e.g. a misidentified line; outliers moved out of the
   range leave the histogram).
3. Radial selection n(z) by random thinning in the error-affected observed redshift, on the histogram's z
   cells: a tracer in cell b is kept with probability f_b = T_b / N_b, N_b the tracers the cone holds in
   the cell (after 1 and 2) and T_b the target count. ``nz`` is a table ``{z: [...], n: [...]}`` (linear
   interpolation; z strictly increasing and covering ``lightcone.z``) or ``{shape: smail, z0, alpha,
   beta}`` (n ~ z^alpha exp(-(z / z0)^beta)), with ``kind``:
   - ``dndz`` (default; the only kind of the Smail form): n are relative dN/dz weights. T_b = A int_b n dz
     with A the largest scale that keeps f_b <= 1 in every cell: the shape is matched and as many tracers
     kept as it allows (the cell where the cone is poorest relative to the target sets the yield).
   - ``density`` (table only): n is the comoving number density in (h/Mpc)^3, T_b = int_b n dV/dz dz over
     the observed solid angle (the unmasked cells).
   A cell where the target exceeds what the cone holds keeps all its tracers; the missing fraction of the
   target is recorded as the histogram's attribute ``nz_shortfall`` (0: the target is met at every z) and
   warned about above 1% (lower nz.n or lightcone.mass_min).

Randomness: the draws of cone k of a box come from ``survey_rng(box seed, k)`` (``SeedSequence([seed,
SURVEY_STREAM, k])``), so a rerun redraws them and a cone made alone equals the same cone made with the
others. Without a survey block (or with one that changes nothing) no draw is made and the cones are
exactly those of before. The manifest's ``generator.lightcone.survey`` holds the block written out in full
(``SurveySettings.to_dict``, with the mask file's digest ``mask_sha256``), so stores with other survey
effects, or another mask in the same file, refuse to mix.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from lss_lightning.cosmology import SPEED_OF_LIGHT, Cosmology

log = logging.getLogger(__name__)

SURVEY_STREAM = 0x535256  # "SRV": the survey draws' stream beside a box's seed
NZ_KINDS = ("dndz", "density")
NZ_SHAPES = ("smail",)
MAX_MASKED_GRID = 255  # the ``observed`` attribute (grid^2 bytes) must fit HDF5's 64 KB attribute limit
SHORTFALL_WARNING = 0.01  # warn when the cone misses more than this fraction of the n(z) target


@dataclass(frozen=True)
class SurveySettings:
    """The ``lightcone.survey`` block (module doc); the defaults change nothing."""

    sigma_z: float = 0.0  # Gaussian redshift error per (1 + z)
    outlier_fraction: float = 0.0  # catastrophic outliers, in [0, 1)
    outlier_offset: float | None = None  # None: outliers uniform over lightcone.z; else z + offset
    nz: Mapping | None = (
        None  # radial selection: {z: [...], n: [...], kind} or {shape: smail, z0, alpha, beta}
    )
    mask: str | None = None  # .npy of (grid, grid) booleans over (RA, DEC) cells, True = observed
    mask_sha256: str | None = None  # digest of the mask's cells: recorded, and checked when given
    holes: tuple = ()  # ((ra, dec, radius), ...) degrees: cells whose centre lies inside are masked

    @classmethod
    def from_mapping(cls, values: Mapping) -> SurveySettings:
        if not isinstance(values, Mapping):
            raise ValueError(f"lightcone.survey must be a mapping of survey settings, got {values!r}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown lightcone.survey settings {unknown}; known: {known}")
        return cls(**values)

    def __post_init__(self):
        if not 0 <= self.sigma_z <= 1:  # also NaN
            raise ValueError(
                f"lightcone.survey.sigma_z must be in [0, 1] (the error per 1 + z, e.g. 0.003 for slitless "
                f"spectra, 0 for none), got {self.sigma_z}"
            )
        if not 0 <= self.outlier_fraction < 1:
            raise ValueError(
                "lightcone.survey.outlier_fraction must be in [0, 1) (e.g. 0.02 for 2% catastrophic "
                f"redshifts, 0 for none), got {self.outlier_fraction}"
            )
        if self.outlier_offset is not None and not math.isfinite(self.outlier_offset):
            raise ValueError(
                "lightcone.survey.outlier_offset must be a finite redshift shift, or null for outliers "
                f"uniform over lightcone.z; got {self.outlier_offset}"
            )
        object.__setattr__(self, "holes", _canonical_holes(self.holes))
        object.__setattr__(self, "nz", None if self.nz is None else _canonical_nz(self.nz))
        if self.mask is not None:
            object.__setattr__(self, "mask", str(self.mask))

    @property
    def active(self) -> bool:
        """Whether the block changes the cone at all."""
        return bool(self.sigma_z or self.outlier_fraction or self.nz is not None or self.masked)

    @property
    def masked(self) -> bool:
        return self.mask is not None or bool(self.holes)

    def check_cone(self, z_range: Sequence[float]) -> None:
        """Raise ValueError when the n(z) table does not cover the cone's redshifts or is zero over them."""
        if self.nz is None:
            return
        if "z" in self.nz:
            lo, hi = self.nz["z"][0], self.nz["z"][-1]
            if not lo <= z_range[0] < z_range[1] <= hi:
                raise ValueError(
                    f"lightcone.survey.nz.z spans [{lo}, {hi}], which must cover lightcone.z {list(z_range)}: "
                    "extend the table (give n = 0 where the survey sees nothing)"
                )
        z = np.linspace(z_range[0], z_range[1], 257)
        if not np.any(nz_function(self.nz)(z) > 0):
            raise ValueError(
                f"lightcone.survey.nz is zero over lightcone.z {list(z_range)}: nothing would be kept"
            )

    def to_dict(self, mask_sha256: str | None = None) -> dict:
        """The block written out in full, as JSON (the manifest's record), with the mask file's digest."""
        return {
            "sigma_z": float(self.sigma_z),
            "outlier_fraction": float(self.outlier_fraction),
            "outlier_offset": None if self.outlier_offset is None else float(self.outlier_offset),
            "nz": None if self.nz is None else dict(self.nz),
            "mask": self.mask,
            "mask_sha256": mask_sha256 or self.mask_sha256,
            "holes": [list(h) for h in self.holes],
        }


def _canonical_holes(holes) -> tuple:
    """((ra, dec, radius), ...) floats; raises ValueError naming a bad hole."""
    out = []
    for i, hole in enumerate(holes or ()):
        values = list(hole) if isinstance(hole, Sequence) and not isinstance(hole, str) else []
        if len(values) != 3 or not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            raise ValueError(f"lightcone.survey.holes[{i}] = {hole!r}: give [ra, dec, radius] in degrees")
        ra, dec, radius = map(float, values)
        if not (-180 <= ra <= 180 and -90 <= dec <= 90 and 0 < radius <= 90):
            raise ValueError(
                f"lightcone.survey.holes[{i}] = {values}: need -180 <= ra <= 180, -90 <= dec <= 90 and "
                "0 < radius <= 90 degrees"
            )
        out.append((ra, dec, radius))
    return tuple(out)


def _canonical_nz(nz: Mapping) -> dict:
    """The n(z) block checked and written out in full: a table {z, n, kind} or an analytic {shape, ...}."""
    if not isinstance(nz, Mapping):
        raise ValueError(
            f"lightcone.survey.nz must be {{z: [...], n: [...]}} or {{shape: smail, ...}}, got {nz!r}"
        )
    kind = nz.get("kind", "dndz")
    if kind not in NZ_KINDS:
        raise ValueError(f"lightcone.survey.nz.kind must be one of {NZ_KINDS}, got {kind!r}")
    if "shape" in nz:
        return _canonical_shape(nz, kind)
    unknown = sorted(set(nz) - {"z", "n", "kind"})
    if unknown or "z" not in nz or "n" not in nz:
        raise ValueError(
            f"lightcone.survey.nz table takes z, n and kind (got keys {sorted(nz)}); e.g. "
            "nz: {z: [0.3, 0.5, 0.8], n: [1.0, 2.0, 0.5]}, or nz: {shape: smail, z0: 0.5, alpha: 2, beta: 1.5}"
        )
    z, n = np.asarray(nz["z"], dtype=float), np.asarray(nz["n"], dtype=float)
    if z.ndim != 1 or z.shape != n.shape or len(z) < 2 or not np.all(np.isfinite(z) & np.isfinite(n)):
        raise ValueError(
            f"lightcone.survey.nz.z and .n must be finite lists of equal length >= 2, got {nz['z']!r}, {nz['n']!r}"
        )
    if np.any(np.diff(z) <= 0) or z[0] < 0:
        raise ValueError(
            f"lightcone.survey.nz.z must increase strictly from z >= 0 (sort the table by z, one row per z), "
            f"got {z.tolist()}"
        )
    if np.any(n < 0):
        raise ValueError(f"lightcone.survey.nz.n must be >= 0, got {n.tolist()}")
    return {"z": z.tolist(), "n": n.tolist(), "kind": kind}


def _canonical_shape(nz: Mapping, kind: str) -> dict:
    if nz["shape"] not in NZ_SHAPES or kind != "dndz":
        raise ValueError(
            f"lightcone.survey.nz.shape must be one of {NZ_SHAPES} (a relative dN/dz, kind dndz), "
            f"got shape {nz['shape']!r}, kind {kind!r}"
        )
    unknown = sorted(set(nz) - {"shape", "kind", "z0", "alpha", "beta"})
    if unknown or not {"z0", "alpha", "beta"} <= set(nz):
        raise ValueError(
            f"lightcone.survey.nz {{shape: smail}} takes z0, alpha, beta (n ~ z^alpha exp(-(z/z0)^beta)), "
            f"got keys {sorted(nz)}"
        )
    z0, alpha, beta = (float(nz[k]) for k in ("z0", "alpha", "beta"))
    if not (z0 > 0 and alpha >= 0 and beta > 0 and math.isfinite(z0 + alpha + beta)):
        raise ValueError(
            f"lightcone.survey.nz smail needs z0 > 0, alpha >= 0, beta > 0, got {z0}, {alpha}, {beta}"
        )
    return {"shape": "smail", "z0": z0, "alpha": alpha, "beta": beta, "kind": kind}


def nz_function(nz: Mapping) -> Callable[[np.ndarray], np.ndarray]:
    """n(z) of a canonical nz block (relative dN/dz, or (h/Mpc)^3 for kind density); zero outside a table."""
    if nz.get("shape") == "smail":
        z0, alpha, beta = nz["z0"], nz["alpha"], nz["beta"]
        return lambda z: np.asarray(z, float) ** alpha * np.exp(-((np.asarray(z, float) / z0) ** beta))
    table_z, table_n = np.asarray(nz["z"]), np.asarray(nz["n"])
    return lambda z: np.interp(z, table_z, table_n, left=0.0, right=0.0)


def survey_rng(seed: int, cone: int) -> np.random.Generator:
    """The generator of the survey draws of cone ``cone`` (its index in the box) of the box with ``seed``."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), SURVEY_STREAM, int(cone)]))


# -- the angular mask -------------------------------------------------------------------------------------
def cell_index(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The cell of each value on ``edges`` as ``np.histogramdd`` bins it (the last edge in the last cell;
    -1 or len(edges) - 1 outside)."""
    index = np.searchsorted(edges, values, side="right") - 1
    return np.where(values == edges[-1], len(edges) - 2, index)


def load_mask(path: str, bins: int, expected_sha256: str | None = None) -> tuple[np.ndarray, str]:
    """The observed cells (bool (bins, bins), True = observed) of a .npy mask file, and their digest."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ValueError(
            f"lightcone.survey.mask: no file {file}; give the path of a .npy of (grid, grid) booleans"
        )
    cells = np.load(file, allow_pickle=False)
    if cells.shape != (bins, bins):
        raise ValueError(
            f"lightcone.survey.mask {file} has shape {cells.shape}, the histogram has ({bins}, {bins}) (RA, DEC) "
            "cells: save a (grid, grid) array (RA along the first axis, True = observed)"
        )
    if cells.dtype != bool and not np.isin(cells, (0, 1)).all():
        raise ValueError(f"lightcone.survey.mask {file} must hold booleans or 0/1 (1 = observed)")
    cells = cells.astype(bool)
    digest = hashlib.sha256(np.packbits(cells).tobytes() + str(cells.shape).encode()).hexdigest()
    if expected_sha256 is not None and expected_sha256 != digest:
        raise ValueError(
            f"lightcone.survey.mask {file} holds other cells than the recorded mask_sha256 {expected_sha256}: "
            "restore that file, or drop mask_sha256 (and build a new store) to use the new mask"
        )
    return cells, digest


def hole_cells(holes: Sequence, ra_edges: np.ndarray, dec_edges: np.ndarray) -> np.ndarray:
    """Cells (bool (n_ra, n_dec)) whose centre lies in a hole; raises when a hole masks no cell."""
    ra = np.radians(0.5 * (ra_edges[:-1] + ra_edges[1:]))[:, None]
    dec = np.radians(0.5 * (dec_edges[:-1] + dec_edges[1:]))[None, :]
    inside = np.zeros((len(ra), dec.shape[1]), bool)
    for i, (ra0, dec0, radius) in enumerate(holes):
        ra0, dec0 = math.radians(ra0), math.radians(dec0)
        # haversine great-circle distance between the cell centres and the hole's centre
        h = np.sin((dec - dec0) / 2) ** 2 + np.cos(dec) * math.cos(dec0) * np.sin((ra - ra0) / 2) ** 2
        hit = 2 * np.arcsin(np.sqrt(np.clip(h, 0, 1))) < math.radians(radius)
        if not hit.any():
            raise ValueError(
                f"lightcone.survey.holes[{i}] = {list(holes[i])} masks no cell of the footprint (RA "
                f"[{ra_edges[0]}, {ra_edges[-1]}], DEC [{dec_edges[0]}, {dec_edges[-1]}] degrees, cells of "
                f"{ra_edges[1] - ra_edges[0]:.3g} x {dec_edges[1] - dec_edges[0]:.3g}, masked when the centre "
                "lies in the hole): move its centre into the footprint or enlarge its radius"
            )
        inside |= hit
    return inside


def observed_cells(survey: SurveySettings, ra_edges: np.ndarray, dec_edges: np.ndarray) -> np.ndarray | None:
    """The observed (RA, DEC) cells of the survey (bool (n_ra, n_dec)), None without a mask."""
    if not survey.masked:
        return None
    bins = len(ra_edges) - 1
    if bins > MAX_MASKED_GRID:
        raise ValueError(
            f"a lightcone mask is stored as the (grid, grid) attribute 'observed', which HDF5 caps at 64 KB: "
            f"grid <= {MAX_MASKED_GRID} with lightcone.survey.mask or holes, got {bins}"
        )
    cells = np.ones((bins, bins), bool)
    if survey.mask is not None:
        cells, _ = load_mask(survey.mask, bins, survey.mask_sha256)
    if survey.holes:
        cells = cells & ~hole_cells(survey.holes, ra_edges, dec_edges)
    if not cells.any():
        raise ValueError("lightcone.survey masks every cell of the footprint: nothing would be observed")
    return cells


def solid_angle(ra_edges: np.ndarray, dec_edges: np.ndarray, observed: np.ndarray | None) -> float:
    """Steradians of the observed cells (all cells without a mask)."""
    cells = np.outer(np.diff(np.radians(ra_edges)), np.diff(np.sin(np.radians(dec_edges))))
    return float(cells.sum() if observed is None else cells[observed].sum())


# -- redshift errors and the radial selection ----------------------------------------------------------------
def redshift_errors(
    z: np.ndarray, survey: SurveySettings, z_range: Sequence[float], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Measured redshifts: z + sigma_z (1 + z) N(0, 1), then the outliers (uniform over z_range, or shifted
    by outlier_offset); returns (redshifts, outlier flags). Draws nothing for a zero sigma_z or fraction."""
    z = np.asarray(z, dtype=float)
    out = z + survey.sigma_z * (1 + z) * rng.standard_normal(len(z)) if survey.sigma_z > 0 else z.copy()
    outlier = np.zeros(len(z), bool)
    if survey.outlier_fraction > 0:
        outlier = rng.random(len(z)) < survey.outlier_fraction
        if survey.outlier_offset is None:
            out[outlier] = rng.uniform(z_range[0], z_range[1], int(outlier.sum()))
        else:
            out[outlier] += survey.outlier_offset
    return out, outlier


def target_counts(
    nz: Mapping, edges: np.ndarray, steradians: float, cosmology: Cosmology, samples: int = 32
) -> np.ndarray:
    """int n(z) dz (kind dndz, relative) or int n dV/dz dz (kind density, tracers) over each z cell."""
    z = edges[:-1, None] + np.diff(edges)[:, None] * np.linspace(0.0, 1.0, samples + 1)
    n = nz_function(nz)(z)
    if nz["kind"] == "density":  # dV/dz = Omega chi^2 dchi/dz, dchi/dz = c / (100 E(z)) Mpc/h
        chi = cosmology.comoving_distance(z)
        n = n * steradians * chi**2 * (SPEED_OF_LIGHT / 100.0) / cosmology.efunc(z)
    return (0.5 * (n[:, 1:] + n[:, :-1]) * np.diff(z, axis=1)).sum(1)


def radial_selection(
    z: np.ndarray,
    nz: Mapping,
    edges: np.ndarray,
    steradians: float,
    cosmology: Cosmology,
    rng: np.random.Generator,
) -> tuple[np.ndarray, float]:
    """Keep flags thinning the tracers at redshifts z to the target n(z) on the z cells ``edges`` (module
    doc), and the fraction of the target the cone could not supply. Tracers outside the cells are dropped."""
    cells = len(edges) - 1
    cell = cell_index(np.asarray(z, dtype=float), edges)
    inside = (cell >= 0) & (cell < cells)
    available = np.bincount(cell[inside], minlength=cells).astype(float)
    target = target_counts(nz, edges, steradians, cosmology)
    if nz["kind"] == "dndz":  # the largest scale with every kept fraction <= 1
        filled = (available > 0) & (target > 0)
        target = target * (np.min(available[filled] / target[filled]) if filled.any() else 0.0)
    kept = np.minimum(np.divide(target, available, out=np.zeros(cells), where=available > 0), 1.0)
    missing = np.maximum(target - available, 0.0)
    shortfall = float(missing.sum() / target.sum()) if target.sum() > 0 else 1.0
    if shortfall > SHORTFALL_WARNING:
        short = np.flatnonzero(missing > 0)
        log.warning(
            "lightcone.survey.nz asks for more tracers than the cone holds at z in [%.3f, %.3f]: %.1f%% of "
            "the target is missing (those cells keep all theirs); lower nz.n or lightcone.mass_min",
            edges[short[0]],
            edges[short[-1] + 1],
            100 * shortfall,
        )
    keep = np.zeros(len(cell), bool)
    keep[inside] = rng.random(int(inside.sum())) < kept[cell[inside]]
    return keep, shortfall
