"""Background, growth and linear power against independent formulas."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import quad

from lss_lightning.cosmology import PRIORS, Cosmology, latin_hypercube


def heath_growth(cosmo: Cosmology, z: float) -> float:
    """LambdaCDM growth by Heath's integral, D ~ E(a) int_0^a da / (a E)^3, normalised at z = 0."""

    def unnormalised(a):
        integral = quad(lambda x: 1.0 / (x * cosmo.efunc(1 / x - 1)) ** 3, 1e-8, a)[0]
        return cosmo.efunc(1 / a - 1) * integral

    return unnormalised(1 / (1 + z)) / unnormalised(1.0)


@pytest.mark.parametrize("z", [0.0, 0.5, 1.0, 3.0])
def test_lcdm_growth_factor_matches_heath_integral(z):
    cosmo = Cosmology(Omega_m=0.3)
    assert float(cosmo.growth_factor(z)) == pytest.approx(heath_growth(cosmo, z), rel=2e-4)


def test_growth_rate_and_velocity_factor():
    cosmo = Cosmology(Omega_m=0.3)
    for z in (0.0, 1.0):
        # f = dln D / dln a from Heath's integral by central differences in ln a
        h = 1e-3
        a = 1 / (1 + z)
        d_plus, d_minus = (
            heath_growth(cosmo, 1 / (a * np.exp(h)) - 1),
            heath_growth(cosmo, 1 / (a * np.exp(-h)) - 1),
        )
        f_heath = (np.log(d_plus) - np.log(d_minus)) / (2 * h)
        assert float(cosmo.growth_rate(z)) == pytest.approx(f_heath, rel=1e-4)
        # and Linder's Omega_m(z)^0.55 to its known ~1% accuracy
        assert float(cosmo.growth_rate(z)) == pytest.approx(float(cosmo.omega_m_z(z)) ** 0.55, rel=1e-2)
    assert cosmo.a_h_f(0.0) == pytest.approx(52.0, rel=0.02)  # REFERENCES.md: aHf ~ 52 at z=0, Omega_m=0.3
    assert float(cosmo.hubble(0.0)) == pytest.approx(100.0)


def test_dark_energy_changes_expansion_as_cpl():
    lcdm, wcdm = Cosmology(Omega_m=0.3), Cosmology(Omega_m=0.3, w0=-0.8, wa=0.2)
    a = 0.5
    rho = a ** (-3 * (1 - 0.8 + 0.2)) * np.exp(-3 * 0.2 * (1 - a))
    assert float(wcdm.efunc(1.0)) ** 2 == pytest.approx(0.3 * 8 + 0.7 * rho, rel=1e-10)
    assert float(wcdm.growth_factor(1.0)) != pytest.approx(float(lcdm.growth_factor(1.0)), rel=1e-3)


def test_camb_power_is_normalised_to_sigma8_and_grows_as_d_squared(cosmology):
    assert cosmology.sigma_r(8.0) == pytest.approx(cosmology.sigma_8, rel=2e-3)
    k = np.array([0.02, 0.2])
    ratio = cosmology.linear_power(k, z=1.0) / cosmology.linear_power(k)
    np.testing.assert_allclose(ratio, float(cosmology.growth_factor(1.0)) ** 2, rtol=2e-3)


def test_eisenstein_hu_fast_path_is_close_to_camb(cosmology):
    k = np.array([0.01, 0.05, 0.3, 1.0])
    eh, camb = cosmology.linear_power(k, method="eh"), cosmology.linear_power(k)
    np.testing.assert_allclose(eh / camb, 1.0, rtol=0.12)  # no BAO wiggles in EH's no-wiggle fit
    assert cosmology.sigma_r(8.0, method="eh") == pytest.approx(cosmology.sigma_8, rel=1e-3)


def test_massive_neutrinos_suppress_small_scale_power():
    massless = Cosmology()
    massive = Cosmology(M_nu=0.4)
    k = np.array([0.005, 1.0])
    ratio = massive.linear_power(k) / massless.linear_power(k)
    # both have sigma_8 = 0.834, so the suppression shows as large-scale excess relative to small scales
    assert ratio[0] / ratio[1] > 1.1


def test_latin_hypercube_is_seeded_and_covers_each_prior_interval_once_per_stratum():
    a = latin_hypercube("quijote_nwlh", 20, seed=3)
    b = latin_hypercube("quijote_nwlh", 20, seed=3)
    assert a == b
    for name, (lo, hi) in PRIORS["quijote_nwlh"].items():
        values = np.array([getattr(c, name) for c in a])
        strata = np.floor((values - lo) / (hi - lo) * 20).astype(int)
        assert sorted(strata) == list(range(20)), name
    assert all(c.wa == 0.0 for c in a)
    c = latin_hypercube("hwang_sabiu_w0wa", 5, seed=0)
    assert all(-0.3 <= x.wa <= 0.3 and x.Omega_b == pytest.approx(0.0493) for x in c)


def test_bad_parameters_are_rejected_with_the_reason():
    with pytest.raises(ValueError, match="Omega_b < Omega_m"):
        Cosmology(Omega_m=0.04, Omega_b=0.05)
    with pytest.raises(ValueError, match="unknown cosmological parameters"):
        Cosmology.from_mapping({"Omega_k": 0.1})
    assert Cosmology.from_mapping({"w": -0.9}).w0 == -0.9
    with pytest.raises(ValueError, match="unknown prior preset"):
        latin_hypercube("planck", 3, 0)
