"""Quijote simulations -> field store: snapshots, FoF and Rockstar haloes, parameter tables, 3D_cubes.

``python -m lss_lightning.data.quijote`` converts a set (see conf/quijote.yaml); the readers below
work on their own too. Units follow the project: Mpc/h, km/s (peculiar), Msun/h.
"""

from lss_lightning.data.quijote.convert import (
    QuijoteConfig,
    SimulationConverter,
    convert_store,
    design,
    grid_snapshot,
    plan,
    shard_ids,
)
from lss_lightning.data.quijote.cubes import read_density_cube
from lss_lightning.data.quijote.errors import QuijoteError
from lss_lightning.data.quijote.fof import read_fof, read_group_tab
from lss_lightning.data.quijote.layout import ROOT_ENV_VAR, STANDARD_REDSHIFTS, QuijoteLayout, resolve_root
from lss_lightning.data.quijote.params import (
    QUIJOTE_FIDUCIAL,
    read_parameter_table,
    read_seed,
    simulation_parameters,
)
from lss_lightning.data.quijote.rockstar import find_rockstar_file, read_rockstar
from lss_lightning.data.quijote.snapshots import GadgetSnapshot, ParticleChunk, SnapshotHeader, read_header

__all__ = [
    "QUIJOTE_FIDUCIAL",
    "ROOT_ENV_VAR",
    "STANDARD_REDSHIFTS",
    "GadgetSnapshot",
    "ParticleChunk",
    "QuijoteConfig",
    "QuijoteError",
    "QuijoteLayout",
    "SimulationConverter",
    "SnapshotHeader",
    "convert_store",
    "design",
    "find_rockstar_file",
    "grid_snapshot",
    "plan",
    "read_density_cube",
    "read_fof",
    "read_group_tab",
    "read_header",
    "read_parameter_table",
    "read_rockstar",
    "read_seed",
    "resolve_root",
    "shard_ids",
    "simulation_parameters",
]
