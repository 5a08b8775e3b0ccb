"""Shared fixtures: a fast cosmology, tiny mock stores in temporary folders, torch thread settings."""

from __future__ import annotations

import pytest
import torch
from mock_stores import tiny_mock

from lss_lightning.cosmology import Cosmology

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def cosmology() -> Cosmology:
    """Quijote's fiducial cosmology (CAMB results are cached per process)."""
    return Cosmology()


def _store(tmp_path_factory, name: str, **settings):
    """A tiny mock store (``mock_stores.tiny_mock``) built once in a temporary folder."""
    from lss_lightning.mocks.generate import generate_store

    return generate_store(tiny_mock(tmp_path_factory.mktemp("stores") / name, **settings), progress=False)


EVERY_LPT_FIELD = ["density", "velocity", "momentum", "density_rsd", "velocity_rsd"]
EVERY_LPT_FIELD += ["velocity_linear", "velocity_linear_rsd"]


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory):
    """A 4-simulation 2LPT store, 16^3 cells in a 64 Mpc/h box, with every mock field (Eisenstein-Hu power)."""
    return _store(tmp_path_factory, "tiny", n_sims=4, grid=16, box_size=64.0, fields=EVERY_LPT_FIELD)


@pytest.fixture(scope="session")
def tiny_lh_store(tmp_path_factory):
    """A 6-simulation Latin-hypercube store (Quijote LH prior), 16^3 cells in a 64 Mpc/h box."""
    lh = {"design": "latin_hypercube", "prior": "quijote_lh", "fields": ["density", "density_rsd"]}
    return _store(tmp_path_factory, "tiny_lh", n_sims=6, grid=16, box_size=64.0, **lh)


WU2023_BINS = [[7e12, 1e13], [1e13, 1.4e13], [1.4e13, 2e13], [2e13, 3e13], [3e13, 4.5e13], [4.5e13, None]]
HALO_FIELDS = [
    "density",
    "halos",
    "halos_rsd",
    "halo_velocity_rsd",
    "velocity_linear_halos_rsd",
    "halo_mass_rsd",
]


@pytest.fixture(scope="session")
def tiny_halo_store(tmp_path_factory):
    """A 4-simulation particle-mesh store with FoF haloes: 32^3 particles (m_p = 7e11 Msun/h) in 64 Mpc/h,
    16^3 cells, six mass bins from 10 particles up (Wu 2023's channels), halo velocities."""
    pm = {"solver": "pm", "pm": {"steps": 5}, "fof": {"min_particles": 10}, "mass_bins": WU2023_BINS}
    box = {"n_sims": 4, "grid": 16, "particles": 32, "box_size": 64.0}
    return _store(tmp_path_factory, "tiny_halos", **box, **pm, fields=HALO_FIELDS)


@pytest.fixture
def one_thread():
    """Tiny models train faster on one thread, and do not stall when other jobs load the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
