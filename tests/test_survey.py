"""Survey effects on light cones (lightcone.survey, mocks/survey.py): redshift errors, the angular mask, the
radial selection n(z), their config checks, and cones left exactly as they were without them."""

from __future__ import annotations

import itertools
import logging
import math

import h5py
import numpy as np
import pytest
from mock_stores import tiny_mock
from scipy import stats
from scipy.integrate import quad

from lss_lightning.cosmology import Cosmology
from lss_lightning.mocks import simulate as simulate_module
from lss_lightning.mocks.generate import generate_store, plan
from lss_lightning.mocks.lightcone import (
    LightconeHaloes,
    LightconeSettings,
    apply_survey,
    histogram,
    place_on_lightcone,
)
from lss_lightning.mocks.survey import SurveySettings, redshift_errors, survey_rng
from lss_lightning.store.schema import HaloCatalogue, StoreError


def _sky(n: int, settings: LightconeSettings, rng, z=None) -> LightconeHaloes:
    """n tracers uniform in RA and DEC over the cone, at redshifts z (default uniform over lightcone.z)."""
    z = rng.uniform(*settings.z, n) if z is None else np.asarray(z, float)
    ra, dec = rng.uniform(*settings.ra, n), rng.uniform(*settings.dec, n)
    zeros = np.zeros(n)
    return LightconeHaloes(
        ra, dec, z, z.copy(), zeros, np.full(n, 1e14), zeros.astype(int), np.zeros((n, 3), int), np.arange(n)
    )


def _cells(values, edges):
    """Cell index as np.histogramdd bins (the test's own: digitize)."""
    return np.minimum(np.digitize(values, edges) - 1, len(edges) - 2)


def test_redshift_errors_have_the_configured_scatter_and_outlier_fraction():
    n, z_range = 200_000, (0.3, 0.8)
    rng = np.random.default_rng(1)
    z = rng.uniform(*z_range, n)
    survey = SurveySettings(sigma_z=0.004, outlier_fraction=0.03)
    measured, outlier = redshift_errors(z, survey, z_range, survey_rng(7, 0))
    fraction = outlier.mean()
    assert abs(fraction - 0.03) < 4 * math.sqrt(0.03 * 0.97 / n)  # binomial errors
    scaled = ((measured - z) / (1 + z))[~outlier]
    assert np.std(scaled) == pytest.approx(0.004, rel=0.02)
    assert abs(np.mean(scaled)) < 4 * 0.004 / math.sqrt(len(scaled))
    assert stats.kstest(measured[outlier], stats.uniform(0.3, 0.5).cdf).pvalue > 1e-3  # uniform over z
    again, _ = redshift_errors(z, survey, z_range, survey_rng(7, 0))
    other, _ = redshift_errors(z, survey, z_range, survey_rng(7, 1))
    assert np.array_equal(again, measured) and not np.array_equal(other, measured)  # seeded per cone
    # outliers with an offset: shifted by it on top of their Gaussian error
    offset = SurveySettings(sigma_z=0.004, outlier_fraction=0.1, outlier_offset=0.2)
    measured, outlier = redshift_errors(z, offset, z_range, survey_rng(7, 0))
    assert abs(outlier.mean() - 0.1) < 4 * math.sqrt(0.1 * 0.9 / n)
    shifted = ((measured - z - 0.2) / (1 + z))[outlier]
    assert np.std(shifted) == pytest.approx(0.004, rel=0.05) and abs(np.mean(shifted)) < 3e-4


def test_mask_removes_exactly_the_tracers_in_masked_cells(tmp_path):
    """A mask file (True = observed) and two circular holes: the kept tracers are exactly those in observed
    cells, the histogram equals the unmasked one times the observed cells, and the grid is recorded."""
    bins, rng = 16, np.random.default_rng(2)
    cells = rng.random((bins, bins)) > 0.2
    np.save(tmp_path / "mask.npy", cells)
    holes = [[5.0, -3.0, 4.0], [-12.0, 10.0, 2.5]]
    settings = LightconeSettings(survey={"mask": str(tmp_path / "mask.npy"), "holes": holes})
    plain = LightconeSettings()
    haloes = _sky(50_000, plain, rng)
    kept, attrs = apply_survey(haloes, settings, bins, Cosmology(), survey_rng(0, 0))
    ra_edges, dec_edges, _ = settings.histogram_edges(bins)
    # holes by the test's own geometry: cell centres within the radius (angle between unit vectors)
    ra_c = np.radians(0.5 * (ra_edges[1:] + ra_edges[:-1]))[:, None]
    dec_c = np.radians(0.5 * (dec_edges[1:] + dec_edges[:-1]))[None, :]
    in_hole = np.zeros((bins, bins), bool)
    for ra, dec, radius in holes:
        ra, dec = math.radians(ra), math.radians(dec)
        cos_angle = np.sin(dec_c) * math.sin(dec) + np.cos(dec_c) * math.cos(dec) * np.cos(ra_c - ra)
        in_hole |= np.degrees(np.arccos(np.clip(cos_angle, -1, 1))) < radius
    observed = cells & ~in_hole
    assert 0 < in_hole.sum() < 30
    np.testing.assert_array_equal(attrs["observed"], observed.astype(np.uint8))
    expected = np.flatnonzero(observed[_cells(haloes.ra, ra_edges), _cells(haloes.dec, dec_edges)])
    np.testing.assert_array_equal(np.sort(kept.index), expected)  # exactly the tracers of observed cells
    np.testing.assert_array_equal(kept.z_obs, haloes.z_obs[expected])  # nothing else changed
    counts, full = histogram(kept, settings, bins), histogram(haloes, plain, bins)
    assert np.all(counts[0][~observed] == 0) and counts.sum() > 0
    np.testing.assert_array_equal(counts, full * observed[None, :, :, None])


def _smail(z, z0=0.4, alpha=2.0, beta=1.5):
    return z**alpha * math.exp(-((z / z0) ** beta))


@pytest.mark.parametrize(
    "nz",
    [
        {"shape": "smail", "z0": 0.4, "alpha": 2.0, "beta": 1.5},
        {"z": np.linspace(0.0, 1.0, 101).tolist(), "n": [_smail(z) for z in np.linspace(0.0, 1.0, 101)]},
    ],
    ids=["smail", "table"],
)
def test_nz_selection_reproduces_the_target_shape(nz):
    """Tracers flat in z thinned to a Smail dN/dz (analytic, or as a table): the kept counts per z cell follow
    the target integrated over the cell (scaled so the poorest cell keeps all its tracers), within Poisson."""
    bins, rng = 16, np.random.default_rng(3)
    settings = LightconeSettings(survey={"nz": nz})
    haloes = _sky(300_000, LightconeSettings(), rng)
    kept, attrs = apply_survey(haloes, settings, bins, Cosmology(), survey_rng(0, 0))
    edges = settings.histogram_edges(bins)[2]
    available = np.bincount(_cells(haloes.z_obs, edges), minlength=bins)
    observed = np.bincount(_cells(kept.z_obs, edges), minlength=bins)
    weights = np.array([quad(_smail, lo, hi)[0] for lo, hi in itertools.pairwise(edges)])
    expected = weights * np.min(available / weights)
    assert np.all(np.abs(observed - expected) < 4 * np.sqrt(expected))
    chi2 = np.sum((observed - expected) ** 2 / expected)
    assert chi2 < stats.chi2.ppf(0.999, bins)
    limiting = np.argmin(available / weights)
    assert observed[limiting] == available[limiting] and attrs["nz_shortfall"] == 0.0
    assert "observed" not in attrs  # no mask, no mask attribute


def _uniform_in_volume(density, settings, cosmo, rng) -> LightconeHaloes:
    """Tracers of comoving number density ``density`` (h/Mpc)^3 over the cone's sky and redshift range."""
    chi_lo, chi_hi = cosmo.comoving_distance(np.array(settings.z))
    sin_lo, sin_hi = np.sin(np.radians(settings.dec))
    steradians = np.radians(settings.ra[1] - settings.ra[0]) * (sin_hi - sin_lo)
    n = rng.poisson(density * steradians * (chi_hi**3 - chi_lo**3) / 3)
    chi = np.cbrt(rng.uniform(chi_lo**3, chi_hi**3, n))
    haloes = _sky(n, settings, rng, z=cosmo.redshift_at_distance(chi))
    dec = np.degrees(np.arcsin(rng.uniform(sin_lo, sin_hi, n)))
    return LightconeHaloes(
        *(dec if f == "dec" else getattr(haloes, f) for f in LightconeHaloes.__dataclass_fields__)
    )


def test_nz_density_target_counts_the_observed_volume_and_reports_a_shortfall(caplog):
    """kind: density thins tracers of density 1e-4 to 4e-5 (h/Mpc)^3 over the unmasked solid angle; a target
    above what the cone holds keeps all the tracers, warns and records the missing fraction."""
    bins, cosmo, rng = 8, Cosmology(), np.random.default_rng(4)
    haloes = _uniform_in_volume(1e-4, LightconeSettings(), cosmo, rng)
    table = {"z": [0.0, 2.0], "kind": "density"}
    holes = [[0.0, 0.0, 8.0]]
    settings = LightconeSettings(survey={"nz": {**table, "n": [4e-5, 4e-5]}, "holes": holes})
    kept, attrs = apply_survey(haloes, settings, bins, cosmo, survey_rng(0, 0))
    ra_edges, dec_edges, z_edges = settings.histogram_edges(bins)
    observed = attrs["observed"].astype(bool)
    cell_sr = np.outer(np.radians(np.diff(ra_edges)), np.diff(np.sin(np.radians(dec_edges))))
    chi = cosmo.comoving_distance(z_edges)
    expected = 4e-5 * cell_sr[observed].sum() * np.diff(chi**3) / 3  # n x shell volume of the observed sky
    counts = np.bincount(_cells(kept.z_obs, z_edges), minlength=bins)
    assert np.all(np.abs(counts - expected) < 4 * np.sqrt(expected)) and attrs["nz_shortfall"] == 0.0
    with caplog.at_level(logging.WARNING):
        greedy = LightconeSettings(survey={"nz": {**table, "n": [2e-4, 2e-4]}})
        everything, attrs = apply_survey(haloes, greedy, bins, cosmo, survey_rng(0, 0))
    assert len(everything) == len(haloes) and attrs["nz_shortfall"] == pytest.approx(0.5, abs=0.02)
    assert "lower nz.n or lightcone.mass_min" in caplog.text


LIGHTCONE = {"z": [0.05, 0.15], "snapshots": 1}
MOCK = dict(n_sims=2, grid=8, particles=16, box_size=128.0, pm={"steps": 2}, fields=["lightcone"])


@pytest.mark.parametrize(
    ("survey", "message"),
    [
        ({"sigma_z": -0.001}, r"sigma_z must be in \[0, 1\]"),
        ({"outlier_fraction": 1.0}, r"outlier_fraction must be in \[0, 1\)"),
        ({"outlier_fraction": -0.1}, r"outlier_fraction must be in \[0, 1\)"),
        ({"holes": [[60.0, 0.0, 2.0]]}, r"holes\[0\] = \[60.0, 0.0, 2.0\] masks no cell.*move its centre"),
        ({"holes": [[0.0, 0.0]]}, r"holes\[0\].*give \[ra, dec, radius\]"),
        ({"nz": {"z": [0.0, 0.5, 0.4, 1.0], "n": [1, 1, 1, 1]}}, "must increase strictly.*sort the table"),
        ({"nz": {"z": [0.1, 0.12], "n": [1, 1]}}, r"must cover lightcone.z.*extend the table"),
        ({"nz": {"shape": "smail", "z0": 0.5, "alpha": 2}}, "takes z0, alpha, beta"),
        ({"nz": {"shape": "smail", "z0": 0.5, "alpha": 2, "beta": 1, "kind": "density"}}, "kind dndz"),
        ({"sigmaz": 0.003}, r"unknown lightcone.survey settings \['sigmaz'\]"),
        ({"mask": "no/such/mask.npy"}, "no file.*give the path of a .npy"),
    ],
)
def test_bad_survey_settings_fail_when_the_config_is_built(tmp_path, survey, message):
    with pytest.raises(ValueError, match=message):
        tiny_mock(tmp_path / "s", **MOCK, lightcone={**LIGHTCONE, "survey": survey})


def test_a_mask_file_of_the_wrong_shape_or_content_fails_when_the_config_is_built(tmp_path):
    np.save(tmp_path / "wide.npy", np.ones((8, 9), bool))
    with pytest.raises(ValueError, match=r"shape \(8, 9\).*\(8, 8\).*save a \(grid, grid\) array"):
        tiny_mock(
            tmp_path / "s", **MOCK, lightcone={**LIGHTCONE, "survey": {"mask": str(tmp_path / "wide.npy")}}
        )
    np.save(tmp_path / "mask.npy", np.ones((8, 8), bool))
    survey = {"mask": str(tmp_path / "mask.npy"), "mask_sha256": "0" * 64}
    with pytest.raises(ValueError, match="holds other cells than the recorded mask_sha256"):
        tiny_mock(tmp_path / "s", **MOCK, lightcone={**LIGHTCONE, "survey": survey})
    np.save(tmp_path / "mask.npy", np.zeros((8, 8), bool))
    with pytest.raises(ValueError, match="masks every cell"):
        tiny_mock(
            tmp_path / "s", **MOCK, lightcone={**LIGHTCONE, "survey": {"mask": str(tmp_path / "mask.npy")}}
        )


def _catalogues(cfg, seed=0, n=3000):
    rng = np.random.default_rng(seed)
    return [
        (
            float(z),
            HaloCatalogue(
                positions=rng.uniform(0, cfg.box_size, (n, 3)).astype(np.float32),
                velocities=rng.normal(0, 300, (n, 3)).astype(np.float32),
                masses=rng.uniform(1e13, 1e15, n),
                n_particles=np.full(n, 100),
            ),
        )
        for z in cfg.lightcone_settings.snapshot_redshifts()
    ]


@pytest.fixture
def no_particle_mesh(monkeypatch):
    """simulate's particle mesh replaced by fixed random halo catalogues (one per snapshot redshift)."""
    monkeypatch.setattr(simulate_module, "initial_particles", lambda cfg, cosmo, seed, device: (None, 0.1))
    monkeypatch.setattr(simulate_module, "lightcone_snapshots", lambda cfg, *args, **kw: _catalogues(cfg))


def test_defaults_leave_cones_unchanged(tmp_path, no_particle_mesh):
    """No survey block, an empty one and one of zeros give byte-identical histograms (those of placing and
    histogramming the haloes, as before survey effects existed), no draw and the same manifest."""
    cfg = tiny_mock(tmp_path / "none", **MOCK, lightcone=LIGHTCONE)
    catalogues, cosmo = _catalogues(cfg), Cosmology()
    haloes = place_on_lightcone(catalogues, cosmo, cfg.box_size, cfg.lightcone_settings)
    before = histogram(haloes, cfg.lightcone_settings, cfg.grid)
    for survey in ({}, {"sigma_z": 0.0, "outlier_fraction": 0.0, "holes": [], "nz": None}):
        settings = LightconeSettings(**LIGHTCONE, survey=survey)
        rng = survey_rng(0, 0)
        state = rng.bit_generator.state
        same, attrs = apply_survey(haloes, settings, cfg.grid, cosmo, rng)
        assert same is haloes and attrs == {} and rng.bit_generator.state == state
    stores = {}
    for name, survey in (("none", None), ("empty", {}), ("zeros", {"sigma_z": 0, "outlier_fraction": 0})):
        cone = LIGHTCONE if survey is None else {**LIGHTCONE, "survey": survey}
        stores[name] = generate_store(tiny_mock(tmp_path / name, **MOCK, lightcone=cone), progress=False)
    for store in stores.values():
        assert store.manifest["generator"] == stores["none"].manifest["generator"]
        for sim in store.simulation_ids:
            counts = store.read(sim, "lightcone")
            assert counts.tobytes() == before.tobytes()
            with h5py.File(store.path(sim)) as f:
                assert "observed" not in f["fields/lightcone"].attrs


def test_survey_cones_in_the_store_record_their_settings_and_refuse_to_mix(tmp_path, no_particle_mesh):
    """A store with two cones per box and every survey effect: the manifest holds the survey block in full
    (with the mask's digest, re-readable as a config), the files the observed cells and the n(z) shortfall,
    masked cells are zero, a cone made alone equals the stored one, and other survey settings refuse the store."""
    from lss_lightning.mocks.config import MockConfig
    from lss_lightning.mocks.design import design
    from lss_lightning.mocks.generate import generator_settings

    mask = np.ones((8, 8), bool)
    mask[:2, 5:] = False
    np.save(tmp_path / "mask.npy", mask)
    survey = {
        "sigma_z": 0.003,
        "outlier_fraction": 0.02,
        "holes": [[0.0, 0.0, 6.0]],
        "mask": str(tmp_path / "mask.npy"),
        "nz": {"shape": "smail", "z0": 0.1, "alpha": 2, "beta": 1.5},
    }
    cone = {**LIGHTCONE, "cones_per_box": 2, "survey": survey}
    cfg = tiny_mock(tmp_path / "survey", **MOCK, lightcone=cone)
    store = generate_store(cfg, progress=False)
    recorded = store.manifest["generator"]["lightcone"]["survey"]
    assert recorded == plan(cfg, design(cfg)).manifest()["generator"]["lightcone"]["survey"]
    assert recorded["sigma_z"] == 0.003 and recorded["holes"] == [[0.0, 0.0, 6.0]]
    assert recorded["nz"]["kind"] == "dndz" and len(recorded["mask_sha256"]) == 64
    again = MockConfig.from_mapping({**store.manifest["generator"], "store": str(tmp_path / "survey")})
    assert generator_settings(again) == store.manifest["generator"]
    sims = design(cfg)
    for sim in store.simulation_ids:
        with h5py.File(store.path(sim)) as f:
            observed = f["fields/lightcone"].attrs["observed"].astype(bool)
            assert 0 <= f["fields/lightcone"].attrs["nz_shortfall"] < 1
        counts = store.read(sim, "lightcone")
        assert counts.sum() > 50 and np.all(counts[0][~observed] == 0) and not observed[:2, 5:].any()
    cones = [store.read(s, "lightcone") for s in store.simulation_ids[:2]]
    assert not np.array_equal(cones[0], cones[1])  # each cone its own draws
    np.testing.assert_array_equal(simulate_module.simulate(cfg, sims[1]).fields["lightcone"], cones[1])
    other = tiny_mock(tmp_path / "survey", **MOCK, lightcone={**cone, "survey": {**survey, "sigma_z": 0.004}})
    with pytest.raises(StoreError, match="different generator"):
        generate_store(other, progress=False)


def test_robustness_zerr_trains_on_the_error_free_cones_and_names_the_shifted_store():
    """experiment=robustness_zerr is the light-cone ViT on the error-free preset, and the shifted store of its
    header composes: a survey block with sigma_z on the same lightcone settings (the same boxes and cones)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from lss_lightning.config import CONF_DIR
    from lss_lightning.mocks.config import MockConfig

    shifted = ["+data.generate.lightcone.survey.sigma_z=0.005", "data.store=/tmp/zerr"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        clean = compose(config_name="train", overrides=["experiment=robustness_zerr"])
        errors = compose(config_name="train", overrides=["experiment=robustness_zerr", *shifted])
    assert clean.experiment_name == "robustness_zerr" and "survey" not in clean.data.generate.lightcone
    cone = dict(errors.data.generate.lightcone)
    assert cone.pop("survey") == {"sigma_z": 0.005} and cone == dict(clean.data.generate.lightcone)
    generate = OmegaConf.to_container(errors.data.generate, resolve=True)
    built = MockConfig.from_mapping(
        {**generate, "store": "/tmp/zerr"}
    )  # valid, checked as the generator checks
    assert built.lightcone_settings.survey.sigma_z == 0.005
