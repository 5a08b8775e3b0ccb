"""The field store: round trip, validation errors that name the file and the fix, resumable generation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
from mock_stores import tiny_mock

from lss_lightning.mocks.config import MockConfig
from lss_lightning.mocks.design import design
from lss_lightning.mocks.generate import generate_store
from lss_lightning.mocks.simulate import simulate
from lss_lightning.store.reader import FieldStore
from lss_lightning.store.schema import StoreError, build_manifest, field_spec
from lss_lightning.store.writer import write_simulation


def _small_store(root, n=8, sims=2):
    specs = {"density": field_spec("density"), "velocity": field_spec("velocity")}
    manifest = build_manifest(
        source="test",
        box_size=32.0,
        grid=n,
        redshift=0.5,
        los_axis=2,
        fields=specs,
        simulations=[
            {"id": f"s{i}", "file": f"s{i}.h5", "seed": i, "params": {"Omega_m": 0.3}} for i in range(sims)
        ],
    )
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.json").write_text(json.dumps(manifest))
    rng = np.random.default_rng(0)
    data = {}
    for sim in manifest["simulations"]:
        fields = {
            "density": rng.normal(size=(1, n, n, n)).astype(np.float32),
            "velocity": rng.normal(size=(3, n, n, n)).astype(np.float32),
        }
        write_simulation(root, manifest, sim, fields, chunk=4, compression="blosc")
        data[sim["id"]] = fields
    return FieldStore(root), data


def test_store_round_trips_fields_and_attributes(tmp_path):
    store, data = _small_store(tmp_path / "s")
    assert store.simulation_ids == ["s0", "s1"] and store.grid == 8 and store.box_size == 32.0
    np.testing.assert_array_equal(store.read("s1", "velocity"), data["s1"]["velocity"])
    assert store.cosmology("s0").Omega_m == 0.3
    with h5py.File(store.path("s0")) as f:
        assert f.attrs["redshift"] == 0.5 and f.attrs["Omega_m"] == 0.3 and f.attrs["w0"] == -1.0
        ds = f["fields/velocity"]
        assert ds.attrs["kind"] == "vector" and ds.attrs["units"] == "km/s" and ds.chunks == (3, 4, 4, 4)
    store.validate(deep=True)
    assert store.missing() == []
    assert oct(os.stat(store.path("s0")).st_mode & 0o777) != "0o600"


def test_truncated_file_gives_an_error_naming_the_file_and_the_fix(tmp_path):
    store, _ = _small_store(tmp_path / "s")
    path = store.path("s1")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(StoreError, match=r"s1\.h5.*(corrupt or truncated|damaged).*delete"):
        store.read("s1", "density")
    assert store.missing() == ["s1"]


def test_missing_field_nan_and_schema_errors(tmp_path):
    store, _ = _small_store(tmp_path / "s")
    with h5py.File(store.path("s0"), "a") as f:
        f["fields/density"][0, 0, 0, 0] = np.nan
    with pytest.raises(StoreError, match=r"s0\.h5: field 'density' of simulation s0 fails its checksum"):
        store.read("s0", "density")  # the overwrite itself is caught first
    with h5py.File(store.path("s0"), "a") as f:
        del f["fields/density"].attrs["chunk_crc32"]  # as in a store written before checksums
    with pytest.raises(StoreError, match=r"s0\.h5: field 'density' holds NaN"):
        store.read("s0", "density")
    with h5py.File(store.path("s1"), "a") as f:
        del f["fields/velocity"]
    with pytest.raises(StoreError, match=r"s1\.h5 lacks field 'velocity'.*rerun"):
        store.open("s1")
    with pytest.raises(StoreError, match="not in this store"):
        store.require_fields(["momentum"])
    manifest = json.loads((store.root / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (store.root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match=r"schema_version 99.*regenerate"):
        FieldStore(store.root)
    with pytest.raises(StoreError, match=r"not a field store.*python -m lss_lightning\.mocks"):
        FieldStore(tmp_path / "nowhere")


def test_writer_refuses_nan_and_wrong_shapes(tmp_path):
    store, data = _small_store(tmp_path / "s")
    sim = store.simulation("s0")
    bad = dict(data["s0"], density=np.full((1, 8, 8, 8), np.inf, np.float32))
    with pytest.raises(StoreError, match="NaN or inf"):
        write_simulation(store.root, store.manifest, sim, bad)
    with pytest.raises(StoreError, match="shaped"):
        write_simulation(
            store.root, store.manifest, sim, dict(data["s0"], velocity=np.zeros((3, 4, 4, 4), np.float32))
        )
    store.validate(deep=True)  # the failed writes left the existing file intact


def test_mock_store_has_standard_names_and_physical_fields(tiny_store):
    assert set(tiny_store.fields) >= {"density", "velocity", "momentum", "density_rsd", "velocity_linear"}
    assert (
        tiny_store.fields["density_rsd"].space == "redshift"
        and tiny_store.fields["density_rsd"].los_axis == 2
    )
    delta = tiny_store.read("sim_00000", "density")
    assert abs(float(delta.mean())) < 1e-5  # mass conservation
    momentum = tiny_store.read("sim_00000", "momentum")
    velocity = tiny_store.read("sim_00000", "velocity")
    np.testing.assert_allclose(momentum, (1 + delta) * velocity, atol=1e-2 * np.abs(momentum).max())
    with h5py.File(tiny_store.path("sim_00000")) as f:
        assert 0.0 <= f["fields/velocity"].attrs["empty_fraction"] < 0.1
        assert f.attrs["seed"] == tiny_store.simulation("sim_00000")["seed"]


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    import lss_lightning.store.writer as store
    from lss_lightning.mocks.config import MockConfig
    from lss_lightning.mocks.generate import generate_store
    calls = {"n": 0}
    original = store._compression_kwargs
    def dying(compression):  # called once per dataset while a simulation file is open
        calls["n"] += 1
        if calls["n"] == int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)
        return original(compression)
    store._compression_kwargs = dying
    generate_store(MockConfig(store=sys.argv[1], n_sims=3, grid=8, box_size=32.0, power="eh",
                              fields=["density", "velocity"], device="cpu"), progress=False)
    """
)


def test_killed_generation_resumes_without_redoing_complete_simulations(tmp_path):
    root = tmp_path / "store"
    # fields per simulation = 2: die while writing the second dataset of the second simulation
    proc = subprocess.run([sys.executable, "-c", KILLER, str(root), "4"], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    assert (root / "sim_00000.h5").exists() and not (root / "sim_00001.h5").exists()
    partial = list(root.glob(".sim_00001.h5.*.tmp"))
    assert len(partial) == 1  # a half-written file exists, under a name no reader opens
    store = FieldStore(root)
    assert store.missing() == ["sim_00001", "sim_00002"]
    first = (root / "sim_00000.h5").stat()
    cfg = tiny_mock(root, n_sims=3, grid=8, box_size=32.0, fields=["density", "velocity"])
    store = generate_store(cfg, progress=False)
    assert store.missing() == [] and not list(root.glob("*.tmp"))
    again = (root / "sim_00000.h5").stat()
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)  # not redone
    # and the resumed simulations equal a fresh run's
    fresh = simulate(cfg, design(cfg)[1]).fields
    np.testing.assert_array_equal(store.read("sim_00001", "density"), fresh["density"])


def test_rerun_with_another_design_is_refused_and_growing_is_allowed(tmp_path):
    cfg = tiny_mock(tmp_path / "g", n_sims=2, grid=8, box_size=32.0, fields=["density"])
    generate_store(cfg, progress=False)
    with pytest.raises(StoreError, match="different grid"):
        generate_store(MockConfig(**{**cfg.__dict__, "grid": 16}), progress=False)
    with pytest.raises(StoreError, match="different generator"):
        generate_store(MockConfig(**{**cfg.__dict__, "seed": 7}), progress=False)
    grown = generate_store(MockConfig(**{**cfg.__dict__, "n_sims": 3}), progress=False)
    assert grown.simulation_ids == ["sim_00000", "sim_00001", "sim_00002"]


def test_latin_hypercube_design_writes_each_cosmology(tmp_path):
    cfg = tiny_mock(
        tmp_path / "lh",
        n_sims=3,
        grid=8,
        box_size=32.0,
        design="latin_hypercube",
        prior="quijote_nwlh",
        fields=["density"],
    )
    store = generate_store(cfg, progress=False)
    omegas = {store.cosmology(s).Omega_m for s in store.simulation_ids}
    assert len(omegas) == 3 and all(0.1 <= o <= 0.5 for o in omegas)
    with h5py.File(store.path("sim_00002")) as f:
        assert f.attrs["M_nu"] == pytest.approx(store.cosmology("sim_00002").M_nu)


def test_bad_generator_settings_are_rejected():
    with pytest.raises(ValueError, match="cannot make field 'pressure'"):
        MockConfig(store="x", fields=["pressure"])
    with pytest.raises(ValueError, match="design"):
        MockConfig(store="x", design="grid")
