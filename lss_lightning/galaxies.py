"""Galaxies from haloes with the five-parameter Zheng et al. (2007) halo occupation distribution.

Model (Zheng et al. 2007, ApJ 667:760, arXiv:astro-ph/0703457; halotools cites its eqs. 2 and 5 for
these two; the same functions as halotools' Zheng07Cens and Zheng07Sats.mean_occupation):

    <Ncen>(M) = 1/2 [1 + erf((log10 M - log_M_min) / sigma_logM)]
    <Nsat>(M) = <Ncen>(M) ((M - M0) / M1)^alpha  for M > M0, else 0

The <Ncen> factor on the satellites is halotools' ``modulate_with_cenocc=True``; halotools' own default
is False (the bare power law, as it cites Zheng 2007's eq. 5). We modulate so that satellites fade with
the centrals below the central step, the usual convention of LRG HODs
(``mean_satellites(..., modulate_with_cenocc=False)`` gives the bare form; populate always modulates).
Each halo gets a central with probability <Ncen> (Bernoulli) and Poisson(<Nsat>) satellites, drawn
independently (as halotools does, so a halo may hold satellites and no central).

Centrals sit at the halo position. Satellites follow an NFW profile (Navarro, Frenk & White 1997, ApJ
490:493) truncated at R_vir, sampled by the exact inverse of the enclosed-mass CDF (closed form with the
Lambert W function), in isotropic directions around the halo, then wrapped into the periodic box.
The concentration is Duffy et al. (2008, MNRAS 390:L64) for M_200m, full sample, z = 0-2:
c200m(M, z) = 10.14 (M / 2e12 Msun/h)^-0.081 (1 + z)^-1.01.

Units and conventions: positions comoving Mpc/h in [0, L); velocities peculiar km/s; masses Msun/h.
R_vir is the 200m radius, M = (4/3) pi R_vir^3 200 rho_m with rho_m = Omega_m rho_crit the comoving mean
matter density (so the comoving R_vir does not depend on z); halo masses are taken as M_200m as they come
(FoF b = 0.2 masses are close to it). Velocities are halo velocity + alpha * sigma_1D * N(0, 1) per axis,
sigma_1D = sqrt(G M / (2 R_vir,phys)) with the physical radius R_vir / (1 + z) (the isothermal-sphere
virial dispersion). Velocity bias alpha_c for centrals (0: at rest in the halo), alpha_s for satellites.

Not modelled: assembly bias or any occupation dependence beyond mass, satellite velocity anisotropy or a
Jeans-equation dispersion profile (satellite velocities are independent of their radii), concentration
scatter, subhalo positions, and central offsets from the halo centre.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import erf, lambertw

from lss_lightning.cosmology import latin_hypercube_rows

# the catalogue type lives with the store that holds it (the galaxies/ group); re-exported here
from lss_lightning.store.schema import GalaxyCatalogue, HaloCatalogue

RHO_CRIT = 2.77536627e11  # critical density today, (Msun/h) / (Mpc/h)^3 (= 2.775e11 h^2 Msun/Mpc^3)
G_NEWTON = 4.30091e-9  # gravitational constant, Mpc (km/s)^2 / Msun
DELTA_MEAN = 200.0  # overdensity of R_vir with respect to the mean matter density
# Duffy et al. 2008, Table 1, NFW, Delta = 200 mean, full sample, 0 < z < 2.
DUFFY08_A, DUFFY08_B, DUFFY08_C = 10.14, -0.081, -1.01
DUFFY08_PIVOT = 2e12  # Msun/h

LOG_MASS_FIELDS = ("log_M_min", "log_M0", "log_M1")
LOG_MASS_RANGE = (5.0, 20.0)  # log10(M h / Msun) accepted for the HOD mass scales
# halotools' Zheng07 param_dict names, accepted by HODParameters.from_mapping.
HOD_ALIASES = {"logMmin": "log_M_min", "logM0": "log_M0", "logM1": "log_M1"}


@dataclass(frozen=True)
class HODParameters:
    """Zheng et al. (2007) HOD; masses are log10(M / (Msun/h)).

    Defaults are our own choice for this project's mocks, whose haloes start near 1.3e13 Msun/h: an
    LRG-like sample (a central step at ~2e13, one satellite per central at ~1e14), of the order of
    published LRG HOD fits (log M1 ~ 14, alpha ~ 1) but not a fit to any data set.
    alpha_c, alpha_s: velocity bias of centrals and satellites (in units of sigma_1D).
    """

    log_M_min: float = 13.3
    sigma_logM: float = 0.3
    log_M0: float = 13.3
    log_M1: float = 14.0
    alpha: float = 1.0
    alpha_c: float = 0.0
    alpha_s: float = 1.0

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            number = isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)
            if not number or not math.isfinite(value):
                raise ValueError(f"HODParameters.{field.name} must be a finite number, got {value!r}")
            object.__setattr__(self, field.name, float(value))
        lo, hi = LOG_MASS_RANGE
        for name in LOG_MASS_FIELDS:
            value = getattr(self, name)
            if not lo <= value <= hi:
                raise ValueError(
                    f"HODParameters.{name} = {value} is outside [{lo}, {hi}]: it is log10 of a mass in "
                    f"Msun/h, pass e.g. {name}=13.3 rather than the mass itself"
                )
        positive = {
            "sigma_logM": "the width of the central step in log10 M, e.g. 0.3",
            "alpha": "the slope of the satellite power law, e.g. 1.0",
        }
        for name, meaning in positive.items():
            if not getattr(self, name) > 0:
                raise ValueError(f"HODParameters.{name} must be > 0 (got {getattr(self, name)}): {meaning}")
        for name in ("alpha_c", "alpha_s"):
            if getattr(self, name) < 0:
                raise ValueError(
                    f"HODParameters.{name} must be >= 0 (got {getattr(self, name)}): it scales the "
                    "velocity dispersion; 0 means no motion relative to the halo"
                )

    @classmethod
    def from_mapping(cls, params: Mapping[str, float], base: HODParameters | None = None) -> HODParameters:
        """Build from a mapping of field names (halotools' logMmin/logM0/logM1 allowed); others from base."""
        values = (base or cls()).to_dict()
        unknown = [key for key in params if HOD_ALIASES.get(key, key) not in values]
        if unknown:
            raise ValueError(f"unknown HOD parameters {unknown}; known: {list(values)}")
        values.update({HOD_ALIASES.get(key, key): value for key, value in params.items()})  # checked there
        return cls(**values)

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


HOD_NAMES = tuple(field.name for field in dataclasses.fields(HODParameters))


# -- mean occupations ------------------------------------------------------------------------------
def mean_centrals(masses, hod: HODParameters) -> np.ndarray:
    """<Ncen>(M) = 1/2 [1 + erf((log10 M - log_M_min) / sigma_logM)]; masses in Msun/h."""
    log_m = np.log10(np.asarray(masses, dtype=np.float64))
    return 0.5 * (1.0 + erf((log_m - hod.log_M_min) / hod.sigma_logM))


def mean_satellites(masses, hod: HODParameters, *, modulate_with_cenocc: bool = True) -> np.ndarray:
    """<Nsat>(M) = [<Ncen>(M)] ((M - M0) / M1)^alpha for M > M0, else 0; masses in Msun/h."""
    m = np.asarray(masses, dtype=np.float64)
    excess = np.clip(m - 10.0**hod.log_M0, 0.0, None) / 10.0**hod.log_M1
    n_sat = excess**hod.alpha  # 0^alpha = 0 as alpha > 0
    return n_sat * mean_centrals(m, hod) if modulate_with_cenocc else n_sat


def expected_number_density(hod: HODParameters, masses, box_size: float) -> float:
    """Mean galaxy number density sum_haloes (<Ncen> + <Nsat>) / L^3, in (h/Mpc)^3."""
    masses = np.asarray(masses, dtype=np.float64)
    total = mean_centrals(masses, hod).sum() + mean_satellites(masses, hod).sum()
    return float(total / box_size**3)


# -- halo properties -------------------------------------------------------------------------------
def virial_radius(masses, omega_m: float) -> np.ndarray:
    """Comoving R_200m in Mpc/h from M = (4/3) pi R^3 200 Omega_m rho_crit; masses in Msun/h."""
    rho_m = omega_m * RHO_CRIT  # comoving mean matter density, (Msun/h) / (Mpc/h)^3
    return np.cbrt(3.0 * np.asarray(masses, dtype=np.float64) / (4.0 * np.pi * DELTA_MEAN * rho_m))


def concentration_duffy08(masses, redshift: float) -> np.ndarray:
    """c200m(M, z) = 10.14 (M / 2e12 Msun/h)^-0.081 (1 + z)^-1.01 (Duffy et al. 2008, full sample)."""
    m = np.asarray(masses, dtype=np.float64)
    return DUFFY08_A * (m / DUFFY08_PIVOT) ** DUFFY08_B * (1.0 + redshift) ** DUFFY08_C


def virial_dispersion(masses, omega_m: float, redshift: float) -> np.ndarray:
    """1D virial velocity dispersion sqrt(G M / (2 R_vir,phys)) in km/s; masses in Msun/h.

    With M in Msun/h and R in Mpc/h the h cancels in M / R (both are the Msun and Mpc values times h),
    so G in Mpc (km/s)^2 / Msun gives (km/s)^2. The radius is physical, R_vir,comoving / (1 + z).
    """
    r_physical = virial_radius(masses, omega_m) / (1.0 + redshift)  # Mpc/h, physical
    return np.sqrt(G_NEWTON * np.asarray(masses, dtype=np.float64) / (2.0 * r_physical))


# -- NFW profile -----------------------------------------------------------------------------------
def _nfw_mu(y) -> np.ndarray:
    """Dimensionless NFW enclosed mass ln(1 + y) - y / (1 + y), y = r / r_s."""
    y = np.asarray(y, dtype=np.float64)
    return np.log1p(y) - y / (1.0 + y)


def nfw_enclosed_fraction(x, concentration) -> np.ndarray:
    """CDF of r / R_vir for an NFW profile truncated at R_vir: mu(c x) / mu(c), x in [0, 1]."""
    c = np.asarray(concentration, dtype=np.float64)
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    return _nfw_mu(c * x) / _nfw_mu(c)


def nfw_radius_quantile(u, concentration) -> np.ndarray:
    """Exact inverse of nfw_enclosed_fraction: the x = r / R_vir with CDF(x) = u, for u in [0, 1].

    mu(y) = q has the closed form 1 / (1 + y) = -W0(-exp(-1 - q)) (W0: principal Lambert W branch);
    at the branch point (q -> 0, where -exp(-1) rounds below -1/e) the start is mu ~ y^2 / 2 instead;
    one Newton step on mu(y) = q then polishes the rounding of W near the branch point (small u).
    """
    c = np.asarray(concentration, dtype=np.float64)
    q = np.asarray(u, dtype=np.float64) * _nfw_mu(c)
    w = lambertw(-np.exp(-1.0 - q), k=0).real
    y = np.where(np.isfinite(w) & (w < 0), -1.0 / w - 1.0, np.sqrt(2.0 * q))
    y = np.clip(y, 0.0, None)
    slope = y / (1.0 + y) ** 2  # d mu / dy
    step = np.divide(_nfw_mu(y) - q, slope, out=np.zeros_like(y), where=slope > 0)
    y = np.clip(y - step, 0.0, c)
    return y / c


def _isotropic_directions(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 3) unit vectors uniform on the sphere (cos theta and phi uniform)."""
    cos_theta = rng.uniform(-1.0, 1.0, n)
    phi = rng.uniform(0.0, 2.0 * np.pi, n)
    sin_theta = np.sqrt(1.0 - cos_theta**2)
    return np.stack([sin_theta * np.cos(phi), sin_theta * np.sin(phi), cos_theta], axis=1)


def satellite_offsets(masses, omega_m: float, redshift: float, rng: np.random.Generator) -> np.ndarray:
    """(S, 3) comoving offsets in Mpc/h of one satellite per host mass from its halo centre (NFW)."""
    masses = np.asarray(masses, dtype=np.float64)
    x = nfw_radius_quantile(rng.uniform(0.0, 1.0, len(masses)), concentration_duffy08(masses, redshift))
    radius = x * virial_radius(masses, omega_m)  # comoving Mpc/h
    return radius[:, None] * _isotropic_directions(len(masses), rng)


# -- galaxy catalogue ------------------------------------------------------------------------------
def _as_generator(rng: np.random.Generator | int) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a numpy Generator or an int seed, got {type(rng).__name__}")


def _draw_occupations(masses: np.ndarray, hod: HODParameters, rng: np.random.Generator):
    """Bernoulli centrals (H,) bool and Poisson satellite counts (H,) int64."""
    has_central = rng.uniform(0.0, 1.0, len(masses)) < mean_centrals(masses, hod)
    n_satellites = rng.poisson(mean_satellites(masses, hod)).astype(np.int64)
    return has_central, n_satellites


def _galaxy_layout(has_central: np.ndarray, n_satellites: np.ndarray):
    """host (G,) int64 and central (G,) bool for galaxies ordered by host, central first."""
    per_halo = has_central.astype(np.int64) + n_satellites
    host = np.repeat(np.arange(len(per_halo), dtype=np.int64), per_halo)
    starts = np.cumsum(per_halo) - per_halo
    central = np.zeros(len(host), dtype=bool)
    central[starts[has_central]] = True
    return host, central


def _wrap(positions: np.ndarray, box_size: float) -> np.ndarray:
    """float32 positions in [0, L) (values that round up to L in float32 go to 0, the same point)."""
    out = np.mod(positions, box_size).astype(np.float32)
    out[(out >= np.float32(box_size)) | (out < 0)] = 0.0
    return out


def _check_halos(catalogue: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    masses = np.asarray(catalogue.masses, dtype=np.float64)
    positions = np.asarray(catalogue.positions, dtype=np.float64)
    velocities = np.asarray(catalogue.velocities, dtype=np.float64)
    n = len(masses)
    if masses.shape != (n,) or positions.shape != (n, 3) or velocities.shape != (n, 3):
        raise ValueError(
            f"halo catalogue: masses {masses.shape}, positions {positions.shape}, velocities "
            f"{velocities.shape}; expected (H,), (H, 3), (H, 3)"
        )
    if n and not np.all(masses > 0):
        raise ValueError("halo catalogue: masses must be > 0 (Msun/h)")
    return masses, positions, velocities


def populate(
    catalogue: HaloCatalogue | Any,
    hod: HODParameters,
    *,
    box_size: float,
    redshift: float,
    omega_m: float,
    rng: np.random.Generator | int,
) -> GalaxyCatalogue:
    """Galaxies in the haloes of ``catalogue`` (attributes positions, velocities, masses in project units).

    box_size in Mpc/h; redshift of the snapshot (sets c(M, z) and the physical R_vir of sigma_1D);
    omega_m for rho_m; rng a numpy Generator or an int seed (the same seed gives the same galaxies).
    The catalogue records the HOD (``hod``) and an int seed (``seed``, -1 for a Generator).
    """
    if not box_size > 0 or not 0 < omega_m <= 1 or not redshift > -1:
        raise ValueError(
            f"need box_size > 0, 0 < omega_m <= 1, redshift > -1; got {box_size}, {omega_m}, {redshift}"
        )
    seed = int(rng) if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool) else -1
    rng = _as_generator(rng)
    masses, halo_pos, halo_vel = _check_halos(catalogue)
    has_central, n_satellites = _draw_occupations(masses, hod, rng)
    host, central = _galaxy_layout(has_central, n_satellites)
    positions = halo_pos[host]
    satellite = ~central
    positions[satellite] += satellite_offsets(masses[host[satellite]], omega_m, redshift, rng)
    bias = np.where(central, hod.alpha_c, hod.alpha_s)
    sigma = bias * virial_dispersion(masses[host], omega_m, redshift)  # km/s per axis
    velocities = halo_vel[host] + sigma[:, None] * rng.standard_normal((len(host), 3))
    return GalaxyCatalogue(
        _wrap(positions, box_size), velocities.astype(np.float32), central, host, hod.to_dict(), seed
    )


# -- parameter sampling ----------------------------------------------------------------------------
def sample_hod(
    prior: Mapping[str, Sequence[float]], n: int, seed: int, base: HODParameters | None = None
) -> list[HODParameters]:
    """n HODs from a seeded Latin hypercube (scipy.stats.qmc) over the prior's box {name: (lo, hi)}.

    Parameters outside the prior keep ``base`` (the defaults); the sampler is the cosmological hypercube's
    (``cosmology.latin_hypercube_rows``).
    """
    bounds = hod_prior_bounds(prior, "prior")
    if not bounds:
        raise ValueError("sample_hod needs a prior on at least one HOD parameter")
    return [HODParameters.from_mapping(row, base=base) for row in latin_hypercube_rows(bounds, n, seed)]


# -- the HOD of a store (shared by the mock and Quijote builders) ---------------------------------------
HOD_STREAM = 0x484F44  # "HOD": the HOD hypercube's seed stream beside a store's master seed
GALAXY_STREAM = 0x47414C  # "GAL": the galaxy draws' stream beside a simulation's seed


def check_hod(hod: Mapping) -> HODParameters:
    """An ``hod:`` config block as HOD parameters (ValueError naming the bad entry)."""
    try:
        return HODParameters.from_mapping(dict(hod))
    except ValueError as e:
        raise ValueError(f"bad hod block: {e}") from None


def check_hod_prior(prior: Mapping, base: HODParameters) -> dict[str, list[float]]:
    """{name: [lo, hi]} with canonical HOD names, each bound a valid value of its parameter (so every sample
    of the box is one: each parameter's valid range is an interval)."""
    out = {}
    for name, (lo, hi) in hod_prior_bounds(prior, "hod_prior").items():
        for bound in (lo, hi):
            try:
                HODParameters.from_mapping({name: bound}, base=base)
            except ValueError as e:
                raise ValueError(f"hod_prior.{name} = [{lo}, {hi}] reaches a bad value: {e}") from None
        out[name] = [lo, hi]
    return out


def hod_prior_bounds(prior: Mapping, what: str) -> dict[str, tuple[float, float]]:
    """{canonical HOD name: (lo, hi)} of a prior box, lo < hi; ValueError naming the entry of ``what``."""
    bounds = {}
    for key, pair in dict(prior).items():
        name = HOD_ALIASES.get(key, key)
        if name not in HOD_NAMES:
            raise ValueError(f"{what} names unknown HOD parameter {key!r}; known: {list(HOD_NAMES)}")
        if isinstance(pair, str | bytes) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise ValueError(f"{what}.{name} = {pair!r}: give [lo, hi]")
        lo, hi = float(pair[0]), float(pair[1])
        if not lo < hi:
            raise ValueError(f"{what}.{name} = [{lo}, {hi}]: need lo < hi")
        bounds[name] = (lo, hi)
    return bounds


def store_hods(base: HODParameters, prior: Mapping | None, n: int, seed: int) -> list[dict[str, float]]:
    """The HOD of each of n simulations: ``base`` for all, or a Latin hypercube over ``prior`` seeded by
    SeedSequence([seed, HOD_STREAM]) (with the master seed itself it would repeat the cosmological hypercube's
    unit samples and tie the HOD to the cosmology)."""
    if not prior:
        return [base.to_dict() for _ in range(n)]
    stream = int(np.random.SeedSequence([int(seed), HOD_STREAM]).generate_state(1)[0])
    return [hod.to_dict() for hod in sample_hod(prior, n, stream, base=base)]


def galaxy_seed(sim_seed: int) -> int:
    """The seed of a simulation's galaxy draws (:func:`populate`), from its own seed."""
    return int(np.random.SeedSequence([int(sim_seed), GALAXY_STREAM]).generate_state(1)[0])


def galaxy_settings(hod: Mapping | None, prior: Mapping | None) -> dict | None:
    """The store manifest's ``galaxies`` entry: the model, its HOD (every parameter) and prior; None without."""
    if hod is None:
        return None
    return {"model": "zheng07", "concentration": "duffy08", "hod": dict(hod), "hod_prior": prior}
