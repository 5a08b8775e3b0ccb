"""FoF haloes, halo fields from catalogues, and catalogues in the store (mocks and Quijote alike)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
import torch
from conftest import WU2023_BINS
from mock_stores import tiny_mock

from lss_lightning.cosmology import Cosmology
from lss_lightning.fields.mesh import cic_paint
from lss_lightning.fields.tracers import catalogue_fields
from lss_lightning.fields.velocity import linear_velocity, redshift_space_positions
from lss_lightning.mocks.config import MockConfig
from lss_lightning.mocks.fof import friends_of_friends, particle_mass
from lss_lightning.mocks.generate import generate_store
from lss_lightning.store.reader import FieldStore
from lss_lightning.store.schema import HaloCatalogue, StoreError, parse_mass_bins

BOX = 50.0


def _constructed_groups(rng):
    """Clumps of particles (spacing < 0.1 Mpc/h) far apart, three of them across the periodic faces,
    plus isolated field particles; returns positions and the group of each particle (-1: field)."""
    centres = [
        (10.0, 10.0, 10.0),
        (30.0, 20.0, 40.0),
        (0.02, 25.0, 25.0),  # split by the x = 0 face
        (49.99, 49.98, 0.01),  # split across a corner: three faces
        (25.0, 0.0, 12.0),  # split by the y = 0 face
        (40.0, 40.0, 20.0),  # too small to be a halo (5 members)
    ]
    sizes = [60, 25, 40, 33, 21, 5]
    positions, labels = [], []
    for g, (centre, size) in enumerate(zip(centres, sizes, strict=True)):
        # a chain of friends: each member within 0.09 Mpc/h of the previous one, folded into a blob
        steps = rng.normal(size=(size, 3))
        steps *= 0.09 / np.linalg.norm(steps, axis=1, keepdims=True) * rng.uniform(0.3, 1.0, (size, 1))
        blob = np.cumsum(steps, axis=0)
        blob -= blob.mean(0)
        positions.append(np.mod(np.asarray(centre) + blob, BOX))
        labels += [g] * size
    field = rng.uniform(0, BOX, size=(400, 3))
    far = np.all(
        np.linalg.norm((field[:, None] - np.array(centres)[None] + BOX / 2) % BOX - BOX / 2, axis=2) > 5, 1
    )
    positions.append(field[far])
    labels += [-1] * int(far.sum())
    return np.concatenate(positions), np.array(labels)


def test_fof_recovers_constructed_groups_across_the_periodic_boundary():
    rng = np.random.default_rng(1)
    pos, truth = _constructed_groups(rng)
    order = rng.permutation(len(pos))  # members not contiguous in memory
    pos, truth = pos[order], truth[order]
    velocities = rng.normal(0, 100, pos.shape)
    # mean separation 1 Mpc/h and b = 0.1: link below 0.1 Mpc/h; isolated particles sit > 0.1 apart
    cat, halo_of = friends_of_friends(
        pos, velocities, BOX, particle_mass=1e11, mean_separation=1.0, linking_length=0.1, min_particles=20
    )
    assert len(cat) == 5  # the 5-member clump is below min_particles
    assert list(cat.n_particles) == sorted(cat.n_particles, reverse=True)  # most massive first
    recovered = {frozenset(np.flatnonzero(halo_of == h)) for h in range(len(cat))}
    expected = {frozenset(np.flatnonzero(truth == g)) for g in range(5)}
    assert recovered == expected
    assert (halo_of[truth == 5] == -1).all() and (halo_of[truth == -1] == -1).all()
    for h in range(len(cat)):
        members = halo_of == h
        offsets = (pos[members] - cat.positions[h] + BOX / 2) % BOX - BOX / 2
        np.testing.assert_allclose(offsets.mean(0), 0.0, atol=1e-4)  # centre of mass, boundary-aware
        assert (np.abs(offsets) < 2.0).all()
        np.testing.assert_allclose(cat.velocities[h], velocities[members].mean(0), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(cat.masses, cat.n_particles * 1e11)
    assert ((cat.positions >= 0) & (cat.positions < BOX)).all()


def test_particle_mass_matches_the_mean_density():
    # 128^3 particles in 256 Mpc/h at Omega_m = 0.3175: 7.0e11 Msun/h (REFERENCES.md)
    assert particle_mass(Cosmology(), 256.0, 128) == pytest.approx(7.0e11, rel=0.01)


def _catalogue(rng, n=300, box=BOX):
    masses = 10 ** rng.uniform(12.5, 14.5, n)
    return HaloCatalogue(
        positions=rng.uniform(0, box, (n, 3)).astype(np.float32),
        velocities=rng.normal(0, 300, (n, 3)).astype(np.float32),
        masses=masses,
        n_particles=np.round(masses / 1e11).astype(np.int64),
        particle_mass=1e11,
        linking_length=0.2,
        min_particles=20,
        finder="fof",
        source="test catalogue",
    )


def test_catalogue_fields_are_the_painted_haloes():
    rng = np.random.default_rng(2)
    cat, grid, a_h, a_h_f = _catalogue(rng), 16, 60.0, 30.0
    bins = parse_mass_bins([[1e13, 1e14], [1e14, None]])
    names = ["halos_m0", "halos_m1_rsd", "halo_velocity", "halo_velocity_rsd", "velocity_linear_halos"]
    fields, attrs = catalogue_fields(
        cat, bins, names, grid=grid, box_size=BOX, a_h=a_h, a_h_f=a_h_f, los_axis=2
    )
    pos, vel = torch.from_numpy(cat.positions), torch.from_numpy(cat.velocities)
    s = redshift_space_positions(pos, vel, a_h, BOX, 2)
    keep0 = (cat.masses >= 1e13) & (cat.masses < 1e14)
    keep1 = cat.masses >= 1e14
    expect0 = cic_paint(pos[keep0], grid, BOX) / (keep0.sum() / grid**3) - 1
    np.testing.assert_allclose(fields["halos_m0"][0], expect0.numpy(), atol=1e-5)
    expect1 = cic_paint(s[keep1], grid, BOX) / (keep1.sum() / grid**3) - 1
    np.testing.assert_allclose(fields["halos_m1_rsd"][0], expect1.numpy(), atol=1e-5)
    assert attrs["halos_m1_rsd"]["n_halos"] == keep1.sum() and attrs["halos_m1_rsd"]["mass_max"] == np.inf
    # halo velocity: sum(M v) / sum(M) wherever a cell holds halo mass
    either = torch.from_numpy(keep0 | keep1)
    m = torch.from_numpy(cat.masses[either.numpy()]).float()
    mass = cic_paint(pos[either], grid, BOX, m)
    momentum = cic_paint(pos[either], grid, BOX, vel[either] * m[:, None])
    occupied = mass > 1e-6 * mass.mean()
    np.testing.assert_allclose(
        fields["halo_velocity"][:, occupied],
        (momentum / mass.clamp(min=1e-30))[:, occupied],
        rtol=1e-3,
        atol=0.5,
    )
    assert attrs["halo_velocity"]["empty_fraction"] == pytest.approx(1 - float(occupied.double().mean()))
    assert not np.allclose(fields["halo_velocity_rsd"], fields["halo_velocity"])
    delta_all = cic_paint(pos[either], grid, BOX) / (int(either.sum()) / grid**3) - 1
    np.testing.assert_allclose(
        fields["velocity_linear_halos"], linear_velocity(delta_all, BOX, a_h_f).numpy(), rtol=1e-4, atol=1e-3
    )
    with pytest.raises(ValueError, match=r"test catalogue: mass bin 0 \[1e\+16, inf\).*no haloes"):
        catalogue_fields(
            cat,
            parse_mass_bins([[1e16, None]]),
            ["halos_m0"],
            grid=8,
            box_size=BOX,
            a_h=1,
            a_h_f=1,
            los_axis=2,
        )


def test_halo_mass_weights_integrate_to_the_cells_and_weight_the_halo_velocity():
    """halo_mass[_rsd]: CIC halo mass over its box mean; sum = N^3, zero where no halo's cloud reaches, and
    the halo velocity averaged with these weights is the mass-weighted velocity of the haloes."""
    rng = np.random.default_rng(5)
    cat, grid, a_h = _catalogue(rng), 16, 60.0
    bins = parse_mass_bins([[1e13, 1e14], [1e14, None]])
    names = ["halo_mass", "halo_mass_rsd", "halo_velocity", "halo_velocity_rsd"]
    fields, attrs = catalogue_fields(
        cat, bins, names, grid=grid, box_size=BOX, a_h=a_h, a_h_f=30.0, los_axis=2
    )
    keep = cat.masses >= 1e13
    m, v = cat.masses[keep], cat.velocities[keep].astype(np.float64)
    expected_v = (m[:, None] * v).sum(0) / m.sum()
    pos, vel = torch.from_numpy(cat.positions[keep]), torch.from_numpy(cat.velocities[keep])
    for space, positions in (("", pos), ("_rsd", redshift_space_positions(pos, vel, a_h, BOX, 2))):
        w = fields[f"halo_mass{space}"]
        assert w.shape == (1, grid, grid, grid) and w.dtype == np.float32
        assert float(w.astype(np.float64).sum()) == pytest.approx(grid**3, rel=1e-5)  # mean 1
        touched = cic_paint(positions, grid, BOX).numpy() > 0  # cells some halo's CIC cloud reaches
        assert (w[0][~touched] == 0).all() and (w[0][touched] > 0).all()
        assert (~touched).mean() > 0.5  # most cells hold no halo: the zeros are tested
        mass = cic_paint(positions, grid, BOX, torch.from_numpy(m).float()).numpy()
        np.testing.assert_allclose(w[0], mass / (m.sum() / grid**3), rtol=1e-5, atol=1e-6)
        assert attrs[f"halo_mass{space}"]["mean_mass_per_cell"] == pytest.approx(m.sum() / grid**3)
        velocity = fields[f"halo_velocity{space}"].astype(np.float64)
        weighted = (w.astype(np.float64) * velocity).sum(axis=(1, 2, 3)) / w.astype(np.float64).sum()
        np.testing.assert_allclose(weighted, expected_v, rtol=1e-4, atol=1e-3)
    assert not np.array_equal(fields["halo_mass"], fields["halo_mass_rsd"])
    empty, attrs = catalogue_fields(
        cat,
        parse_mass_bins([[1e16, None]]),
        ["halo_mass_rsd"],
        grid=8,
        box_size=BOX,
        a_h=a_h,
        a_h_f=30.0,
        los_axis=2,
        allow_empty=True,
    )
    assert empty["halo_mass_rsd"].shape == (1, 8, 8, 8) and not empty["halo_mass_rsd"].any()


def test_halo_number_weights_count_each_halo_once():
    """halo_number[_rsd]: CIC halo count over its box mean (sum N^3), zero in exactly the cells halo_mass is,
    and unlike halo_mass the same weight for a light and a heavy halo."""
    rng = np.random.default_rng(6)
    cat, grid, a_h = _catalogue(rng), 16, 60.0
    bins = parse_mass_bins([[1e13, None]])
    names = ["halo_number_rsd", "halo_mass_rsd"]
    fields, attrs = catalogue_fields(
        cat, bins, names, grid=grid, box_size=BOX, a_h=a_h, a_h_f=30.0, los_axis=2
    )
    keep = cat.masses >= 1e13
    pos, vel = torch.from_numpy(cat.positions[keep]), torch.from_numpy(cat.velocities[keep])
    counts = cic_paint(redshift_space_positions(pos, vel, a_h, BOX, 2), grid, BOX).numpy()
    n = fields["halo_number_rsd"]
    assert n.shape == (1, grid, grid, grid) and float(n.astype(np.float64).sum()) == pytest.approx(
        grid**3, rel=1e-5
    )
    np.testing.assert_allclose(n[0], counts / (keep.sum() / grid**3), rtol=1e-5, atol=1e-6)
    assert attrs["halo_number_rsd"]["mean_number_per_cell"] == pytest.approx(keep.sum() / grid**3)
    assert attrs["halo_number_rsd"]["weighting"] == "number"
    np.testing.assert_array_equal(n > 0, fields["halo_mass_rsd"] > 0)
    assert not np.allclose(
        n, fields["halo_mass_rsd"], rtol=0.1
    )  # the masses span a decade: the weights differ
    from lss_lightning.store.schema import field_spec

    assert field_spec("halo_number_rsd", 2).kind == "scalar"


def test_halo_mass_is_a_scalar_mock_field(tmp_path):
    """fields: [..., halo_mass_rsd] in a PM mock store: a scalar redshift-space field of mean 1."""
    from lss_lightning.store.schema import field_spec

    spec = field_spec("halo_mass_rsd", 2)
    assert (spec.kind, spec.channels, spec.space, spec.los_axis) == ("scalar", 1, "redshift", 2)
    assert field_spec("halo_mass").space == "real"
    cfg = MockConfig(
        store=str(tmp_path / "s"),
        n_sims=1,
        grid=16,
        particles=32,
        box_size=62.5,
        mass_bins=[[1.3e13, None]],
        fields=["halo_mass_rsd", "halo_velocity_rsd"],
        device="cpu",
    )
    store = generate_store(cfg, progress=False)
    w = store.read(store.simulation_ids[0], "halo_mass_rsd")
    assert store.fields["halo_mass_rsd"].kind == "scalar" and w.shape == (1, 16, 16, 16)
    assert float(w.astype(np.float64).mean()) == pytest.approx(1.0, rel=1e-5) and (w == 0).any()


def test_empty_cells_of_sparse_haloes_hold_averages_of_their_velocities():
    """A filled cell is a mass-weighted mean of halo velocities, so no component leaves their range.

    Sparse haloes (under 2% of cells occupied, masses over two decades) are where the analytic Gaussian's
    negative lobes and the float32 FFT's rounding noise once made empty cells reach 1e6 km/s; the test
    fails with either fix undone.
    """
    rng = np.random.default_rng(5)
    n, grid, box = 600, 64, 250.0
    cat = HaloCatalogue(
        positions=rng.uniform(0, box, (n, 3)).astype(np.float32),
        velocities=rng.normal(0, 400, (n, 3)).astype(np.float32),
        masses=(10 ** rng.uniform(13, 15.3, n)).astype(np.float32),
        n_particles=np.full(n, 100),
        particle_mass=1e11,
        source="sparse",
    )
    fields, attrs = catalogue_fields(
        cat,
        parse_mass_bins([[1e13, None]]),
        ["halo_velocity", "velocity_linear_halos"],
        grid=grid,
        box_size=box,
        a_h=100.0,
        a_h_f=53.0,
        los_axis=2,
        smoothing=8.0,
    )
    v = fields["halo_velocity"]
    assert attrs["halo_velocity"]["empty_fraction"] > 0.9
    for axis in range(3):
        lo, hi = cat.velocities[:, axis].min(), cat.velocities[:, axis].max()
        assert v[axis].min() >= lo - 1.0 and v[axis].max() <= hi + 1.0
    # the linear velocity from the haloes is smoothed with the mock's linear_smoothing
    delta = cic_paint(torch.from_numpy(cat.positions), grid, box) / (n / grid**3) - 1
    np.testing.assert_allclose(
        fields["velocity_linear_halos"], linear_velocity(delta, box, 53.0, smoothing=8.0).numpy(), atol=1e-2
    )
    assert attrs["velocity_linear_halos"]["smoothing"] == 8.0


def test_pm_store_holds_its_catalogue_and_halo_fields(tiny_halo_store):
    store = tiny_halo_store
    assert store.halos == {"finder": "fof", "linking_length": 0.2, "min_particles": 10}
    channels = {f"halos_m{i}{s}" for i in range(6) for s in ("", "_rsd")}
    pooled = {"density", "halo_velocity_rsd", "velocity_linear_halos_rsd", "halo_mass_rsd"}
    assert set(store.fields) == pooled | channels
    cat = store.read_halos("sim_00001")
    m_p = particle_mass(store.cosmology("sim_00001"), 64.0, 32)
    assert len(cat) > 10 and cat.finder == "fof" and cat.min_particles == 10
    assert cat.particle_mass == pytest.approx(m_p) and cat.n_particles.min() >= 10
    np.testing.assert_allclose(cat.masses, cat.n_particles * m_p)
    assert np.abs(cat.velocities).max() > 10  # km/s: the haloes move
    # the stored channels are the stored catalogue, gridded again: mass bins round-trip
    z = store.redshift
    again, _ = catalogue_fields(
        cat,
        parse_mass_bins(WU2023_BINS),
        ["halos_m1_rsd"],
        grid=16,
        box_size=64.0,
        a_h=store.cosmology("sim_00001").a_h(z),
        a_h_f=store.cosmology("sim_00001").a_h_f(z),
        los_axis=2,
    )
    np.testing.assert_allclose(store.read("sim_00001", "halos_m1_rsd"), again["halos_m1_rsd"], atol=1e-5)
    with h5py.File(store.path("sim_00001")) as f:
        assert f["fields/halos_m5"].attrs["n_halos"] == int((cat.masses >= 4.5e13).sum())
        assert f["halos/position"].dtype == np.float32 and f["halos/mass"].dtype == np.float64


def test_reader_validates_the_halo_group(tiny_halo_store, tmp_path):
    import shutil

    store = tiny_halo_store
    copy = tmp_path / "copy"
    shutil.copytree(store.root, copy)
    with h5py.File(copy / "sim_00000.h5", "a") as f:
        del f["halos/n_particles"]
        f["halos/n_particles"] = np.zeros(3, dtype=np.int64)
    with h5py.File(copy / "sim_00001.h5", "a") as f:
        del f["halos"]
    broken = FieldStore(copy)
    with pytest.raises(
        StoreError, match=r"sim_00000\.h5: 'halos/n_particles' shaped \(3,\).*one row per halo"
    ):
        broken.read_halos("sim_00000")
    with pytest.raises(StoreError, match=r"sim_00001\.h5 lacks the halo catalogue group"):
        broken.open("sim_00001")
    assert broken.missing() == ["sim_00000", "sim_00001"]
    assert FieldStore(store.root).missing() == []  # the original is untouched


def test_halo_fields_need_the_particle_mesh():
    with pytest.raises(ValueError, match=r"needs haloes.*solver=pm"):
        MockConfig(store="x", solver="lpt", fields=["halos"])
    with pytest.raises(ValueError, match=r"unknown pm settings \['step'\]"):
        MockConfig(store="x", pm={"step": 5})
    with pytest.raises(ValueError, match=r"pm\.a_start"):
        MockConfig(store="x", redshift=15.0)


KILLED_PM_RUN = textwrap.dedent(
    """
    import os, signal, sys
    import lss_lightning.mocks.pm as pm
    from lss_lightning.mocks.config import MockConfig
    from lss_lightning.mocks.generate import generate_store
    calls = {"n": 0}
    original = pm.ForceMesh.forces
    def dying(self, positions):  # force evaluations: 6 per simulation with 5 steps
        calls["n"] += 1
        if calls["n"] == int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, positions)
    pm.ForceMesh.forces = dying
    generate_store(MockConfig(store=sys.argv[1], n_sims=3, grid=8, particles=16, box_size=32.0, power="eh",
                              pm={"steps": 5}, fields=["density", "halos"], mass_bins=[[0, None]],
                              fof={"min_particles": 2}, device="cpu"), progress=False)
    """
)


def test_a_killed_pm_run_resumes(tmp_path):
    root = tmp_path / "store"
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_PM_RUN, str(root), "9"], capture_output=True, text=True
    )
    assert proc.returncode == -9, proc.stderr  # killed inside the second simulation's particle mesh
    store = FieldStore(root)
    assert store.missing() == ["sim_00001", "sim_00002"]
    first = (root / "sim_00000.h5").stat()
    cfg = tiny_mock(
        root,
        n_sims=3,
        grid=8,
        particles=16,
        box_size=32.0,
        pm={"steps": 5},
        fields=["density", "halos"],
        mass_bins=[[0, None]],
        fof={"min_particles": 2},
    )
    store = generate_store(cfg, progress=False)
    assert store.missing() == [] and not list(root.glob("*.tmp"))
    assert (root / "sim_00000.h5").stat().st_mtime_ns == first.st_mtime_ns  # not redone
    assert len(store.read_halos("sim_00002")) > 0


def test_shards_fill_one_pm_store(tmp_path):
    common = {
        "store": str(tmp_path / "s"),
        "n_sims": 3,
        "grid": 8,
        "box_size": 32.0,
        "power": "eh",
        "pm": {"steps": 2},
        "fields": ["density"],
        "num_shards": 2,
        "device": "cpu",
    }
    store = generate_store(MockConfig(**common, shard=1), progress=False)
    assert store.missing() == ["sim_00000", "sim_00002"]
    store = generate_store(MockConfig(**common, shard=0), progress=False)
    assert store.missing() == []


def test_empty_mass_bins_are_zero_channels_when_allowed():
    rng = np.random.default_rng(4)
    cat = _catalogue(rng)
    bins = parse_mass_bins([[1e13, None], [1e16, None]])
    common = {"grid": 8, "box_size": BOX, "a_h": 60.0, "a_h_f": 30.0, "los_axis": 2}
    fields, attrs = catalogue_fields(cat, bins, ["halos_m0", "halos_m1_rsd"], allow_empty=True, **common)
    assert attrs["halos_m1_rsd"]["n_halos"] == 0 and not fields["halos_m1_rsd"].any()
    assert fields["halos_m1_rsd"].shape == (1, 8, 8, 8) and fields["halos_m0"].std() > 0
    fields, attrs = catalogue_fields(cat, bins[1:], ["halo_velocity"], allow_empty=True, **common)
    assert attrs["halo_velocity"]["empty_fraction"] == 1.0 and fields["halo_velocity"].shape == (3, 8, 8, 8)
    with pytest.raises(ValueError, match=r"mass bin 1 .*no haloes"):
        catalogue_fields(cat, bins, ["halos_m1"], **common)


def test_latin_hypercube_bins_below_the_fof_limit_are_reported(caplog):
    from lss_lightning.mocks.design import design
    from lss_lightning.mocks.generate import warn_if_resolution_limited

    cfg = MockConfig(
        store="x", design="latin_hypercube", n_sims=4, fields=["halos"], mass_bins=[[1e13, None]]
    )
    with caplog.at_level("WARNING"):
        warn_if_resolution_limited(cfg, design(cfg))  # 64^3 particles in 128 Mpc/h: 20 m_p ~ 1.4e13 Msun/h
    assert "below the FoF limit" in caplog.text
    caplog.clear()
    high = MockConfig(**{**cfg.__dict__, "mass_bins": [[1e14, None]]})
    warn_if_resolution_limited(high, design(high))
    assert "below the FoF limit" not in caplog.text


def test_preflight_sees_the_halo_channels_a_store_will_have(tmp_path):
    """experiment=wu2023 on a store still to be built: the checks expand the halo shorthands like the generator."""
    from hydra import compose, initialize_config_dir

    from lss_lightning.config import CONF_DIR
    from lss_lightning.run.preflight import store_facts

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name="train", overrides=["experiment=wu2023", f"data.store={tmp_path / 'absent'}"]
        )
    facts = store_facts(cfg.data)
    assert facts.generated and {"halos_m5_rsd", "velocity_linear_halos_rsd", "halo_velocity_rsd"} <= set(
        facts.fields
    )
    assert not (tmp_path / "absent").exists()
