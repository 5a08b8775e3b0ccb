"""HOD galaxies in the store: the mock config's hod / hod_prior, galaxy fields through the one catalogue path
(fields/tracers.py), the galaxies/ group (written, validated, read back) and stores that refuse another HOD."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
import torch
from mock_stores import tiny_mock

from lss_lightning.cosmology import resolve_prior
from lss_lightning.fields.mesh import cic_paint
from lss_lightning.fields.tracers import BoxGrid, catalogue_fields, galaxy_fields, store_fields
from lss_lightning.fields.velocity import redshift_space_positions
from lss_lightning.galaxies import HODParameters, galaxy_seed, populate
from lss_lightning.mocks.config import MockConfig
from lss_lightning.mocks.generate import generate_store, plan
from lss_lightning.store.reader import FieldStore
from lss_lightning.store.schema import (
    GalaxyCatalogue,
    HaloCatalogue,
    StoreError,
    build_manifest,
    field_spec,
    parse_mass_bins,
)
from lss_lightning.store.writer import reconcile_manifest, write_simulation

GRID, BOX = 16, 64.0
HOD = {"log_M_min": 12.8, "log_M0": 12.8, "log_M1": 13.6}  # haloes here start near 10 m_p ~ 2e12-1e13 Msun/h
HOD_PRIOR = {"log_M_min": [12.6, 13.0], "alpha_s": [0.5, 1.5]}
# a particle-mesh Latin hypercube (cosmologies) whose galaxy model also varies: 32^3 particles, 16^3 cells
SETTINGS = {
    "n_sims": 3,
    "grid": GRID,
    "particles": 32,
    "box_size": BOX,
    "pm": {"steps": 5},
    "fof": {"min_particles": 10},
    "mass_bins": [[0.0, None]],
    "design": "latin_hypercube",
    "fields": ["galaxies_rsd", "galaxy_velocity_rsd"],
    "hod": HOD,
    "hod_prior": HOD_PRIOR,
}


@pytest.fixture(scope="module")
def galaxy_store(tmp_path_factory) -> FieldStore:
    return generate_store(
        tiny_mock(tmp_path_factory.mktemp("stores") / "galaxies", **SETTINGS), progress=False
    )


def _copy(store: FieldStore, tmp_path) -> FieldStore:
    shutil.copytree(store.root, tmp_path / "copy")
    return FieldStore(tmp_path / "copy")


# -- the store -------------------------------------------------------------------------------------
def test_a_pm_store_with_an_hod_holds_galaxies_and_their_fields(galaxy_store):
    store = galaxy_store
    assert store.galaxies["model"] == "zheng07" and store.galaxies["hod_prior"] == HOD_PRIOR
    assert store.galaxies["hod"] == HODParameters.from_mapping(HOD).to_dict()  # every parameter, in full
    density, velocity = store.fields["galaxies_rsd"], store.fields["galaxy_velocity_rsd"]
    assert (density.kind, density.channels, density.units, density.space) == ("scalar", 1, "1", "redshift")
    assert (velocity.kind, velocity.channels, velocity.units, velocity.los_axis) == ("vector", 3, "km/s", 2)
    for sim_id in store.simulation_ids:
        galaxies, haloes = store.read_galaxies(sim_id), store.read_halos(sim_id)
        assert 50 < len(galaxies) and 0 < galaxies.central.sum() < len(galaxies)  # centrals and satellites
        assert galaxies.host.max() < len(haloes) and galaxies.hod == store.hod(sim_id)
        delta = store.read(sim_id, "galaxies_rsd").astype(np.float64)
        assert delta.shape == (1, GRID, GRID, GRID) and abs(delta.mean()) < 1e-6
        nbar = len(galaxies) / GRID**3  # galaxies per cell
        assert float(((1 + delta) * nbar).sum()) == pytest.approx(len(galaxies), rel=1e-5)
        v = store.read(sim_id, "galaxy_velocity_rsd")
        assert v.shape == (3, GRID, GRID, GRID)
        for axis in range(3):  # every cell, filled or not, is an average of galaxy velocities
            lo, hi = galaxies.velocities[:, axis].min(), galaxies.velocities[:, axis].max()
            assert lo - 1.0 <= v[axis].min() and v[axis].max() <= hi + 1.0
        with h5py.File(store.path(sim_id)) as f:
            attrs = f["fields/galaxies_rsd"].attrs
            assert attrs["n_galaxies"] == len(galaxies)
            assert attrs["number_density"] == pytest.approx(len(galaxies) / BOX**3)
            assert attrs["hod_log_M_min"] == store.hod(sim_id)["log_M_min"]
            assert 0 < f["fields/galaxy_velocity_rsd"].attrs["empty_fraction"] < 1
            assert f["galaxies/central"].dtype == np.bool_ and f["galaxies/host"].dtype == np.int64


def test_the_stored_galaxies_are_what_populate_gives_for_the_stored_haloes(galaxy_store):
    """Regeneration is reproducible: the galaxy draws are seeded from the simulation's own seed."""
    store = galaxy_store
    for sim_id in store.simulation_ids:
        stored, haloes = store.read_galaxies(sim_id), store.read_halos(sim_id)
        seed = galaxy_seed(store.simulation(sim_id)["seed"])
        assert stored.seed == seed
        again = populate(
            haloes,
            HODParameters.from_mapping(store.hod(sim_id)),
            box_size=store.box_size,
            redshift=store.redshift,
            omega_m=store.cosmology(sim_id).Omega_m,
            rng=seed,
        )
        assert len(again) == len(stored)
        np.testing.assert_array_equal(again.host, stored.host)
        np.testing.assert_array_equal(again.central, stored.central)
        # the stored haloes are float32: positions agree to its rounding (minimum image across the faces)
        d = again.positions.astype(np.float64) - stored.positions
        np.testing.assert_allclose(d - BOX * np.round(d / BOX), 0.0, atol=1e-4)
        np.testing.assert_allclose(again.velocities, stored.velocities, rtol=1e-5, atol=1e-3)


def test_hod_prior_gives_each_simulation_its_own_hod_within_the_prior(galaxy_store):
    store = galaxy_store
    hods = [store.hod(s) for s in store.simulation_ids]
    fixed = HODParameters.from_mapping(HOD).to_dict()
    for name, (lo, hi) in HOD_PRIOR.items():
        values = [hod[name] for hod in hods]
        assert len(set(values)) == len(hods) and all(lo <= v <= hi for v in values)
    for hod in hods:
        assert {k: v for k, v in hod.items() if k not in HOD_PRIOR} == {
            k: v for k, v in fixed.items() if k not in HOD_PRIOR
        }
    for sim_id, hod in zip(store.simulation_ids, hods, strict=True):
        with h5py.File(store.path(sim_id)) as f:  # beside the cosmological parameters
            assert {k: f.attrs[f"hod_{k}"] for k in hod} == hod and "Omega_m" in f.attrs
            assert {k: f["galaxies"].attrs[k] for k in hod} == hod
    # the HOD hypercube is not the cosmological one again (it has its own seed)
    unit_hod = np.array([(h["log_M_min"] - 12.6) / 0.4 for h in hods])
    for param, (lo, hi) in resolve_prior("quijote_lh").items():
        unit = np.array([(getattr(store.cosmology(s), param) - lo) / (hi - lo) for s in store.simulation_ids])
        assert not np.allclose(unit, unit_hod, atol=1e-6), param


def test_a_store_made_with_one_hod_refuses_another(galaxy_store, tmp_path):
    store = _copy(galaxy_store, tmp_path)
    before = (store.root / "manifest.json").read_text()
    same = tiny_mock(store.root, **SETTINGS)
    assert generate_store(same, progress=False).missing() == []  # the same setup: nothing to redo
    other = tiny_mock(store.root, **{**SETTINGS, "hod": {**HOD, "log_M1": 13.9}})
    with pytest.raises(StoreError, match=r"manifest\.json was made with a different"):
        generate_store(other, progress=False)
    # the manifest's galaxies entry alone refuses it (stores of other generators reconcile on it too)
    with pytest.raises(StoreError, match=r"different galaxies .*log_M1.*choose another store=PATH"):
        reconcile_manifest(store.root, plan(other, []).manifest(), ["galaxies"])
    no_prior = tiny_mock(store.root, **{**SETTINGS, "hod_prior": None})
    with pytest.raises(StoreError, match="different galaxies"):
        reconcile_manifest(store.root, plan(no_prior, []).manifest(), ["galaxies"])
    without = tiny_mock(store.root, **{**SETTINGS, "hod": None, "hod_prior": None, "fields": ["density"]})
    with pytest.raises(StoreError, match="different"):
        generate_store(without, progress=False)
    assert (store.root / "manifest.json").read_text() == before


# -- the reader ------------------------------------------------------------------------------------
def test_the_reader_refuses_a_corrupted_galaxy_group(galaxy_store, tmp_path):
    store = _copy(galaxy_store, tmp_path)
    sim0, sim1, sim2 = store.simulation_ids
    n_halos = len(store.read_halos(sim0))
    with h5py.File(store.path(sim0), "a") as f:
        f["galaxies/host"][0] = n_halos  # one past the last halo
    with h5py.File(store.path(sim1), "a") as f:
        del f["galaxies/central"]
    with h5py.File(store.path(sim2), "a") as f:
        f["galaxies/position"][3, 1] = np.nan
    with pytest.raises(
        StoreError, match=rf"sim_00000\.h5: 'galaxies/host' spans 0\.\.{n_halos}, outside the {n_halos}"
    ):
        store.read_galaxies(sim0)
    with pytest.raises(
        StoreError, match=r"sim_00001\.h5: 'galaxies/' lacks \['central'\].*rerun the generator"
    ):
        store.open(sim1)
    with pytest.raises(StoreError, match=r"sim_00002\.h5: galaxy positions hold NaN"):
        store.read_galaxies(sim2)
    with pytest.raises(StoreError, match="host"):
        store.validate(deep=True)
    assert store.missing() == [sim1]  # a header check: the others are found by reading the catalogue
    assert FieldStore(galaxy_store.root).missing() == []  # the original is untouched


def test_a_store_without_galaxies_says_how_to_make_them(tiny_halo_store):
    assert tiny_halo_store.galaxies is None and tiny_halo_store.hod("sim_00000") is None
    with pytest.raises(StoreError, match=r"no galaxy catalogues; build it with an hod block"):
        tiny_halo_store.read_galaxies("sim_00000")


# -- the writer ------------------------------------------------------------------------------------
def _haloes(rng, n=40):
    masses = 10 ** rng.uniform(12.5, 14.5, n)
    return HaloCatalogue(
        positions=rng.uniform(0, BOX, (n, 3)).astype(np.float32),
        velocities=rng.normal(0, 300, (n, 3)).astype(np.float32),
        masses=masses,
        n_particles=np.round(masses / 1e11).astype(np.int64),
        finder="fof",
        source="test haloes",
    )


def test_the_writer_refuses_galaxies_that_do_not_belong_to_the_stored_haloes(tmp_path):
    rng = np.random.default_rng(1)
    haloes = _haloes(rng)
    galaxies = populate(haloes, HODParameters(log_M_min=12.5), box_size=BOX, redshift=0, omega_m=0.3, rng=1)
    sim = {"id": "s0", "file": "s0.h5", "seed": 0, "params": {}, "hod": galaxies.hod}
    common = {"source": "test", "box_size": BOX, "grid": 4, "redshift": 0.0, "los_axis": 2, "fields": {}}
    manifest = build_manifest(
        **common, simulations=[sim], halos={"finder": "fof"}, galaxies={"model": "zheng07"}
    )
    write_simulation(tmp_path, manifest, sim, {}, halos=haloes, galaxies=galaxies)  # as it should be
    stray = GalaxyCatalogue(
        galaxies.positions, galaxies.velocities, galaxies.central, galaxies.host + 100, galaxies.hod
    )
    with pytest.raises(StoreError, match=r"s0\.h5: galaxy hosts span .* outside the 40 haloes"):
        write_simulation(tmp_path, manifest, sim, {}, halos=haloes, galaxies=stray)
    other_hod = GalaxyCatalogue(
        galaxies.positions, galaxies.velocities, galaxies.central, galaxies.host, {"alpha": 2.0}
    )
    with pytest.raises(StoreError, match=r"drawn with HOD \{'alpha': 2\.0\}"):
        write_simulation(tmp_path, manifest, sim, {}, halos=haloes, galaxies=other_hod)
    with pytest.raises(StoreError, match="declares a galaxy catalogue but none was produced"):
        write_simulation(tmp_path, manifest, sim, {}, halos=haloes)
    with pytest.raises(ValueError, match="needs halo catalogues too"):
        build_manifest(**common, simulations=[sim], galaxies={"model": "zheng07"})
    with h5py.File(tmp_path / "s0.h5") as f:
        np.testing.assert_array_equal(f["galaxies/host"][...], galaxies.host)


# -- the painting ----------------------------------------------------------------------------------
def test_galaxy_fields_are_painted_by_the_halo_code():
    """galaxy_velocity is halo_velocity with every tracer weighted 1 (one painting, one fill rule), the
    linear velocity from galaxies the one from haloes, and the density contrast the CIC counts."""
    rng = np.random.default_rng(3)
    haloes = _haloes(rng, n=200)
    equal = HaloCatalogue(haloes.positions, haloes.velocities, np.full(200, 1e13), haloes.n_particles)
    tracers = GalaxyCatalogue(
        haloes.positions, haloes.velocities, np.ones(200, bool), np.arange(200), {"log_M_min": 13.0}
    )
    paint = {"grid": GRID, "box_size": BOX, "a_h": 60.0, "a_h_f": 30.0, "los_axis": 2, "smoothing": 4.0}
    bins = parse_mass_bins([[0.0, None]])
    halo, _ = catalogue_fields(equal, bins, ["halo_velocity_rsd", "velocity_linear_halos"], **paint)
    names = ["galaxies_rsd", "galaxy_velocity_rsd", "velocity_linear_galaxies"]
    fields, attrs = galaxy_fields(tracers, names, **paint)
    np.testing.assert_allclose(fields["galaxy_velocity_rsd"], halo["halo_velocity_rsd"], rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(fields["velocity_linear_galaxies"], halo["velocity_linear_halos"], atol=1e-4)
    pos, vel = torch.from_numpy(haloes.positions), torch.from_numpy(haloes.velocities)
    counts = cic_paint(redshift_space_positions(pos, vel, 60.0, BOX, 2), GRID, BOX).numpy()
    np.testing.assert_allclose(fields["galaxies_rsd"][0], counts / (200 / GRID**3) - 1, atol=1e-5)
    assert attrs["galaxies_rsd"]["n_galaxies"] == 200 and attrs["galaxies_rsd"]["hod_log_M_min"] == 13.0
    assert attrs["velocity_linear_galaxies"]["smoothing"] == 4.0
    for name in names:
        spec = field_spec(name)
        assert (spec.kind, spec.channels) == (("scalar", 1) if name == "galaxies_rsd" else ("vector", 3))
    none = tracers.subset(np.zeros(200, bool))
    with pytest.raises(ValueError, match=r"holds no galaxies.*lower hod\.log_M_min"):
        galaxy_fields(none, ["galaxies"], **paint)
    empty, attrs = galaxy_fields(none, ["galaxies", "galaxy_velocity"], allow_empty=True, **paint)
    assert not empty["galaxies"].any() and attrs["galaxy_velocity"]["empty_fraction"] == 1.0
    box = BoxGrid(GRID, BOX, 60.0, 30.0)
    with pytest.raises(ValueError, match=r"\['galaxies'\] need a galaxy catalogue: give an hod block"):
        store_fields({}, {}, ["galaxies"], box)


# -- the configuration -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"fields": ["galaxies_rsd"]}, r"field 'galaxies_rsd' needs galaxies: give an hod block.*hod=\{\}"),
        ({"solver": "lpt", "hod": {}}, r"hod populates the FoF haloes.*set solver=pm"),
        ({"solver": "lpt", "fields": ["galaxy_velocity"]}, r"'galaxy_velocity' needs haloes.*set solver=pm"),
        ({"hod": {"sigma_logM": 0.0}}, r"bad hod block: HODParameters\.sigma_logM must be > 0"),
        (
            {"hod": {"log_M_min": 2e13}},
            r"HODParameters\.log_M_min = \S+ is outside \[5\.0, 20\.0\].*log10 of a mass",
        ),
        ({"hod": {"logMmin": "x"}}, r"HODParameters\.log_M_min must be a finite number, got 'x'"),
        ({"hod": {"M_min": 13.0}}, r"unknown HOD parameters \['M_min'\]"),
        ({"hod_prior": {"alpha": [0.5, 1.5]}}, r"hod_prior needs an hod block.*hod=\{\}"),
        ({"hod": {}, "hod_prior": {"beta": [0, 1]}}, r"hod_prior names unknown HOD parameter 'beta'"),
        ({"hod": {}, "hod_prior": {"alpha": [1.5, 0.5]}}, r"hod_prior\.alpha = \[1\.5, 0\.5\]: need lo < hi"),
        ({"hod": {}, "hod_prior": {"alpha": [-1, 1]}}, r"hod_prior\.alpha = .*bad value.*alpha must be > 0"),
        ({"hod": {}, "hod_prior": {"alpha": 1.0}}, r"hod_prior\.alpha = 1\.0: give \[lo, hi\]"),
    ],
)
def test_galaxy_settings_are_checked_before_any_simulation_runs(tmp_path, settings, message):
    root = tmp_path / "never"
    with pytest.raises(ValueError, match=message):
        MockConfig.from_mapping({**settings}, store=str(root))
    assert not root.exists()


def test_hod_blocks_are_written_out_in_full():
    """hod={} and the defaults spelled out are one galaxy model (one manifest); halotools' names are read."""
    a = MockConfig(store="x", hod={}, hod_prior={"logMmin": [12.5, 13.5]})
    b = MockConfig(store="x", hod=HODParameters().to_dict(), hod_prior={"log_M_min": (12.5, 13.5)})
    assert a.hod == b.hod == HODParameters().to_dict() and a.hod_prior == b.hod_prior == {
        "log_M_min": [12.5, 13.5]
    }
    assert plan(a, []).manifest()["galaxies"] == plan(b, []).manifest()["galaxies"]
    plain = MockConfig(store="x")
    assert plan(plain, []).manifest()["galaxies"] is None
    assert "hod" not in plan(plain, []).manifest()["generator"]  # stores made before hod still reconcile


def _train_here_evaluate_there(experiment: str, train_store, test_store, tmp_path, small: list[str]) -> dict:
    """experiment trained (one fast_dev_run batch) on train_store, its checkpoint evaluated on test_store's test
    boxes with eval's data_overrides.store (what bench/bench_robustness.py does); eval's flat metrics."""
    import json

    from hydra import compose, initialize_config_dir

    from lss_lightning.config import CONF_DIR
    from lss_lightning.run import evaluate, train

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[
                f"experiment={experiment}",
                f"data.store={train_store.root}",
                f"paths.output_dir={tmp_path / 'train'}",
                "debug=fast_dev_run",
                "~callbacks.progress_bar",
                *small,
            ],
        )
        train(cfg)
        ckpt = next((tmp_path / "train" / "checkpoints").glob("*.ckpt"))
        out = tmp_path / "eval"
        eval_cfg = compose(
            config_name="eval",
            overrides=[
                f"ckpt_path={ckpt}",
                f"data_overrides.store={test_store.root}",
                f"paths.output_dir={out}",
            ],
        )
    flat = evaluate(eval_cfg)
    predictions = next(out.rglob("predictions/manifest.json"), None)
    if predictions is not None:
        assert str(test_store.root) in json.loads(predictions.read_text())["source"]  # the shifted boxes
    return flat


SMALL_UNET = ["data.crop=8", "data.pad=6", "data.batch_size=2", "data.num_workers=0", "model.net.width=4"]


def test_robustness_hod_trains_on_one_hod_and_evaluates_on_another(tmp_path):
    """experiment=robustness_hod on two tiny stores of the same boxes with other HODs: it trains on one and
    eval's data_overrides.store evaluates the checkpoint on the other's test boxes (bench/bench_robustness.py)."""
    from hydra import compose, initialize_config_dir

    from lss_lightning.config import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=robustness_hod"])
    assert cfg.model.residual_of in cfg.data.inputs and cfg.data.generate.hod.log_M_min == 13.3
    fields = list(cfg.data.generate.fields)
    base = {**SETTINGS, "n_sims": 8, "design": "seeds", "hod_prior": None, "fields": fields}
    stores = {
        h: generate_store(
            tiny_mock(tmp_path / f"hod_{h}", **{**base, "hod": {**HOD, "log_M_min": h}}), progress=False
        )
        for h in (12.8, 13.0)
    }
    assert (
        stores[12.8].simulation(stores[12.8].simulation_ids[0])["seed"]
        == stores[13.0].simulation(stores[13.0].simulation_ids[0])["seed"]
    )  # the same boxes, other galaxies
    flat = _train_here_evaluate_there("robustness_hod", stores[12.8], stores[13.0], tmp_path, SMALL_UNET)
    assert "test/unet/vector/0.3/r" in flat and "test/linear/vector/0.3/r" in flat


def test_robustness_zerr_velocity_trains_without_redshift_errors_and_evaluates_with_them(tmp_path):
    from hydra import compose, initialize_config_dir

    from lss_lightning.config import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=robustness_zerr_velocity"])
    assert cfg.model.residual_of in cfg.data.inputs and all(f.endswith("_rsd") for f in cfg.data.inputs)
    assert MockConfig.from_mapping(cfg.data.generate, store="x").redshift_errors is None  # trains without
    base = {
        **SETTINGS,
        "n_sims": 8,
        "design": "seeds",
        "hod_prior": None,
        "fields": list(cfg.data.generate.fields),
    }
    clean = generate_store(tiny_mock(tmp_path / "zerr_0", **base), progress=False)
    noisy = generate_store(
        tiny_mock(tmp_path / "zerr_0.003", **base, redshift_errors={"sigma_z": 0.003}), progress=False
    )
    flat = _train_here_evaluate_there("robustness_zerr_velocity", clean, noisy, tmp_path, SMALL_UNET)
    assert "test/unet/vector/0.3/r" in flat and "test/linear/vector/0.3/r" in flat


def test_robustness_hod_params_trains_on_one_hod_and_evaluates_parameters_on_another(tmp_path):
    from hydra import compose, initialize_config_dir

    from lss_lightning.config import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=robustness_hod_params"])
    assert list(cfg.data.targets) == ["Omega_m", "sigma_8"] and cfg.data.generate.design == "latin_hypercube"
    base = {**SETTINGS, "n_sims": 8, "hod_prior": None, "fields": list(cfg.data.generate.fields)}
    stores = [
        generate_store(
            tiny_mock(tmp_path / f"hod_{h}", **{**base, "hod": {**HOD, "log_M_min": h}}), progress=False
        )
        for h in (12.8, 13.0)
    ]
    small = ["data.crop=16", "data.pad=0", "data.batch_size=2", "data.num_workers=0"]
    flat = _train_here_evaluate_there("robustness_hod_params", *stores, tmp_path, small)
    assert {"test/Omega_m/rmse", "test/Omega_m/bias", "test/sigma_8/bias"} <= set(
        flat
    )  # one test box: no R^2
