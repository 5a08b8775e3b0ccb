"""Cosmological parameters, background, linear growth and linear matter power; parameter priors.

Conventions: flat universe; Omega_m counts CDM + baryons + massive neutrinos; M_nu is the sum of
three degenerate neutrino masses in eV; dark energy follows w(a) = w0 + wa (1 - a) (CPL).
Radiation is neglected in the background (a < 0.1% effect on H(z) at z < 3).
H(z) = 100 E(z) in (km/s)/(Mpc/h); k in h/Mpc; P(k) in (Mpc/h)^3; the growth factor D is
normalised to D(z=0) = 1 and treated as scale-independent (neutrinos enter P(k, z) through CAMB only).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

PARAMETER_NAMES = ("Omega_m", "Omega_b", "h", "n_s", "sigma_8", "M_nu", "w0", "wa")
# Names used by other codes for the same parameters (Quijote's nwLH calls w0 "w").
PARAMETER_ALIASES = {"w": "w0", "Om": "Omega_m", "Ob": "Omega_b", "ns": "n_s", "s8": "sigma_8", "Mnu": "M_nu"}
T_CMB = 2.7255  # K


@dataclass(frozen=True)
class Cosmology:
    """One flat w0waCDM cosmology with massive neutrinos; defaults are Quijote's fiducial."""

    Omega_m: float = 0.3175
    Omega_b: float = 0.049
    h: float = 0.6711
    n_s: float = 0.9624
    sigma_8: float = 0.834
    M_nu: float = 0.0
    w0: float = -1.0
    wa: float = 0.0

    def __post_init__(self):
        for name in PARAMETER_NAMES:
            value = getattr(self, name)
            if not np.isfinite(value):
                raise ValueError(f"cosmological parameter {name} must be finite, got {value}")
            object.__setattr__(self, name, float(value))
        if not 0 < self.Omega_b < self.Omega_m < 1:
            raise ValueError(
                f"need 0 < Omega_b < Omega_m < 1, got Omega_b={self.Omega_b}, Omega_m={self.Omega_m}"
            )
        if not 0.2 < self.h < 1.5:
            raise ValueError(f"h is H0 / (100 km/s/Mpc), expected in (0.2, 1.5), got {self.h}")
        if self.sigma_8 <= 0 or self.M_nu < 0:
            raise ValueError(f"need sigma_8 > 0 and M_nu >= 0, got {self.sigma_8}, {self.M_nu}")
        if self.Omega_nu >= self.Omega_m - self.Omega_b:
            raise ValueError(
                f"M_nu={self.M_nu} eV leaves no room for cold dark matter at Omega_m={self.Omega_m}"
            )

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_mapping(cls, params: Mapping[str, float], base: Cosmology | None = None) -> Cosmology:
        """Build from a mapping of parameter names (aliases such as ``w`` allowed); others from ``base``."""
        values = dataclasses.asdict(base or cls())
        unknown = []
        for key, value in params.items():
            name = PARAMETER_ALIASES.get(key, key)
            if name not in values:
                unknown.append(key)
                continue
            values[name] = value
        if unknown:
            raise ValueError(f"unknown cosmological parameters {unknown}; known: {list(PARAMETER_NAMES)}")
        return cls(**values)

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    # -- background ---------------------------------------------------------------------------
    @property
    def Omega_nu(self) -> float:
        """Massive-neutrino density today, Omega_nu h^2 = M_nu / 93.14 eV."""
        return self.M_nu / (93.14 * self.h**2)

    @property
    def Omega_de(self) -> float:
        return 1.0 - self.Omega_m

    def _de_evolution(self, a):
        """rho_DE(a) / rho_DE(1) for CPL dark energy."""
        return a ** (-3.0 * (1.0 + self.w0 + self.wa)) * np.exp(-3.0 * self.wa * (1.0 - a))

    def efunc(self, z):
        """E(z) = H(z) / H0."""
        a = 1.0 / (1.0 + np.asarray(z, dtype=float))
        return np.sqrt(self.Omega_m * a**-3 + self.Omega_de * self._de_evolution(a))

    def hubble(self, z):
        """H(z) in (km/s)/(Mpc/h)."""
        return 100.0 * self.efunc(z)

    def omega_m_z(self, z):
        """Omega_m(z) = Omega_m (1+z)^3 / E(z)^2."""
        return self.Omega_m * (1.0 + np.asarray(z, dtype=float)) ** 3 / self.efunc(z) ** 2

    def growth_factor(self, z):
        """Linear growth D(z), D(0) = 1."""
        lna = -np.log1p(np.asarray(z, dtype=float))
        table = _growth_solution(self)
        return table.sol(lna)[0] / table.sol(0.0)[0]

    def growth_rate(self, z):
        """f(z) = dln D / dln a."""
        lna = -np.log1p(np.asarray(z, dtype=float))
        d, dd = _growth_solution(self).sol(lna)
        return dd / d

    def comoving_distance(self, z):
        """Line-of-sight comoving distance chi(z) = (c / H0) int_0^z dz' / E(z') in Mpc/h (flat: also the
        transverse distance), tabulated per cosmology for 0 <= z <= 20."""
        z = np.asarray(z, dtype=float)
        if np.any((z < 0) | (z > _DISTANCE_Z_MAX)):
            raise ValueError(f"comoving distances are tabulated for 0 <= z <= {_DISTANCE_Z_MAX}, got {z}")
        grid, chi = _distance_table(self)
        return np.interp(z, grid, chi)

    def redshift_at_distance(self, chi):
        """The cosmological redshift at comoving distance chi (Mpc/h): the inverse of ``comoving_distance``."""
        grid, table = _distance_table(self)
        chi = np.asarray(chi, dtype=float)
        if np.any((chi < 0) | (chi > table[-1])):
            raise ValueError(f"comoving distance must lie in [0, {table[-1]:.0f}] Mpc/h, got {chi}")
        return np.interp(chi, table, grid)

    def a_h(self, z) -> float:
        """a H(z) in (km/s)/(Mpc/h): converts a peculiar velocity in km/s to a comoving shift in Mpc/h."""
        return float(self.hubble(z) / (1.0 + z))

    def a_h_f(self, z) -> float:
        """a H(z) f(z) in (km/s)/(Mpc/h): the linear-theory velocity factor (~52 at z=0, Omega_m=0.3)."""
        return float(self.a_h(z) * self.growth_rate(z))

    # -- linear power -------------------------------------------------------------------------
    def linear_power(self, k, z: float = 0.0, method: str = "camb") -> np.ndarray:
        """Linear matter power P(k, z) in (Mpc/h)^3 at k in h/Mpc, normalised to sigma_8 at z = 0.

        method="camb": CAMB's total-matter spectrum (massive neutrinos, w0/wa via PPF), cached per cosmology
        and redshift; method="eh": Eisenstein & Hu (1998) no-wiggle fit times D(z)^2 (fast, ~5% off CAMB).
        """
        k = np.asarray(k, dtype=float)
        if method == "camb":
            log_k, log_p = _camb_table(self, float(z))
        elif method == "eh":
            log_k, log_p = _eh_table(self, float(z))
        else:
            raise ValueError(f"unknown linear-power method {method!r}; use 'camb' or 'eh'")
        return _loglog_interp(k, log_k, log_p)

    def nonlinear_power(self, k, z: float = 0.0) -> np.ndarray:
        """CAMB's HMcode-2020 (Mead et al. 2021) nonlinear matter P(k, z) in (Mpc/h)^3, for the same sigma_8.

        A few per cent accurate to k ~ 1 h/Mpc for LCDM; the reference for the particle-mesh mocks.
        """
        log_k, log_p = _camb_table(self, float(z), nonlinear=True)
        return _loglog_interp(np.asarray(k, dtype=float), log_k, log_p)

    def sigma_r(self, radius: float = 8.0, z: float = 0.0, method: str = "camb") -> float:
        """rms linear fluctuation in spheres of radius R (Mpc/h)."""
        k = np.logspace(-5, 3, 4000)
        return sigma_from_power(k, self.linear_power(k, z, method), radius)


def sigma_from_power(k: np.ndarray, power: np.ndarray, radius: float) -> float:
    """sigma_R^2 = int dk k^2 P(k) W^2(kR) / (2 pi^2) with the spherical top-hat W (trapezoid in ln k)."""
    x = k * radius
    window = 3.0 * (np.sin(x) - x * np.cos(x)) / x**3
    integrand = k**3 * power * window**2 / (2.0 * np.pi**2)
    return float(np.sqrt(np.trapezoid(integrand, np.log(k))))


def _loglog_interp(k: np.ndarray, log_k: np.ndarray, log_p: np.ndarray) -> np.ndarray:
    """Interpolate log P in log k; power-law extrapolation from the two end points on either side."""
    out = np.zeros_like(k, dtype=float)
    positive = k > 0
    lk = np.log(k[positive])
    lp = np.interp(lk, log_k, log_p)
    lo, hi = lk < log_k[0], lk > log_k[-1]
    slope_lo = (log_p[1] - log_p[0]) / (log_k[1] - log_k[0])
    slope_hi = (log_p[-1] - log_p[-2]) / (log_k[-1] - log_k[-2])
    lp[lo] = log_p[0] + slope_lo * (lk[lo] - log_k[0])
    lp[hi] = log_p[-1] + slope_hi * (lk[hi] - log_k[-1])
    out[positive] = np.exp(lp)
    return out


SPEED_OF_LIGHT = 299792.458  # km/s
_DISTANCE_Z_MAX = 20.0


@lru_cache(maxsize=256)
def _distance_table(cosmo: Cosmology) -> tuple[np.ndarray, np.ndarray]:
    """(z, chi) on a grid fine enough for linear interpolation to ~1e-7 (dz = 1e-3 near z = 0)."""
    from scipy.integrate import cumulative_simpson

    z = np.expm1(np.linspace(0.0, np.log1p(_DISTANCE_Z_MAX), 8001))
    chi = cumulative_simpson(SPEED_OF_LIGHT / 100.0 / cosmo.efunc(z), x=z, initial=0.0)
    return z, chi


@lru_cache(maxsize=256)
def _growth_solution(cosmo: Cosmology):
    """Solve D'' + (2 + dlnH/dlna) D' - 1.5 Omega_m(a) D = 0 in ln a from a = 1e-3 (D = a) to a = 1."""
    from scipy.integrate import solve_ivp

    def rhs(lna, y):
        a = math.exp(lna)
        de = cosmo.Omega_de * cosmo._de_evolution(a)
        e2 = cosmo.Omega_m * a**-3 + de
        dlne2 = (
            -3.0 * cosmo.Omega_m * a**-3 + de * (-3.0 * (1.0 + cosmo.w0 + cosmo.wa) + 3.0 * cosmo.wa * a)
        ) / e2
        om = cosmo.Omega_m * a**-3 / e2
        return [y[1], -(2.0 + 0.5 * dlne2) * y[1] + 1.5 * om * y[0]]

    a0 = 1e-3
    return solve_ivp(rhs, (math.log(a0), 0.0), [a0, a0], rtol=1e-9, atol=1e-12, dense_output=True)


@lru_cache(maxsize=64)
def _camb_table(cosmo: Cosmology, z: float, kmax: float = 50.0, nonlinear: bool = False):
    """(ln k, ln P) of CAMB's total-matter P(k, z), normalised to sigma_8 (linear, at z = 0).

    The linear spectrum is rescaled; a nonlinear one is recomputed with A_s set to give that sigma_8.
    """
    import camb

    h2 = cosmo.h**2
    pars = camb.CAMBparams()
    neutrinos = {"mnu": cosmo.M_nu, "num_massive_neutrinos": 3 if cosmo.M_nu > 0 else 1}
    pars.set_cosmology(
        H0=100 * cosmo.h, ombh2=cosmo.Omega_b * h2, omch2=0.1, neutrino_hierarchy="degenerate", **neutrinos
    )
    omch2 = cosmo.Omega_m * h2 - pars.ombh2 - pars.omnuh2  # CAMB's own neutrino density
    pars.set_cosmology(
        H0=100 * cosmo.h, ombh2=cosmo.Omega_b * h2, omch2=omch2, neutrino_hierarchy="degenerate", **neutrinos
    )
    if cosmo.w0 != -1.0 or cosmo.wa != 0.0:
        pars.set_dark_energy(w=cosmo.w0, wa=cosmo.wa, dark_energy_model="ppf")
    a_s = 2e-9
    pars.InitPower.set_params(As=a_s, ns=cosmo.n_s)
    redshifts = sorted({z, 0.0}, reverse=True)
    pars.set_matter_power(redshifts=redshifts, kmax=kmax * cosmo.h, nonlinear=False)
    results = camb.get_results(pars)
    rescale = (cosmo.sigma_8 / results.get_sigma8_0()) ** 2
    if nonlinear:
        pars.InitPower.set_params(As=a_s * rescale, ns=cosmo.n_s)
        pars.NonLinear = camb.model.NonLinear_pk
        pars.NonLinearModel.set_params(halofit_version="mead2020")
        results, rescale = camb.get_results(pars), 1.0
    kh, zs, pk = results.get_matter_power_spectrum(minkh=1e-4, maxkh=kmax, npoints=800)
    row = int(np.argmin(np.abs(np.asarray(zs) - z)))
    return np.log(kh), np.log(pk[row] * rescale)


def _eh_nowiggle_transfer(cosmo: Cosmology, k: np.ndarray) -> np.ndarray:
    """Eisenstein & Hu (1998, eqs. 26-31) zero-baryon-oscillation transfer function; k in h/Mpc."""
    om_h2, ob_h2 = cosmo.Omega_m * cosmo.h**2, cosmo.Omega_b * cosmo.h**2
    fb = cosmo.Omega_b / cosmo.Omega_m
    theta = T_CMB / 2.7
    s = 44.5 * np.log(9.83 / om_h2) / np.sqrt(1.0 + 10.0 * ob_h2**0.75)  # sound horizon, Mpc
    alpha = 1.0 - 0.328 * np.log(431.0 * om_h2) * fb + 0.38 * np.log(22.3 * om_h2) * fb**2
    k_mpc = k * cosmo.h
    gamma = cosmo.Omega_m * cosmo.h * (alpha + (1.0 - alpha) / (1.0 + (0.43 * k_mpc * s) ** 4))
    q = k * theta**2 / gamma
    l0 = np.log(2.0 * np.e + 1.8 * q)
    c0 = 14.2 + 731.0 / (1.0 + 62.5 * q)
    return l0 / (l0 + c0 * q**2)


@lru_cache(maxsize=256)
def _eh_table(cosmo: Cosmology, z: float):
    k = np.logspace(-5, 3, 4000)
    shape = k**cosmo.n_s * _eh_nowiggle_transfer(cosmo, k) ** 2
    norm = (cosmo.sigma_8 / sigma_from_power(k, shape, 8.0)) ** 2
    power = norm * shape * float(cosmo.growth_factor(z)) ** 2
    return np.log(k), np.log(power)


# -- priors and designs ------------------------------------------------------------------------
FIDUCIALS: dict[str, Cosmology] = {
    "quijote": Cosmology(),
    "planck2018": Cosmology(Omega_m=0.3133, Omega_b=0.0493, h=0.6736, n_s=0.9649, sigma_8=0.8079),
}

# Quijote latin hypercube (Villaescusa-Navarro et al. 2020)
QUIJOTE_LH = {
    "Omega_m": (0.1, 0.5),
    "Omega_b": (0.03, 0.07),
    "h": (0.5, 0.9),
    "n_s": (0.8, 1.2),
    "sigma_8": (0.6, 1.0),
}
PRIORS: dict[str, dict[str, tuple[float, float]]] = {
    "quijote_lh": QUIJOTE_LH,
    # Quijote nwLH ("LHvw" in the seed talk): the LH ranges plus neutrino mass (eV) and a constant w
    "quijote_nwlh": {**QUIJOTE_LH, "M_nu": (0.01, 1.0), "w0": (-1.3, -0.7)},
    # Hwang & Sabiu (2023) ViT study, w0-wa ranges; Omega_b fixed to the Planck 2018 fiducial
    "hwang_sabiu_w0wa": {
        "Omega_m": (0.25, 0.4),
        "sigma_8": (0.75, 0.85),
        "w0": (-1.3, -0.7),
        "wa": (-0.3, 0.3),
        "n_s": (0.9, 1.1),
        "h": (0.6, 0.8),
    },
}

PRIOR_FIDUCIAL = {"quijote_lh": "quijote", "quijote_nwlh": "quijote", "hwang_sabiu_w0wa": "planck2018"}


def resolve_prior(prior: str | Mapping[str, Sequence[float]]) -> dict[str, tuple[float, float]]:
    if isinstance(prior, str):
        if prior not in PRIORS:
            raise ValueError(f"unknown prior preset {prior!r}; presets: {sorted(PRIORS)}")
        return PRIORS[prior]
    out = {}
    for key, bounds in prior.items():
        name = PARAMETER_ALIASES.get(key, key)
        if name not in PARAMETER_NAMES:
            raise ValueError(f"prior names unknown parameter {key!r}; known: {list(PARAMETER_NAMES)}")
        lo, hi = (float(b) for b in bounds)
        if not lo < hi:
            raise ValueError(f"prior on {name} needs lower < upper, got [{lo}, {hi}]")
        out[name] = (lo, hi)
    return out


def latin_hypercube(
    prior: str | Mapping[str, Sequence[float]], n: int, seed: int, fiducial: Cosmology | None = None
) -> list[Cosmology]:
    """n cosmologies from a seeded Latin hypercube (scipy.stats.qmc) over the prior's box.

    Parameters outside the prior keep the fiducial values (the preset's own fiducial by default).
    """
    bounds = resolve_prior(prior)
    if fiducial is None:
        fiducial = FIDUCIALS[PRIOR_FIDUCIAL.get(prior, "quijote")] if isinstance(prior, str) else Cosmology()
    return [Cosmology.from_mapping(row, base=fiducial) for row in latin_hypercube_rows(bounds, n, seed)]


def latin_hypercube_rows(
    bounds: Mapping[str, tuple[float, float]], n: int, seed: int
) -> list[dict[str, float]]:
    """n points {name: value} of a seeded Latin hypercube (scipy.stats.qmc) over the box {name: (lo, hi)}:
    the one sampler of the cosmological and the HOD hypercubes."""
    from scipy.stats import qmc

    names = list(bounds)
    unit = qmc.LatinHypercube(d=len(names), seed=seed).random(n)
    samples = qmc.scale(unit, [bounds[p][0] for p in names], [bounds[p][1] for p in names])
    return [dict(zip(names, row.tolist(), strict=True)) for row in samples]


def parameter_name(name: str) -> str | None:
    """The canonical cosmological parameter a target name stands for (aliases such as ``w``), or None."""
    canonical = PARAMETER_ALIASES.get(name, name)
    return canonical if canonical in PARAMETER_NAMES else None
