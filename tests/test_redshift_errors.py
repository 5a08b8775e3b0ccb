"""Redshift errors on the galaxies of a box (fields/redshift_errors.py): the configured line-of-sight scatter
c sigma_z / (aH) and outlier fraction, only the _rsd fields affected, the same draws for every sigma_z, and the
mock config's redshift_errors block (checked before any simulation, recorded in the manifest)."""

from __future__ import annotations

import numpy as np
import pytest
from mock_stores import tiny_mock
from scipy import stats

from lss_lightning.cosmology import SPEED_OF_LIGHT
from lss_lightning.fields.redshift_errors import RedshiftErrors, observed_positions
from lss_lightning.fields.tracers import galaxy_fields
from lss_lightning.mocks.config import MockConfig
from lss_lightning.mocks.generate import generate_store, plan
from lss_lightning.store.schema import GalaxyCatalogue

BOX, A_H = 1000.0, 100.0  # Mpc/h; a H at z = 0 in (km/s)/(Mpc/h)


def _line_of_sight_offsets(observed: np.ndarray, true: np.ndarray) -> np.ndarray:
    return (observed - true + BOX / 2) % BOX - BOX / 2  # periodic difference in [-L/2, L/2)


def test_the_line_of_sight_scatter_is_c_sigma_z_over_a_h_and_the_other_axes_stay():
    rng = np.random.default_rng(0)
    positions = rng.uniform(0, BOX, (200_000, 3)).astype(np.float32)
    errors = RedshiftErrors(sigma_z=0.002)
    observed, outlier = observed_positions(positions, errors, a_h=A_H, box_size=BOX, los_axis=1, seed=7)
    offsets = _line_of_sight_offsets(observed[:, 1].astype(float), positions[:, 1].astype(float))
    want = SPEED_OF_LIGHT * 0.002 / A_H  # 6.0 Mpc/h
    assert abs(offsets.std() / want - 1) < 0.01 and abs(offsets.mean()) < 4 * want / np.sqrt(len(offsets))
    assert stats.kstest(offsets / want, "norm").pvalue > 1e-3  # Gaussian
    np.testing.assert_array_equal(observed[:, [0, 2]], positions[:, [0, 2]])
    assert not outlier.any() and observed.dtype == np.float32
    assert ((observed >= 0) & (observed < BOX)).all()
    again, _ = observed_positions(positions, errors, a_h=A_H, box_size=BOX, los_axis=1, seed=7)
    np.testing.assert_array_equal(again, observed)  # seeded
    other, _ = observed_positions(positions, errors, a_h=A_H, box_size=BOX, los_axis=1, seed=8)
    assert not np.array_equal(other, observed)


def test_the_outlier_fraction_is_as_configured_and_outliers_are_uniform_along_the_line_of_sight():
    n, fraction = 100_000, 0.05
    positions = np.full((n, 3), 500.0, np.float32)  # all at one point: an outlier is anywhere else
    observed, outlier = observed_positions(
        positions, RedshiftErrors(outlier_fraction=fraction), a_h=A_H, box_size=BOX, los_axis=2, seed=3
    )
    assert abs(outlier.sum() - n * fraction) < 4 * np.sqrt(n * fraction * (1 - fraction))
    np.testing.assert_array_equal(observed[~outlier], positions[~outlier])  # sigma_z = 0: only outliers move
    assert stats.kstest(observed[outlier, 2] / BOX, "uniform").pvalue > 1e-3


def test_stores_that_differ_in_sigma_z_scatter_the_same_galaxies_the_same_way():
    """The same standard normals (and outlier flags) for every sigma_z: the offsets scale with sigma_z."""
    positions = np.random.default_rng(2).uniform(400, 600, (5000, 3)).astype(np.float32)
    kwargs = {"a_h": A_H, "box_size": BOX, "los_axis": 0, "seed": 11}
    small, flag_small = observed_positions(positions, RedshiftErrors(0.001, 0.01), **kwargs)
    large, flag_large = observed_positions(positions, RedshiftErrors(0.003, 0.01), **kwargs)
    np.testing.assert_array_equal(flag_small, flag_large)
    keep = ~flag_small
    d_small = _line_of_sight_offsets(small[keep, 0].astype(float), positions[keep, 0].astype(float))
    d_large = _line_of_sight_offsets(large[keep, 0].astype(float), positions[keep, 0].astype(float))
    np.testing.assert_allclose(d_large, 3 * d_small, atol=1e-3)


def test_redshift_errors_change_only_the_redshift_space_galaxy_fields():
    rng = np.random.default_rng(4)
    n, box, grid = 3000, 64.0, 16
    clumps = rng.uniform(0, box, (50, 3))  # clustered: 50 clumps of 60 galaxies, 0.5 Mpc/h wide
    galaxies = GalaxyCatalogue(
        ((clumps.repeat(60, axis=0) + 0.5 * rng.standard_normal((n, 3))) % box).astype(np.float32),
        (300 * rng.standard_normal((n, 3))).astype(np.float32),
        np.ones(n, bool),
        np.arange(n),
        seed=5,
    )
    paint = {"grid": grid, "box_size": box, "a_h": A_H, "a_h_f": 50.0, "los_axis": 2}
    names = ["galaxies", "galaxies_rsd", "velocity_linear_galaxies", "velocity_linear_galaxies_rsd"]
    clean, _ = galaxy_fields(galaxies, names, **paint)
    errors = RedshiftErrors(sigma_z=0.003, outlier_fraction=0.02)
    noisy, attrs = galaxy_fields(galaxies, names, redshift_errors=errors, **paint)
    for name in ("galaxies", "velocity_linear_galaxies"):
        np.testing.assert_array_equal(noisy[name], clean[name])
        assert "sigma_z" not in attrs[name]
    for name in ("galaxies_rsd", "velocity_linear_galaxies_rsd"):
        assert np.abs(noisy[name] - clean[name]).max() > 0.1
    assert attrs["galaxies_rsd"]["sigma_z"] == 0.003 and attrs["galaxies_rsd"]["outlier_fraction"] == 0.02
    assert 0 < attrs["galaxies_rsd"]["n_outliers"] < 0.05 * n
    # number conserved: the contrast of the same galaxies still averages to zero
    assert abs(noisy["galaxies_rsd"].mean()) < 1e-5

    # smearing along the line of sight (9 Mpc/h) only: the power along z drops, across z it stays
    def anisotropy(field):
        power = np.abs(np.fft.rfftn(field[0])) ** 2
        return power[0, 0, 1:4].sum() / (power[1:4, 0, 0].sum() + power[0, 1:4, 0].sum())

    assert anisotropy(noisy["galaxies_rsd"]) < 0.5 * anisotropy(clean["galaxies_rsd"])
    inactive, _ = galaxy_fields(galaxies, names, redshift_errors=RedshiftErrors(), **paint)
    np.testing.assert_array_equal(inactive["galaxies_rsd"], clean["galaxies_rsd"])


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"redshift_errors": {"sigma_z": 0.002}}, r"redshift_errors needs an hod block.*hod=\{\}"),
        (
            {"hod": {}, "fields": ["galaxies"], "redshift_errors": {"sigma_z": 0.002}},
            r"redshift_errors act on the galaxies' redshift-space fields.*galaxies_rsd",
        ),
        (
            {"hod": {}, "fields": ["galaxies_rsd"], "redshift_errors": {"sigma_z": -0.1}},
            r"sigma_z must be in \[0, 0\.1\]",
        ),
        (
            {"hod": {}, "fields": ["galaxies_rsd"], "redshift_errors": {"outlier_fraction": 1.0}},
            r"outlier_fraction must be in \[0, 1\)",
        ),
        (
            {"hod": {}, "fields": ["galaxies_rsd"], "redshift_errors": {"sigma": 0.1}},
            r"unknown redshift_errors settings \['sigma'\]",
        ),
        (
            {"lightcone": {"snapshots": 2}, "redshift_errors": {"sigma_z": 0.002}},
            r"redshift_errors is for the galaxies of a box.*lightcone\.survey",
        ),
    ],
)
def test_redshift_error_settings_are_checked_before_any_simulation_runs(tmp_path, settings, message):
    root = tmp_path / "never"
    with pytest.raises(ValueError, match=message):
        MockConfig.from_mapping(settings, store=str(root))
    assert not root.exists()


def test_redshift_errors_go_into_the_manifest_and_zero_errors_leave_it_as_before():
    fields = ["galaxies_rsd"]
    with_errors = MockConfig(store="x", hod={}, fields=fields, redshift_errors={"sigma_z": 0.002})
    assert plan(with_errors, []).manifest()["generator"]["redshift_errors"] == {
        "sigma_z": 0.002,
        "outlier_fraction": 0.0,
    }
    zero = MockConfig(store="x", hod={}, fields=fields, redshift_errors={"sigma_z": 0.0})
    plain = MockConfig(store="x", hod={}, fields=fields)
    assert zero.redshift_errors is None
    assert plan(zero, []).manifest() == plan(plain, []).manifest()
    assert "redshift_errors" not in plan(plain, []).manifest()["generator"]


def test_a_mock_store_with_redshift_errors_scatters_its_redshift_space_galaxies(tmp_path):
    """End to end: the same boxes with and without errors; real space equal, redshift space not."""
    settings = {
        "n_sims": 1,
        "grid": 16,
        "particles": 32,
        "box_size": 64.0,
        "pm": {"steps": 4},
        "fof": {"min_particles": 10},
        "mass_bins": [[0.0, None]],
        "fields": ["galaxies", "galaxies_rsd"],
        "hod": {"log_M_min": 12.8, "log_M0": 12.8, "log_M1": 13.6},
    }
    clean = generate_store(tiny_mock(tmp_path / "clean", **settings), progress=False)
    noisy = generate_store(
        tiny_mock(tmp_path / "noisy", **settings, redshift_errors={"sigma_z": 0.003}), progress=False
    )
    sim = clean.simulation_ids[0]
    np.testing.assert_array_equal(noisy.read(sim, "galaxies"), clean.read(sim, "galaxies"))
    assert np.abs(noisy.read(sim, "galaxies_rsd") - clean.read(sim, "galaxies_rsd")).max() > 0.1
    assert noisy.manifest["generator"]["redshift_errors"]["sigma_z"] == 0.003
