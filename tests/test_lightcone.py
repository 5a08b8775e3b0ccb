"""Haloes on the light cone: angles and redshifts from the cosmology's distances, periodic tiling, the store."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
from mock_stores import tiny_mock
from scipy.integrate import quad

from lss_lightning.cosmology import SPEED_OF_LIGHT, Cosmology
from lss_lightning.mocks.config import MockConfig
from lss_lightning.mocks.generate import generate_store
from lss_lightning.mocks.lightcone import LightconeSettings, histogram, place_on_lightcone, sky_coordinates
from lss_lightning.store.schema import HaloCatalogue


def _catalogue(positions, velocities, masses=None) -> HaloCatalogue:
    positions = np.asarray(positions, dtype=np.float32)
    n = len(positions)
    return HaloCatalogue(
        positions=positions,
        velocities=np.asarray(velocities, dtype=np.float32),
        masses=np.full(n, 1e14) if masses is None else np.asarray(masses, float),
        n_particles=np.full(n, 100),
    )


def _distance(cosmo: Cosmology, z: float) -> float:
    """chi(z) by direct quadrature, independent of the cosmology module's table."""
    return quad(lambda x: SPEED_OF_LIGHT / 100.0 / float(cosmo.efunc(x)), 0.0, z, epsrel=1e-10)[0]


@pytest.mark.parametrize("cosmo", [Cosmology(), Cosmology(Omega_m=0.28, w0=-0.8, wa=0.25, h=0.7)])
def test_hand_placed_haloes_get_their_angles_and_redshifts(cosmo):
    """Haloes at known (RA, DEC, z_cos) with radial velocities, in a box larger than the cone (no tiling)."""
    box = 4000.0
    observer = np.array([100.0, 2000.0, 2000.0])
    truth = [
        (10.0, -5.0, 0.42, 300.0),
        (-15.0, 12.0, 0.61, -450.0),
        (0.0, 0.0, 0.75, 0.0),
        (19.0, 19.0, 0.33, 800.0),
    ]
    positions, velocities = [], []
    for ra, dec, z, v_r in truth:
        unit = np.array(
            [
                math.cos(math.radians(dec)) * math.cos(math.radians(ra)),
                math.cos(math.radians(dec)) * math.sin(math.radians(ra)),
                math.sin(math.radians(dec)),
            ]
        )
        positions.append(observer + _distance(cosmo, z) * unit)
        velocities.append(
            v_r * unit + np.array([0.0, 50.0, -70.0]) * (1 - abs(unit[1]))
        )  # plus some transverse motion
    settings = LightconeSettings(snapshots=1, observer=tuple(observer))
    z_snap = float(settings.snapshot_redshifts()[0])
    cone = place_on_lightcone([(z_snap, _catalogue(positions, velocities))], cosmo, box, settings)
    assert len(cone) == len(truth)
    order = np.argsort(cone.index)
    for j, (ra, dec, z, _) in enumerate(truth):
        k = order[j]
        v = np.asarray(velocities[j])
        unit = (positions[j] - observer) / np.linalg.norm(positions[j] - observer)
        expected_obs = (1 + z) * (1 + float(v @ unit) / SPEED_OF_LIGHT) - 1
        assert cone.ra[k] == pytest.approx(ra, abs=1e-4) and cone.dec[k] == pytest.approx(dec, abs=1e-4)
        assert cone.z_cos[k] == pytest.approx(z, abs=2e-6)  # float32 positions: ~1e-4 Mpc/h
        assert cone.z_obs[k] == pytest.approx(expected_obs, abs=2e-6)


def test_tiling_covers_the_cone_once():
    """A 150 Mpc/h box tiled over a cone to z = 0.35: every (halo, replica) inside the cone appears exactly
    once, matching a brute-force scan of a generous block of replicas."""
    rng = np.random.default_rng(0)
    box, cosmo = 150.0, Cosmology()
    settings = LightconeSettings(z=(0.1, 0.3), snapshots=2, margin=0.02, observer=(10.0, 20.0, 30.0))
    catalogues = [
        (float(z), _catalogue(rng.uniform(0, box, (400, 3)), np.zeros((400, 3))))
        for z in settings.snapshot_redshifts()
    ]
    cone = place_on_lightcone(catalogues, cosmo, box, settings)
    keys = {
        (int(s), *map(int, r), int(i))
        for s, r, i in zip(cone.snapshot, cone.replica, cone.index, strict=True)
    }
    assert len(keys) == len(cone) > 1000  # no (snapshot, replica, halo) twice
    positions = np.round(np.stack([cone.ra, cone.dec, cone.chi], 1), 6)
    assert len(np.unique(positions, axis=0)) == len(cone)  # no two haloes at the same place
    chi_edges = cosmo.comoving_distance(settings.slice_edges())
    expected = 0
    observer = np.array(settings.observer)
    for snap, (_, cat) in enumerate(catalogues):
        j = settings.snapshots - 1 - snap
        for offset in np.ndindex(17, 17, 17):  # replicas -8..8: chi(0.32) = 890 Mpc/h < 8 boxes
            replica = np.array(offset) - 8
            ra, dec, chi = sky_coordinates(cat.positions.astype(float) + box * replica - observer)
            expected += int(
                (
                    (chi >= chi_edges[j]) & (chi < chi_edges[j + 1]) & (np.abs(ra) < 20) & (np.abs(dec) < 20)
                ).sum()
            )
    assert len(cone) == expected
    counts = histogram(cone, settings, 8)
    inside = (cone.z_obs >= 0.1) & (cone.z_obs < 0.3)
    assert counts.shape == (1, 8, 8, 8) and counts.sum() == inside.sum()


def test_light_cone_store_from_particle_mesh_snapshots(tmp_path):
    cfg = tiny_mock(
        tmp_path / "cone",
        n_sims=2,
        grid=8,
        particles=32,
        box_size=128.0,
        pm={"steps": 4},
        fof={"min_particles": 5},
        fields=["lightcone"],
        lightcone={"z": [0.05, 0.15], "snapshots": 2, "ra": [-30, 30], "dec": [-30, 30]},
    )
    store = generate_store(cfg, progress=False)
    spec = store.fields["lightcone"]
    assert (spec.axes, spec.units, spec.kind) == ("ra,dec,z", "count", "scalar")
    assert store.halos is None and store.redshift == pytest.approx(0.1)
    counts = store.read("sim_00000", "lightcone")
    assert counts.shape == (1, 8, 8, 8) and counts.sum() > 20 and np.all(counts == np.round(counts))
    with h5py.File(store.path("sim_00000")) as f:
        assert f["fields/lightcone"].attrs["axes"] == "ra,dec,z"
    with pytest.raises(ValueError, match=r"lightcone store needs solver=pm and fields=\[lightcone\]"):
        MockConfig(store="x", fields=["density"], lightcone={"snapshots": 2})
    with pytest.raises(ValueError, match="needs a lightcone block"):
        MockConfig(store="x", fields=["lightcone"])


@pytest.fixture(scope="module")
def tiny_cones(tmp_path_factory):
    """4 light cones over the w0-wa prior: 16^3 particles in 128 Mpc/h, one snapshot, 8^3 histograms."""
    cfg = tiny_mock(
        tmp_path_factory.mktemp("cones") / "lh",
        n_sims=4,
        grid=8,
        particles=16,
        box_size=128.0,
        design="latin_hypercube",
        prior="hwang_sabiu_w0wa",
        pm={"steps": 2},
        fof={"min_particles": 3},
        fields=["lightcone"],
        lightcone={"z": [0.05, 0.15], "snapshots": 1},
    )
    return generate_store(cfg, progress=False)


def _compose(overrides):
    from hydra import compose, initialize_config_dir

    from lss_lightning.config import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def test_light_cone_crops_get_only_the_sky_mirrors(tiny_cones):
    """A parameter network on light-cone histograms: augmentation uses the 4 mirrors of RA and DEC, never a
    flip of the redshift axis or an RA/DEC swap."""
    from lss_lightning.data.crops import sky_symmetries
    from lss_lightning.run.assemble import build_data
    from lss_lightning.store.schema import StoreError

    common = [
        "model=cnn3d",
        f"data.store={tiny_cones.root}",
        "data.inputs=[lightcone]",
        "data.targets=[Omega_m,w0]",
        "data.pad=0",
    ]
    train_cfg = _compose([*common, "data.crop=8"])
    dm = build_data(train_cfg)
    symmetries = dm.symmetries()
    assert symmetries == sky_symmetries() and len(symmetries) == 4
    assert all(s.perm == (0, 1, 2) and not s.flips[2] for s in symmetries)
    dm.setup("fit")
    stored = dm.store.read(dm.splits["train"][0], "lightcone")[0]
    for epoch in range(6):  # every draw is the whole histogram, at most mirrored in RA and DEC
        item = dm.train_set[(epoch, 0)]
        assert item["corner"].tolist() == [0, 0, 0]
        crop = item["input"][0].numpy()
        mirrors = [stored, stored[::-1], stored[:, ::-1], stored[::-1, ::-1]]
        assert any(np.array_equal(crop, m) for m in mirrors)
    shifted = _compose([*common, "data.crop=6"])
    with pytest.raises(StoreError, match=r"not periodic.*data\.crop=8 data\.pad=0"):
        build_data(shifted)


def test_hwang2022_trains_and_evaluates_on_light_cone_histograms(tiny_cones, tmp_path):
    """experiment=hwang2022_cnn end to end on a tiny light-cone Latin hypercube (a small CNN for speed)."""
    from lss_lightning.run import train

    overrides = [
        "experiment=hwang2022_cnn",
        f"data.store={tiny_cones.root}",
        f"paths.output_dir={tmp_path / 'run'}",
        "data.crop=8",
        "data.batch_size=2",
        "data.num_workers=0",
        "model.net.name=cnn3d",
        "model.slice_bins=8",  # the counts per redshift slice of the 8^3 histograms
        "evaluation.fiducial_store=null",
        "evaluation.posterior.enabled=false",
        "evaluation.attention=false",
        "debug=fast_dev_run",
        "~callbacks.progress_bar",
    ]
    for experiment in ("hwang2022_vit", "hwang2022_cnn"):  # both take the whole histogram by default
        default = _compose([f"experiment={experiment}"])
        assert (default.data.crop, default.data.pad) == (default.data.generate.grid, 0)
    composed = _compose(overrides)
    assert list(composed.data.inputs) == ["lightcone"] and composed.data.generate.lightcone.z == [0.3, 0.8]
    metrics = train(composed)
    assert {"test/Omega_m/rmse", "test/w0/rmse", "test/n_s/rmse"} <= set(metrics)


def _random_snapshots(settings, box, n=400, seed=0):
    rng = np.random.default_rng(seed)
    return [
        (
            float(z),
            _catalogue(
                rng.uniform(0, box, (n, 3)), rng.normal(0, 300, (n, 3)), masses=rng.uniform(1e13, 1e15, n)
            ),
        )
        for z in settings.snapshot_redshifts()
    ]


def test_cones_of_one_box_along_the_six_axes_do_not_overlap():
    """Six cones from one observer (+x, -x, +y, -y, +z, -z): no (halo, replica) is placed on two of them, and
    the tiled-space positions they hold are disjoint; each still holds the box's haloes (the correlation)."""
    box, cosmo = 150.0, Cosmology()
    settings = LightconeSettings(
        z=(0.1, 0.3), snapshots=2, margin=0.02, observer=(10.0, 20.0, 30.0), cones_per_box=6
    )
    assert settings.directions == ("+x", "-x", "+y", "-y", "+z", "-z")
    catalogues = _random_snapshots(settings, box)
    seen, places = {}, []
    for direction in settings.directions:
        cone = place_on_lightcone(catalogues, cosmo, box, settings, direction)
        keys = {
            (int(s), *map(int, r), int(i))
            for s, r, i in zip(cone.snapshot, cone.replica, cone.index, strict=True)
        }
        assert len(keys) == len(cone) > 500
        for other, other_keys in seen.items():
            assert not keys & other_keys, f"{direction} and {other} share placements"
        seen[direction] = keys
        # absolute positions in the tiled space: the catalogue position plus the replica's shift
        positions = np.stack(
            [
                catalogues[settings.snapshots - 1 - s][1].positions[i]
                for s, i in zip(cone.snapshot, cone.index, strict=True)
            ]
        )
        places.append(np.round(positions + box * cone.replica, 3))
        assert len(np.unique(cone.index)) > 0.5 * 400  # most of the box's haloes reappear in every cone
    every = np.concatenate(places)
    assert len(np.unique(every, axis=0)) == len(every)
    with pytest.raises(ValueError, match="cannot overlap"):
        LightconeSettings(ra=(-40, 40), dec=(-40, 40), cones_per_box=2)
    with pytest.raises(ValueError, match=r"cones_per_box must be 1\.\.6"):
        LightconeSettings(cones_per_box=7)


@pytest.mark.parametrize("direction", ["-x", "+y", "-y", "+z", "-z"])
def test_rotated_cone_of_rotated_catalogue_equals_the_plus_x_cone(direction):
    """The cone along d of a catalogue is the +x cone of the catalogue rotated by R_d (positions wrapped into
    the box, velocities rotated, observer rotated): same haloes, angles, distances and observed redshifts."""
    from lss_lightning.mocks.lightcone import rotation

    box, cosmo = 150.0, Cosmology(Omega_m=0.28, w0=-0.9)
    observer = np.array([10.0, 20.0, 30.0])
    settings = LightconeSettings(z=(0.1, 0.3), snapshots=2, margin=0.02, observer=tuple(observer))
    catalogues = _random_snapshots(settings, box, seed=1)
    r = rotation(direction)
    rotated = [
        (
            z,
            _catalogue(
                np.mod(c.positions.astype(float) @ r.T, box), c.velocities.astype(float) @ r.T, c.masses
            ),
        )
        for z, c in catalogues
    ]
    along = place_on_lightcone(catalogues, cosmo, box, settings, direction)
    moved = LightconeSettings(
        z=(0.1, 0.3), snapshots=2, margin=0.02, observer=tuple(np.mod(r @ observer, box))
    )
    plus_x = place_on_lightcone(rotated, cosmo, box, moved)
    assert len(along) == len(plus_x) > 500

    def ordered(cone):
        order = np.lexsort((cone.chi, cone.index, cone.snapshot))
        return np.stack([cone.ra, cone.dec, cone.chi, cone.z_obs, cone.mass], 1)[order]

    np.testing.assert_allclose(ordered(along), ordered(plus_x), rtol=1e-6, atol=1e-4)
    default = place_on_lightcone(catalogues, cosmo, box, settings)  # +x stays the default
    np.testing.assert_array_equal(
        default.ra, place_on_lightcone(catalogues, cosmo, box, settings, np.eye(3)).ra
    )


def test_store_with_several_cones_per_box_records_them_and_splits_by_box(tmp_path):
    """cones_per_box = 3: n_sims boxes give 3 entries each (box, observer, direction recorded), each box runs
    once for its cones and they equal the cone made alone; a grouped split keeps a box's cones together."""
    from lss_lightning.data.splits import load_or_make_splits
    from lss_lightning.mocks.design import design
    from lss_lightning.mocks.simulate import simulate

    common = dict(
        grid=8,
        particles=16,
        box_size=128.0,
        power="eh",
        design="latin_hypercube",
        prior="hwang_sabiu_w0wa",
        pm={"steps": 2},
        fof={"min_particles": 3},
        fields=["lightcone"],
        device="cpu",
    )
    cone = {"z": [0.05, 0.15], "snapshots": 1}
    single = MockConfig(store=str(tmp_path / "one"), n_sims=4, lightcone=cone, **common)
    assert all(set(s) == {"id", "file", "seed", "params"} for s in design(single))  # unchanged entries
    cfg = MockConfig(
        store=str(tmp_path / "three"), n_sims=4, lightcone={**cone, "cones_per_box": 3}, **common
    )
    sims = design(cfg)
    assert [s["id"] for s in sims[:4]] == ["sim_00000_c0", "sim_00000_c1", "sim_00000_c2", "sim_00001_c0"]
    assert [(s["box"], s["direction"]) for s in sims[:3]] == [(0, "+x"), (0, "-x"), (0, "+y")]
    assert [s["seed"] for s in sims[::3]] == [s["seed"] for s in design(single)]
    assert sims[0]["observer"] == [0.0, 0.0, 0.0] and sims[0]["params"] == sims[2]["params"]
    store = generate_store(cfg, progress=False)
    assert store.simulation_ids == [s["id"] for s in sims] and not store.missing()
    cones = [store.read(s, "lightcone") for s in store.simulation_ids[:3]]
    assert all(c.sum() > 0 for c in cones) and not np.array_equal(cones[0], cones[1])
    np.testing.assert_array_equal(simulate(cfg, sims[1]).fields["lightcone"], cones[1])
    splits = load_or_make_splits(store, {"train": 0.5, "val": 0.25, "test": 0.25}, 0)
    boxes = {p: {store.simulation(s)["box"] for s in members} for p, members in splits.items()}
    assert [len(splits[p]) for p in ("train", "val", "test")] == [6, 3, 3]
    assert (
        not (boxes["train"] & boxes["val"])
        and not (boxes["train"] & boxes["test"])
        and not (boxes["val"] & boxes["test"])
    )
