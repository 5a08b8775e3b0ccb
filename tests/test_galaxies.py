"""Zheng et al. (2007) HOD galaxies from haloes: occupations, NFW satellites, velocities, sampling."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from lss_lightning.galaxies import (
    GalaxyCatalogue,
    HODParameters,
    concentration_duffy08,
    expected_number_density,
    mean_centrals,
    mean_satellites,
    nfw_enclosed_fraction,
    nfw_radius_quantile,
    populate,
    sample_hod,
    virial_dispersion,
    virial_radius,
)
from lss_lightning.store.schema import HaloCatalogue

OMEGA_M = 0.3175


class Haloes:
    """The least a halo catalogue needs: positions (H, 3) Mpc/h, velocities (H, 3) km/s, masses (H,) Msun/h."""

    def __init__(self, masses, box_size, rng, velocity_scale=300.0):
        self.masses = np.asarray(masses, dtype=np.float64)
        self.positions = rng.uniform(0.0, box_size, (len(self.masses), 3))
        self.velocities = rng.normal(0.0, velocity_scale, (len(self.masses), 3))


def _grid_haloes(log_masses, per_mass, box_size, seed=0):
    return Haloes(np.repeat(10.0 ** np.asarray(log_masses), per_mass), box_size, np.random.default_rng(seed))


def _counts(galaxies: GalaxyCatalogue, n_haloes: int):
    """Centrals and satellites per halo."""
    n_cen = np.bincount(galaxies.host[galaxies.central], minlength=n_haloes)
    n_sat = np.bincount(galaxies.host[~galaxies.central], minlength=n_haloes)
    return n_cen, n_sat


def _offsets(galaxies: GalaxyCatalogue, haloes, box_size):
    """Minimum-image displacement (G, 3) of every galaxy from its host, Mpc/h."""
    d = galaxies.positions.astype(np.float64) - haloes.positions[galaxies.host]
    return d - box_size * np.round(d / box_size)


# -- mean occupations ------------------------------------------------------------------------------
HALOTOOLS_MASSES = np.array([1e12, 5e12, 1.3e13, 2e13, 5e13, 1e14, 3e14, 1e15])  # Msun/h


def test_mean_occupations_match_halotools():
    """Reference numbers from halotools 0.9.4 (Zheng07Cens, Zheng07Sats(modulate_with_cenocc=True|False)
    .mean_occupation(prim_haloprop=HALOTOOLS_MASSES)), run in a scratch venv, for our default HOD and for
    halotools' default parameters (Zheng 2007's Mr < -20 fit: 12.02, 0.26, 11.38, 13.31, 1.06)."""
    ours = HODParameters()
    ncen = [4.442300416407363e-10, 0.0023036319573768727, 0.19022174327347996, 0.5019370351380051]
    ncen += [0.9699978926037869, 0.9995162857748761, 0.999999985634822, 0.9999999999999994]
    nsat = [0.0, 0.0, 0.0, 0.00023780195779366686, 0.29145892223073644, 0.8000865679544482]
    nsat += [2.8004737282738077, 9.800473768503107]
    nsat_bare = [0.0, 0.0, 0.0, 0.00047376850311171874, 0.3004737685031117, 0.8004737685031117]
    nsat_bare += [2.800473768503112, 9.800473768503112]
    np.testing.assert_allclose(mean_centrals(HALOTOOLS_MASSES, ours), ncen, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(mean_satellites(HALOTOOLS_MASSES, ours), nsat, rtol=1e-12)
    bare = mean_satellites(HALOTOOLS_MASSES, ours, modulate_with_cenocc=False)
    np.testing.assert_allclose(bare, nsat_bare, rtol=1e-12)

    zheng20 = HODParameters.from_mapping(
        {"logMmin": 12.02, "sigma_logM": 0.26, "logM0": 11.38, "logM1": 13.31, "alpha": 1.06}
    )
    ncen = [0.45668624952423575, 0.9998892359102344, 0.9999999986614763, 0.9999999999983913, 1, 1, 1, 1]
    nsat = [0.013955680914943402, 0.21361244452287784, 0.6075834349381559, 0.9659104744321381]
    nsat += [2.570953807421882, 5.373959207252408, 17.24964970512176, 61.84285859024593]
    np.testing.assert_allclose(mean_centrals(HALOTOOLS_MASSES, zheng20), ncen, rtol=1e-12)
    np.testing.assert_allclose(mean_satellites(HALOTOOLS_MASSES, zheng20), nsat, rtol=1e-12)


def test_occupation_statistics_follow_hod():
    """200k haloes on 40 masses: Bernoulli centrals and Poisson satellites with the HOD means."""
    hod = HODParameters()
    log_masses = np.linspace(12.8, 15.0, 40)
    per_mass = 5000
    haloes = _grid_haloes(log_masses, per_mass, 500.0)
    galaxies = populate(haloes, hod, box_size=500.0, redshift=0.0, omega_m=OMEGA_M, rng=11)
    n_cen, n_sat = _counts(galaxies, len(haloes.masses))
    assert n_cen.max() <= 1
    n_cen = n_cen.reshape(40, per_mass)
    n_sat = n_sat.reshape(40, per_mass)

    p = mean_centrals(10.0**log_masses, hod)
    lam = mean_satellites(10.0**log_masses, hod)
    z_cen = (n_cen.mean(1) - p) / np.sqrt(np.maximum(p * (1 - p), 1e-12) / per_mass)
    z_sat = (n_sat.mean(1) - lam) / np.sqrt(np.maximum(lam, 1e-12) / per_mass)
    assert np.all(np.abs(z_cen) < 4.5), z_cen
    assert np.all(np.abs(z_sat) < 4.5), z_sat
    assert np.all(n_sat[lam == 0] == 0)
    informative = per_mass * p * (1 - p) > 5  # bins where the central draw is random at all
    chi2 = np.sum(z_cen[informative] ** 2) + np.sum(z_sat[lam * per_mass > 5] ** 2)
    dof = informative.sum() + (lam * per_mass > 5).sum()
    assert stats.chi2.sf(chi2, dof) > 1e-3, (chi2, dof)
    # Poisson, not e.g. nearest-integer: variance = mean where satellites are plentiful
    rich = lam > 1.0
    dispersion = n_sat[rich].var(1, ddof=1) / lam[rich]
    assert np.all(np.abs(dispersion - 1) < 5 * np.sqrt(2 / per_mass) + 0.02), dispersion


def test_number_density_matches_expectation():
    """Galaxy count / L^3 equals expected_number_density within its Poisson (+ Bernoulli) error."""
    rng = np.random.default_rng(5)
    lo, hi = 1.3e13, 1e15
    masses = 1.0 / (1.0 / lo - rng.uniform(0, 1, 100_000) * (1.0 / lo - 1.0 / hi))  # dn/dM ~ M^-2
    box = 700.0
    haloes = Haloes(masses, box, rng)
    hod = HODParameters()
    galaxies = populate(haloes, hod, box_size=box, redshift=0.5, omega_m=OMEGA_M, rng=rng)
    expected = expected_number_density(hod, masses, box)
    p, lam = mean_centrals(masses, hod), mean_satellites(masses, hod)
    sigma = np.sqrt(np.sum(p * (1 - p) + lam)) / box**3
    assert abs(len(galaxies) / box**3 - expected) < 4 * sigma, (len(galaxies) / box**3, expected, sigma)
    assert expected == pytest.approx((p.sum() + lam.sum()) / box**3, rel=1e-12)
    assert 0.3 * len(masses) < len(galaxies) < 3 * len(masses)  # the default HOD is not degenerate here


# -- NFW satellites ------------------------------------------------------------------------------------
def test_nfw_quantile_inverts_the_cdf():
    u = np.sort(np.concatenate([[0.0, 1e-15, 1e-9], np.linspace(0, 1, 2001), [1 - 1e-12, 1.0]]))
    for c in (1.0, 4.0, 9.0, 40.0):
        x = nfw_radius_quantile(u, c)
        assert np.all((x >= 0) & (x <= 1))
        np.testing.assert_allclose(nfw_enclosed_fraction(x, c), u, atol=1e-13)
        assert np.all(np.diff(x) >= 0)


def test_satellite_radial_profile_is_nfw():
    """One mass (one concentration): r / R_vir of the satellites follows the truncated NFW CDF, directions
    are isotropic, and the number per halo is <Nsat>."""
    mass, z, box = 1e14, 0.5, 100.0
    n_haloes = 20_000
    haloes = _grid_haloes([np.log10(mass)], n_haloes, box, seed=2)
    hod = HODParameters()
    galaxies = populate(haloes, hod, box_size=box, redshift=z, omega_m=OMEGA_M, rng=3)
    sats = galaxies.subset(~galaxies.central)
    d = _offsets(sats, haloes, box)
    x = np.linalg.norm(d, axis=1) / virial_radius(mass, OMEGA_M)
    assert x.max() <= 1 + 1e-4  # truncated at R_vir (float32 positions)
    c = float(concentration_duffy08(mass, z))
    assert stats.kstest(x, lambda t: nfw_enclosed_fraction(t, c)).pvalue > 1e-3
    for wrong in (c / 2, 2 * c):  # the test has the power to see a wrong concentration
        assert stats.kstest(x, lambda t, w=wrong: nfw_enclosed_fraction(t, w)).pvalue < 1e-3
    n = len(sats)
    lam = float(mean_satellites(mass, hod))
    assert abs(n / n_haloes - lam) < 4 * np.sqrt(lam / n_haloes)
    unit = d / np.linalg.norm(d, axis=1, keepdims=True)
    assert np.all(np.abs(unit.mean(0)) < 4 / np.sqrt(3 * n))  # isotropic: <n> = 0
    np.testing.assert_allclose((unit**2).mean(0), 1 / 3, atol=4 * np.sqrt(4 / 45 / n))  # <n_i^2> = 1/3


def test_halo_scalings():
    """R_200m, Duffy et al. (2008) c200m and sigma_1D against hand-computed numbers."""
    m = np.array([1e12, 1e14, 1e15])
    r = virial_radius(m, 0.3)
    np.testing.assert_allclose(4 / 3 * np.pi * r**3 * 200 * 0.3 * 2.775e11, m, rtol=1e-3)
    assert concentration_duffy08(2e12, 0.0) == pytest.approx(10.14)
    assert concentration_duffy08(2e13, 1.0) == pytest.approx(10.14 * 10**-0.081 * 2**-1.01)
    # 1e14 Msun/h, Omega_m 0.3, z = 0: R = 1.1276 Mpc/h, sqrt(4.30091e-9 * 1e14 / (2 * 1.1276)) = 436.7 km/s
    assert virial_dispersion(1e14, 0.3, 0.0) == pytest.approx(436.7, rel=1e-3)
    # physical radius: R / (1 + z), so sigma_1D grows as sqrt(1 + z) at fixed M_200m
    assert virial_dispersion(1e14, 0.3, 1.0) == pytest.approx(436.7 * np.sqrt(2), rel=1e-3)


# -- velocities ----------------------------------------------------------------------------------------
def test_velocity_dispersions_about_hosts():
    """Satellites scatter about the halo velocity with alpha_s sigma_1D per axis; alpha_c = 0 centrals move
    exactly with the halo, alpha_c > 0 centrals scatter with alpha_c sigma_1D."""
    box, z = 300.0, 1.0
    haloes = _grid_haloes([14.0, 14.5], 15_000, box, seed=4)
    for alpha_c, alpha_s in ((0.0, 0.8), (0.5, 1.0)):
        hod = HODParameters(alpha_c=alpha_c, alpha_s=alpha_s)
        galaxies = populate(haloes, hod, box_size=box, redshift=z, omega_m=OMEGA_M, rng=7)
        dv = galaxies.velocities - haloes.velocities[galaxies.host]
        sigma = virial_dispersion(haloes.masses[galaxies.host], OMEGA_M, z)
        scaled = dv / sigma[:, None]
        sat, cen = ~galaxies.central, galaxies.central
        assert sat.sum() > 20_000
        np.testing.assert_allclose(scaled[sat].std(0), alpha_s, rtol=0.02)
        np.testing.assert_allclose(scaled[sat].mean(0), 0.0, atol=0.02)
        if alpha_c == 0:
            host_v = haloes.velocities[galaxies.host[cen]].astype(np.float32)
            np.testing.assert_array_equal(galaxies.velocities[cen], host_v)
        else:
            np.testing.assert_allclose(scaled[cen].std(0), alpha_c, rtol=0.02)
        host_x = haloes.positions[galaxies.host[cen]].astype(np.float32)
        np.testing.assert_array_equal(galaxies.positions[cen], host_x)  # centrals at the halo centre


# -- catalogue, wrapping, seeds --------------------------------------------------------------------------
def test_positions_wrapped_ordering_and_seeds():
    box = 50.0
    rng = np.random.default_rng(8)
    masses = 10.0 ** rng.uniform(13.1, 15.3, 3000)
    positions = rng.choice([0.0, 1e-7, box - 1e-7, np.nextafter(box, 0), 25.0], size=(3000, 3))
    haloes = HaloCatalogue(positions, rng.normal(0, 300, (3000, 3)), masses, np.full(3000, -1))
    hod = HODParameters()
    kwargs = dict(box_size=box, redshift=0.0, omega_m=OMEGA_M)
    galaxies = populate(haloes, hod, rng=21, **kwargs)
    assert galaxies.positions.dtype == np.float32 and galaxies.velocities.dtype == np.float32
    assert galaxies.host.dtype == np.int64 and galaxies.central.dtype == bool
    assert np.all((galaxies.positions >= 0) & (galaxies.positions < box))
    # ordered by host, the central first
    assert np.all(np.diff(galaxies.host) >= 0)
    first = np.r_[True, np.diff(galaxies.host) > 0]
    assert not np.any(galaxies.central & ~first)

    again = populate(haloes, hod, rng=np.random.default_rng(21), **kwargs)
    other = populate(haloes, hod, rng=22, **kwargs)
    for name in ("positions", "velocities", "central", "host"):
        np.testing.assert_array_equal(getattr(galaxies, name), getattr(again, name))
    assert len(other) != len(galaxies) or not np.array_equal(other.positions, galaxies.positions)

    keep = galaxies.central.copy()
    centrals = galaxies.subset(keep)
    assert len(centrals) == keep.sum() and centrals.central.all()
    np.testing.assert_array_equal(centrals.host, galaxies.host[keep])
    assert len(galaxies.subset(np.arange(5))) == 5


def test_empty_catalogue():
    haloes = Haloes(np.zeros(0), 10.0, np.random.default_rng(0))
    galaxies = populate(haloes, HODParameters(), box_size=10.0, redshift=0.0, omega_m=OMEGA_M, rng=0)
    assert len(galaxies) == 0 and galaxies.positions.shape == (0, 3)


# -- parameters --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sigma_logM", 0.0),
        ("sigma_logM", -0.2),
        ("alpha", 0.0),
        ("alpha_s", -1.0),
        ("alpha_c", -0.1),
        ("log_M_min", 2e13),  # a mass, not its log10
        ("log_M1", float("nan")),
        ("log_M0", float("inf")),
    ],
)
def test_invalid_parameters_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        HODParameters(**{field: value})
    with pytest.raises(ValueError, match=field):
        HODParameters.from_mapping({field: value})


def test_parameter_mappings():
    hod = HODParameters.from_mapping({"log_M1": 14.2, "alpha": 1.1})
    assert hod.log_M1 == 14.2 and hod.alpha == 1.1 and hod.log_M_min == HODParameters().log_M_min
    assert HODParameters.from_mapping(hod.to_dict()) == hod
    with pytest.raises(ValueError, match="bogus"):
        HODParameters.from_mapping({"bogus": 1.0})
    with pytest.raises(ValueError, match="box_size"):
        populate(
            Haloes([1e14], 10.0, np.random.default_rng(0)), hod, box_size=0, redshift=0, omega_m=0.3, rng=0
        )


def test_sample_hod_is_a_latin_hypercube():
    prior = {"log_M_min": (13.0, 13.6), "log_M1": (13.7, 14.5), "alpha": (0.7, 1.3), "alpha_s": (0.8, 1.2)}
    n = 16
    samples = sample_hod(prior, n, seed=3)
    assert len(samples) == n and all(isinstance(s, HODParameters) for s in samples)
    default = HODParameters()
    for name, (lo, hi) in prior.items():
        values = np.array([getattr(s, name) for s in samples])
        strata = np.floor((values - lo) / (hi - lo) * n).astype(int)
        assert sorted(strata) == list(range(n)), (name, strata)  # one value per stratum
    for name in ("sigma_logM", "log_M0", "alpha_c"):
        assert all(getattr(s, name) == getattr(default, name) for s in samples)
    assert sample_hod(prior, n, seed=3) == samples
    assert sample_hod(prior, n, seed=4) != samples
    with pytest.raises(ValueError, match="bogus"):
        sample_hod({"bogus": (0, 1)}, 4, seed=0)
    with pytest.raises(ValueError, match="alpha"):
        sample_hod({"alpha": (1.2, 1.0)}, 4, seed=0)
