"""Quijote -> field store: tiny files in Quijote's exact layout, converted and checked against what they hold."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest
import torch
from quijote_fixtures import (
    BOX,
    CDM_MASS,
    HALO_PARTICLES,
    LH_ROWS,
    NU_MASS,
    REDSHIFT,
    ROCKSTAR_COLUMNS,
    SNAPNUM,
    make_quijote_tree,
    write_parameter_table,
    write_rockstar_list,
)

from lss_lightning.cosmology import Cosmology
from lss_lightning.data.quijote import (
    GadgetSnapshot,
    QuijoteConfig,
    QuijoteError,
    QuijoteLayout,
    convert_store,
    read_density_cube,
    read_fof,
    read_parameter_table,
    read_rockstar,
    shard_ids,
    simulation_parameters,
)
from lss_lightning.data.quijote.snapshots import total_particles
from lss_lightning.data.quijote.synthetic import write_gadget_snapshot
from lss_lightning.fields.mesh import cic_paint
from lss_lightning.fields.velocity import redshift_space_positions
from lss_lightning.store.reader import FieldStore
from lss_lightning.store.schema import StoreError
from lss_lightning.store.writer import remove_partial_files

GRID = 8


@pytest.fixture(scope="module")
def lh_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("quijote")
    return root, make_quijote_tree(root)


def config(root, store, **overrides) -> QuijoteConfig:
    values = dict(
        store=str(store), root=root and str(root), n_sims=3, redshift=REDSHIFT, box_size=BOX, grid=GRID
    )
    return QuijoteConfig(**{**values, **overrides})


def paint(positions, weights=None) -> torch.Tensor:
    pos = torch.as_tensor(np.asarray(positions, dtype=np.float32))
    w = None if weights is None else torch.as_tensor(np.asarray(weights, dtype=np.float32))
    return cic_paint(pos, GRID, BOX, w)


def a_h(params) -> float:
    return Cosmology.from_mapping(params).a_h(REDSHIFT)


# -- snapshots -------------------------------------------------------------------------------------
def test_snapshot_streams_known_particles_in_project_units(lh_tree):
    root, truths = lh_tree
    snap = GadgetSnapshot(root / f"Snapshots/latin_hypercube/0/snapdir_{SNAPNUM:03d}/snap_{SNAPNUM:03d}")
    assert len(snap.files) == 3
    with h5py.File(snap.files[1]) as f:  # the fixture really is Blosc-compressed, as Quijote since 2023
        assert "32001" in f["PartType1/Coordinates"]._filters
    h = snap.header
    assert h.box_size == pytest.approx(BOX) and h.redshift == pytest.approx(REDSHIFT)
    assert h.num_total[1] == len(truths[0].positions) and h.mass_table[1] == pytest.approx(CDM_MASS)
    chunks = list(snap.iter_particles([1], chunk=50))
    assert len(chunks) > len(snap.files) and max(len(c.positions) for c in chunks) <= 50
    pos = np.concatenate([c.positions for c in chunks])
    vel = np.concatenate([c.velocities for c in chunks])
    np.testing.assert_allclose(pos, truths[0].positions, atol=1e-4)  # kpc/h -> Mpc/h
    np.testing.assert_allclose(vel, truths[0].velocities, atol=1e-3)  # u sqrt(a) -> km/s


def test_particle_counts_combine_the_high_word():
    assert total_particles([7, 2**32 - 1, 0], [0, 1, 2]) == (7, 2**33 - 1, 2**33)


def test_converted_density_and_momentum_equal_a_direct_cic_paint(lh_tree, tmp_path):
    root, truths = lh_tree
    fields = ["density", "momentum", "density_rsd", "momentum_rsd", "velocity"]
    store = convert_store(config(root, tmp_path / "s", fields=fields), progress=False)
    for i, truth in enumerate(truths):
        mean = len(truth.positions) * CDM_MASS / GRID**3
        mass = np.full(len(truth.positions), CDM_MASS)
        s = redshift_space_positions(
            torch.as_tensor(truth.positions, dtype=torch.float32),
            torch.as_tensor(truth.velocities, dtype=torch.float32),
            a_h(truth.params),
            BOX,
            2,
        )
        expected = {
            "density": (paint(truth.positions, mass) / mean - 1)[None],
            "momentum": paint(truth.positions, mass[:, None] * truth.velocities) / mean,
            "density_rsd": (paint(s, mass) / mean - 1)[None],
            "momentum_rsd": paint(s, mass[:, None] * truth.velocities) / mean,
        }
        for name, want in expected.items():
            np.testing.assert_allclose(
                store.read(f"sim_{i:05d}", name), want.numpy(), atol=2e-3, err_msg=name
            )
        assert store.cosmology(f"sim_{i:05d}").Omega_m == pytest.approx(LH_ROWS[i, 0])


def test_uniform_velocities_come_back_in_km_s(tmp_path):
    root, v0 = tmp_path / "q", np.array([120.0, -75.0, 33.0])
    rng = np.random.default_rng(3)
    pos = rng.random((400, 3)) * BOX
    write_gadget_snapshot(
        root / f"Snapshots/fiducial/0/snapdir_{SNAPNUM:03d}/snap_{SNAPNUM:03d}",
        {1: (pos, np.tile(v0, (400, 1)))},
        masses={1: CDM_MASS},
        box_size=BOX,
        redshift=REDSHIFT,
        n_files=4,
    )
    store = convert_store(
        config(root, tmp_path / "s", set_name="fiducial", n_sims=1, fields=["velocity"]), progress=False
    )
    velocity = store.read("sim_00000", "velocity")
    np.testing.assert_allclose(velocity, np.broadcast_to(v0[:, None, None, None], velocity.shape), rtol=1e-4)
    assert store.simulation("sim_00000")["seed"] == -1  # no ICs folder -> unknown seed


def test_neutrinos_are_mass_weighted_into_the_density(tmp_path):
    root = tmp_path / "q"
    truth = make_quijote_tree(root, "latin_hypercube_nwLH", 1, neutrinos=True, param_header=None)[0]
    rows = np.array([[*LH_ROWS[0], 0.1, -1.0]])
    write_parameter_table(root / "Snapshots/latin_hypercube_nwLH/latin_hypercube_params.txt", rows, None)
    cfg = config(
        root,
        tmp_path / "s",
        set_name="latin_hypercube_nwLH",
        n_sims=1,
        fields=["density"],
        particle_types=[1, 2],
    )
    store = convert_store(cfg, progress=False)
    pos = np.concatenate([truth.positions, truth.nu_positions])
    mass = np.concatenate(
        [np.full(len(truth.positions), CDM_MASS), np.full(len(truth.nu_positions), NU_MASS)]
    )
    want = paint(pos, mass) / (mass.sum() / GRID**3) - 1
    np.testing.assert_allclose(store.read("sim_00000", "density")[0], want.numpy(), atol=2e-3)
    assert store.cosmology("sim_00000").M_nu == pytest.approx(0.1)


# -- haloes ----------------------------------------------------------------------------------------
def test_fof_over_several_files_in_project_units(lh_tree):
    root, truths = lh_tree
    cat = read_fof(
        root / f"Halos/FoF/latin_hypercube/0/groups_{SNAPNUM:03d}/group_tab_{SNAPNUM:03d}", REDSHIFT, BOX
    )
    np.testing.assert_allclose(cat.masses, truths[0].halo_masses, rtol=1e-6)
    np.testing.assert_allclose(cat.positions, truths[0].halo_positions, atol=1e-4)
    np.testing.assert_allclose(cat.velocities, truths[0].halo_velocities, atol=1e-3)


def test_fof_and_rockstar_catalogues_are_stored_in_the_halo_group(lh_tree, tmp_path):
    root, truths = lh_tree
    t = truths[0]
    fof = convert_store(
        config(root, tmp_path / "fof", n_sims=1, fields=["halos"], mass_bins=[[1e13, None]]), progress=False
    )
    assert fof.halos == {"finder": "fof", "source": "quijote"}
    cat = fof.read_halos("sim_00000")
    np.testing.assert_allclose(cat.masses, t.halo_masses, rtol=1e-6)
    np.testing.assert_allclose(cat.positions, t.halo_positions, atol=1e-4)
    np.testing.assert_allclose(cat.velocities, t.halo_velocities, atol=1e-3)
    np.testing.assert_array_equal(cat.n_particles, HALO_PARTICLES)
    assert cat.particle_mass == pytest.approx(CDM_MASS, rel=1e-6)
    assert (cat.finder, cat.linking_length, cat.min_particles) == ("fof", 0.2, 20)
    # the catalogue alone, without halo fields; and Rockstar host haloes with the header's settings
    rock = convert_store(
        config(
            root, tmp_path / "rock", n_sims=1, fields=["density"], halo_finder="rockstar", halo_catalogue=True
        ),
        progress=False,
    )
    cat = rock.read_halos("sim_00000")
    hosts = t.halo_pid == -1
    np.testing.assert_allclose(cat.masses, t.halo_masses[hosts], rtol=1e-6)
    np.testing.assert_array_equal(cat.n_particles, HALO_PARTICLES[hosts])
    assert cat.particle_mass == pytest.approx(CDM_MASS, rel=1e-5) and cat.linking_length == pytest.approx(
        0.28
    )
    assert cat.finder == "rockstar:Mvir:hosts" and cat.min_particles == -1
    with pytest.raises(StoreError, match=r"holds no halo catalogues.*halo_catalogue=true"):
        convert_store(
            config(root, tmp_path / "none", n_sims=1, fields=["density"]), progress=False
        ).read_halos("sim_00000")


def test_halo_mass_bins_become_number_density_channels(lh_tree, tmp_path):
    root, truths = lh_tree
    bins = [[1e13, 1e14], [1e14, None]]
    cfg = config(root, tmp_path / "s", n_sims=1, fields=["halos", "halos_rsd"], mass_bins=bins)
    assert cfg.fields == ["halos_m0", "halos_m1", "halos_m0_rsd", "halos_m1_rsd"]
    store = convert_store(cfg, progress=False)
    t = truths[0]
    s = redshift_space_positions(
        torch.as_tensor(t.halo_positions, dtype=torch.float32),
        torch.as_tensor(t.halo_velocities, dtype=torch.float32),
        a_h(t.params),
        BOX,
        2,
    )
    for i, (lo, hi) in enumerate(bins):
        keep = (t.halo_masses >= lo) & (t.halo_masses < (hi or np.inf))
        nbar = keep.sum() / GRID**3
        np.testing.assert_allclose(
            store.read("sim_00000", f"halos_m{i}")[0], paint(t.halo_positions[keep]) / nbar - 1, atol=1e-4
        )
        np.testing.assert_allclose(
            store.read("sim_00000", f"halos_m{i}_rsd")[0], paint(s[keep]) / nbar - 1, atol=1e-4
        )
        with store.open("sim_00000") as f:
            assert f[f"fields/halos_m{i}"].attrs["n_halos"] == keep.sum()


def test_rockstar_reads_columns_by_name_and_keeps_hosts(lh_tree, tmp_path):
    _, truths = lh_tree
    t = truths[0]
    shuffled = ROCKSTAR_COLUMNS[::-1]  # names, not positions, decide
    for columns in (ROCKSTAR_COLUMNS, shuffled):
        path = write_rockstar_list(tmp_path / f"r{len(columns)}{columns[0]}" / "out_3_pid.list", t, columns)
        cat, a = read_rockstar(path, BOX, mass_column="Mvir")
        hosts = t.halo_pid == -1
        np.testing.assert_allclose(cat.masses, t.halo_masses[hosts], rtol=1e-6)
        np.testing.assert_allclose(cat.positions, t.halo_positions[hosts], atol=1e-4)
        np.testing.assert_allclose(cat.velocities, t.halo_velocities[hosts], atol=1e-3)
        assert a == pytest.approx(1 / (1 + REDSHIFT), rel=1e-5)
    every, _ = read_rockstar(path, BOX, mass_column="M200c", hosts_only=False)
    np.testing.assert_allclose(every.masses, 0.9 * t.halo_masses, rtol=1e-6)


def test_rockstar_conversion_and_missing_column(lh_tree, tmp_path):
    root, truths = lh_tree
    cfg = config(
        root, tmp_path / "s", n_sims=1, fields=["halos"], halo_finder="rockstar", mass_bins=[[1e13, None]]
    )
    store = convert_store(cfg, progress=False)
    t = truths[0]
    keep = (t.halo_pid == -1) & (t.halo_masses >= 1e13)
    want = paint(t.halo_positions[keep]) / (keep.sum() / GRID**3) - 1
    np.testing.assert_allclose(store.read("sim_00000", "halos_m0")[0], want, atol=1e-4)
    no_pid = write_rockstar_list(
        tmp_path / "nopid" / "out_3.list", t, [c for c in ROCKSTAR_COLUMNS if c != "PID"]
    )
    with pytest.raises(QuijoteError, match=r"out_3\.list.*\['PID'\].*hosts_only=false"):
        read_rockstar(no_pid, BOX)


def test_empty_mass_bin_is_an_error_naming_it(lh_tree, tmp_path):
    root, _ = lh_tree
    cfg = config(root, tmp_path / "s", n_sims=1, fields=["halos"], mass_bins=[[1e13, None], [1e16, None]])
    with pytest.raises(QuijoteError, match=r"group_tab_003.*mass bin 1 \[1e\+16, inf\).*no haloes"):
        convert_store(cfg, progress=False)


# -- parameters, cubes ----------------------------------------------------------------------------
def test_parameter_tables_with_and_without_header(tmp_path):
    lh = read_parameter_table(
        write_parameter_table(tmp_path / "lh.txt", LH_ROWS, "# Omega_m Omega_b h n_s sigma_8")
    )
    assert lh[2] == dict(zip(("Omega_m", "Omega_b", "h", "n_s", "sigma_8"), LH_ROWS[2], strict=True))
    nw = read_parameter_table(
        write_parameter_table(tmp_path / "nw.txt", [[0.3, 0.05, 0.7, 0.96, 0.8, 0.2, -0.9]], None)
    )
    assert nw[0]["M_nu"] == 0.2 and nw[0]["w0"] == -0.9
    aliases = read_parameter_table(
        write_parameter_table(tmp_path / "al.txt", [[0.3, 0.8, -0.9]], "# Om s8 w")
    )
    assert aliases[0] == {"Omega_m": 0.3, "sigma_8": 0.8, "w0": -0.9}
    with pytest.raises(QuijoteError, match=r"bad\.txt.*\['Omega_x'\]"):
        read_parameter_table(write_parameter_table(tmp_path / "bad.txt", [[0.3]], "# Omega_x"))
    with pytest.raises(QuijoteError, match=r"six\.txt has 6 columns"):
        read_parameter_table(write_parameter_table(tmp_path / "six.txt", [[0.3] * 6], None))


def test_parameters_per_simulation_and_their_errors(lh_tree, tmp_path):
    root, _ = lh_tree
    store = convert_store(config(root, tmp_path / "s", n_sims=2, first=1, fields=["density"]), progress=False)
    assert store.simulation_ids == ["sim_00001", "sim_00002"]
    for i in (1, 2):
        with store.open(f"sim_{i:05d}") as f:
            assert f.attrs["h"] == pytest.approx(LH_ROWS[i, 2]) and f.attrs["sigma_8"] == pytest.approx(
                LH_ROWS[i, 4]
            )
        assert store.simulation(f"sim_{i:05d}")["seed"] == 1000 + i  # from ICs/2LPT.param
    with pytest.raises(
        QuijoteError, match=r"latin_hypercube_params\.txt has 3 rows; there is no row for simulations \[3\]"
    ):
        convert_store(config(root, tmp_path / "s2", n_sims=4, fields=["density"]), progress=False)
    shifted = write_parameter_table(tmp_path / "shifted.txt", LH_ROWS[::-1], None)
    with pytest.raises(QuijoteError, match=r"snap_003\.0\.hdf5: HubbleParam is 0\.6711.*h = 0\.56"):
        convert_store(
            config(root, tmp_path / "s3", n_sims=2, fields=["density"], params_file=str(shifted)),
            progress=False,
        )
    layout = QuijoteLayout(root, "Om_p")
    with pytest.raises(QuijoteError, match=r"'Om_p'.*\+cosmology\.Omega_m="):
        simulation_parameters(layout, [0])


def test_density_cube_keeps_its_mass_assignment_scheme(lh_tree, tmp_path):
    root, _ = lh_tree
    counts = np.random.default_rng(1).poisson(3.0, (GRID, GRID, GRID)).astype(np.float32)
    path = root / f"3D_cubes/latin_hypercube/0/df_m_{GRID}_PCS_z=0.5.npy"
    path.parent.mkdir(parents=True)
    np.save(path, counts)
    cfg = config(root, tmp_path / "s", n_sims=1, fields=["density"], density_source="cube", cube_mas="PCS")
    store = convert_store(cfg, progress=False)
    np.testing.assert_allclose(
        store.read("sim_00000", "density")[0], counts / counts.mean() - 1, rtol=1e-5, atol=1e-6
    )
    assert store.fields["density"].mas == "pcs"
    contrast, attrs = read_density_cube(path, GRID)
    assert attrs["normalised_from"] == "density" and contrast.shape == (1, GRID, GRID, GRID)
    np.save(path, counts / counts.mean() - 1)
    assert read_density_cube(path, GRID)[1]["normalised_from"] == "contrast"
    with pytest.raises(
        QuijoteError,
        match=r"df_m_8_PCS_z=0\.5\.npy is shaped \(8, 8, 8\), expected \(16, 16, 16\); set grid=8",
    ):
        read_density_cube(path, 16)
    with pytest.raises(ValueError, match="density_source=cube gives only the real-space density"):
        config(root, tmp_path / "s4", fields=["density", "velocity"], density_source="cube")


# -- missing or malformed inputs -------------------------------------------------------------------
def test_missing_and_malformed_files_are_named(tmp_path):
    root = tmp_path / "q"
    make_quijote_tree(root, n_sims=1)
    snapdir = root / f"Snapshots/latin_hypercube/0/snapdir_{SNAPNUM:03d}"
    cfg = config(root, tmp_path / "s", n_sims=1, fields=["density"])
    (snapdir / "snap_003.1.hdf5").rename(snapdir / "moved")
    with pytest.raises(QuijoteError, match=r"snap_003\.1\.hdf5 is missing.*3 files"):
        convert_store(cfg, progress=False)
    (snapdir / "snap_003.1.hdf5").write_bytes(b"not hdf5 at all")
    with pytest.raises(QuijoteError, match=r"snap_003\.1\.hdf5 cannot be opened as HDF5"):
        convert_store(cfg, progress=False)
    (snapdir / "moved").rename(snapdir / "snap_003.1.hdf5")
    with h5py.File(snapdir / "snap_003.2.hdf5", "r+") as f:
        del f["PartType1/Velocities"]
    with pytest.raises(QuijoteError, match=r"snap_003\.2\.hdf5: /?PartType1/Velocities is missing"):
        convert_store(cfg, progress=False)
    tab = root / f"Halos/FoF/latin_hypercube/0/groups_{SNAPNUM:03d}/group_tab_{SNAPNUM:03d}.2"
    tab.write_bytes(tab.read_bytes()[:-10])
    with pytest.raises(QuijoteError, match=r"group_tab_003\.2 is not a FoF group_tab file"):
        read_fof(tab.with_name("group_tab_003"), REDSHIFT, BOX)
    with pytest.raises(
        QuijoteError, match=r"Snapshots/fiducial .*not found.*closest existing folder: .*Snapshots"
    ):
        convert_store(config(root, tmp_path / "s5", set_name="fiducial", fields=["density"]), progress=False)
    with pytest.raises(QuijoteError, match=r"snapdir_002/snap_002\.0\.hdf5 not found"):
        convert_store(
            config(root, tmp_path / "s6", n_sims=1, redshift=1.0, fields=["density"]), progress=False
        )


def test_root_comes_from_the_environment(lh_tree, tmp_path, monkeypatch):
    root, _ = lh_tree
    monkeypatch.delenv("QUIJOTE_ROOT", raising=False)
    with pytest.raises(QuijoteError, match="QUIJOTE_ROOT"):
        convert_store(config(None, tmp_path / "s", fields=["density"]), progress=False)
    monkeypatch.setenv("QUIJOTE_ROOT", str(root))
    store = convert_store(config(None, tmp_path / "s", n_sims=1, fields=["density"]), progress=False)
    assert store.simulation_ids == ["sim_00000"]
    monkeypatch.setenv("QUIJOTE_ROOT", str(tmp_path / "nowhere"))
    with pytest.raises(QuijoteError, match=r"nowhere is not a folder"):
        convert_store(config(None, tmp_path / "s", fields=["density"]), progress=False)


# -- sharding, resuming, the Hydra entry point -----------------------------------------------------
def test_shards_fill_one_store_and_reruns_skip_finished_simulations(lh_tree, tmp_path):
    root, _ = lh_tree
    store_dir = tmp_path / "s"
    first = convert_store(config(root, store_dir, fields=["density"], shard=0, num_shards=2), progress=False)
    assert first.missing() == ["sim_00001"]
    manifest = (store_dir / "manifest.json").read_text()
    convert_store(config(root, store_dir, fields=["density"], shard=1, num_shards=2), progress=False)
    assert (store_dir / "manifest.json").read_text() == manifest
    store = FieldStore(store_dir)
    assert store.missing() == []
    stamps = {s: os.stat(store.path(s)).st_mtime_ns for s in store.simulation_ids}
    convert_store(config(root, store_dir, fields=["density"]), progress=False)
    assert {s: os.stat(store.path(s)).st_mtime_ns for s in store.simulation_ids} == stamps
    with pytest.raises(StoreError, match="different fields"):
        convert_store(config(root, store_dir, fields=["density", "velocity"]), progress=False)
    assert shard_ids([{"id": str(i)} for i in range(7)], 1, 3) == ["1", "4"]


def test_a_shard_removes_only_its_own_partial_files(tmp_path):
    (tmp_path / ".sim_00000.h5.abc.tmp").write_text("x")
    (tmp_path / ".sim_00001.h5.def.tmp").write_text("x")
    assert remove_partial_files(tmp_path, "sim_00000.h5") == 1
    assert [p.name for p in tmp_path.iterdir()] == [".sim_00001.h5.def.tmp"]


def test_hydra_config_composes_into_a_conversion(lh_tree, tmp_path):
    from hydra import compose, initialize_config_dir

    from lss_lightning.config import CONF_DIR
    from lss_lightning.data.quijote.__main__ import quijote_config

    root, _ = lh_tree
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        default = quijote_config(compose("quijote"))
        cfg = compose(
            "quijote",
            overrides=[
                f"root={root}",
                f"store={tmp_path / 's'}",
                "n_sims=2",
                "redshift=0.5",
                f"box_size={BOX}",
                f"grid={GRID}",
                "fields=[density,halos]",
                "mass_bins=[[1e13,1e14],[1e14,null]]",
                "shard=1",
                "num_shards=2",
            ],
        )
    assert default.store.endswith("data/quijote/latin_hypercube/z0.0_grid128") and default.snapnum == 4
    qcfg = quijote_config(cfg)
    assert qcfg.fields == ["density", "halos_m0", "halos_m1"] and qcfg.snapnum == SNAPNUM
    store = convert_store(qcfg, progress=False)
    assert store.missing() == ["sim_00000"]
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["source"] == "quijote/latin_hypercube" and manifest["redshift"] == REDSHIFT
    assert manifest["generator"]["mass_bins"] == [[1e13, 1e14], [1e14, None]]


def test_train_vit3d_on_a_converted_quijote_store(lh_tree, tmp_path):
    """The README's `python train.py model=vit3d data=quijote` path, on CPU, on files in Quijote's layout."""
    from hydra import compose, initialize_config_dir

    from lss_lightning.config import CONF_DIR
    from lss_lightning.run import train

    root, _ = lh_tree
    store = convert_store(config(root, tmp_path / "store", fields=["density", "density_rsd"]), progress=False)
    overrides = [
        "model=vit3d",
        "data=quijote",
        f"data.store={store.root}",
        f"paths.output_dir={tmp_path / 'run'}",
        "data.crop=8",
        "data.batch_size=2",
        "data.num_workers=0",
        "data.split={train: 0.34, val: 0.33, test: 0.33, seed: 0}",
        "model.net.name=vit3d_tiny",
        "+model.net.patch_size=4",
        "model.parameter_ranges={Omega_m: [0.1, 0.5], Omega_b: [0.03, 0.07], h: [0.5, 0.9], n_s: [0.8, 1.2], sigma_8: [0.6, 1.0]}",
        "debug=fast_dev_run",
        "~callbacks.progress_bar",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        metrics = train(compose(config_name="train", overrides=overrides))
    assert {"test/Omega_m/rmse", "test/sigma_8/relative_error"} <= set(metrics)


def test_quijote_haloes_populated_with_the_mocks_hod(lh_tree, tmp_path):
    """hod: the converter populates each simulation's haloes with lss_lightning.galaxies, seeded as the mocks
    are (galaxy_seed of the simulation's seed): galaxies/ holds exactly populate(stored haloes), and the galaxy
    density contrast is that of those galaxies; galaxy fields without an hod stop in the config."""
    from lss_lightning.galaxies import HODParameters, galaxy_seed, populate

    root, _ = lh_tree
    hod = {"log_M_min": 12.5, "log_M0": 12.5, "log_M1": 13.5}  # the fixture's haloes span ~1e12-1e15
    cfg = config(root, tmp_path / "g", n_sims=1, fields=["galaxies", "galaxy_velocity_rsd"], hod=hod)
    store = convert_store(cfg, progress=False)
    assert store.galaxies["hod"] == HODParameters.from_mapping(hod).to_dict()
    sim = store.simulation("sim_00000")
    galaxies = store.read_galaxies("sim_00000")
    expected = populate(
        store.read_halos("sim_00000"),
        HODParameters.from_mapping(hod),
        box_size=BOX,
        redshift=REDSHIFT,
        omega_m=sim["params"]["Omega_m"],
        rng=galaxy_seed(sim["seed"]),
    )
    assert len(galaxies) == len(expected) > 0
    np.testing.assert_array_equal(galaxies.host, expected.host)
    np.testing.assert_allclose(galaxies.positions, expected.positions, atol=1e-4)
    nbar = len(expected) / GRID**3
    np.testing.assert_allclose(
        store.read("sim_00000", "galaxies")[0], paint(expected.positions) / nbar - 1, atol=1e-4
    )
    assert store.read("sim_00000", "galaxy_velocity_rsd").shape == (3, GRID, GRID, GRID)
    with pytest.raises(ValueError, match="needs galaxies: give an hod block"):
        config(root, tmp_path / "h", n_sims=1, fields=["galaxies"])
    with pytest.raises(ValueError, match="bad hod block"):
        config(root, tmp_path / "h", n_sims=1, fields=["galaxies"], hod={"sigma_logM": -1.0})
