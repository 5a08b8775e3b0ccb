"""Quijote simulations -> field store: one HDF5 file per simulation, sharded, resumable, with progress.

Per simulation the converter streams the snapshot file by file into CIC grids (density, momentum and
mass-weighted velocity, real and redshift space; see ``lss_lightning.fields.particles``), grids a FoF or
Rockstar catalogue (mass-bin channels, halo velocity; ``lss_lightning.fields.tracers``, the code the mocks
use) and stores the catalogue itself in the file's ``halos/`` group, or reads a precomputed ``3D_cubes`` density.
``velocity_linear[_rsd]`` is the linear-theory velocity of ``density[_rsd]`` (as in the mock stores).
Shard k of K converts simulations k, k + K, ...; every shard writes the same manifest, so K jobs
(e.g. a Hydra multirun with the joblib or submitit launcher) fill one store, and any rerun redoes
only what is missing.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from lss_lightning.config import resolve_device
from lss_lightning.cosmology import Cosmology
from lss_lightning.data.quijote.cubes import CUBE_MAS, read_density_cube
from lss_lightning.data.quijote.errors import QuijoteError
from lss_lightning.data.quijote.fof import read_fof
from lss_lightning.data.quijote.layout import QuijoteLayout, resolve_redshift, resolve_root
from lss_lightning.data.quijote.params import read_seed, simulation_parameters
from lss_lightning.data.quijote.rockstar import find_rockstar_file, read_rockstar
from lss_lightning.data.quijote.snapshots import DEFAULT_CHUNK, GadgetSnapshot
from lss_lightning.fields.particles import (
    LINEAR_FIELDS,
    PARTICLE_FIELDS,
    ParticleGridder,
    fields_to_paint,
)
from lss_lightning.fields.tracers import (
    BoxGrid,
    expand_halo_fields,
    is_catalogue_field,
    is_galaxy_field,
    store_fields,
)
from lss_lightning.galaxies import HODParameters, check_hod, galaxy_seed, galaxy_settings, populate
from lss_lightning.store.builder import StorePlan, build_store
from lss_lightning.store.reader import FieldStore
from lss_lightning.store.schema import HaloCatalogue, field_spec, parse_mass_bins, sim_file_name
from lss_lightning.store.writer import SimulationProducts, StepReporter

log = logging.getLogger(__name__)
HALO_FINDERS = ("fof", "rockstar")
DENSITY_SOURCES = ("snapshot", "cube")
# config entries that do not change what a store holds (left out of the manifest's generator record)
RUN_ONLY = (
    "store",
    "root",
    "shard",
    "num_shards",
    "chunk_particles",
    "device",
    "threads",
    "first",
    "n_sims",
    "indices",
)


@dataclass
class QuijoteConfig:
    """Everything that defines a Quijote store (mirrors conf/quijote.yaml)."""

    store: str
    root: str | None = None  # None: $QUIJOTE_ROOT
    set_name: str = "latin_hypercube"
    folder_format: str = "{index}"
    first: int = 0
    n_sims: int = 16
    indices: list | None = None  # explicit simulation indices (overrides first/n_sims)
    redshift: float | None = 0.0
    # None: from redshift via Quijote's table (4: z = 0, 3: 0.5, 2: 1, 1: 2, 0: 3)
    snapnum: int | None = None
    box_size: float = 1000.0  # Mpc/h, checked against each snapshot header
    grid: int = 128
    fields: list = field(default_factory=lambda: ["density", "velocity", "momentum", "density_rsd"])
    los_axis: int = 2
    density_source: str = "snapshot"  # snapshot | cube (3D_cubes, real-space density only)
    cube_mas: str = "CIC"  # CIC | PCS, which 3D_cubes file to read
    particle_types: list = field(default_factory=lambda: [1])  # 1 = CDM, 2 = neutrinos (nwLH, Mnu sets)
    chunk_particles: int = DEFAULT_CHUNK
    halo_finder: str = "fof"
    # [[lo, hi], ...] in Msun/h, lo <= M < hi; hi None = no upper limit
    mass_bins: list = field(default_factory=lambda: [[1.0e13, None]])
    rockstar_mass: str = "Mvir"
    hosts_only: bool = True
    halo_catalogue: bool | None = (
        None  # store the catalogue in halos/; None: when halo or galaxy fields are made
    )
    # HOD (lss_lightning.galaxies, as the mocks' hod block): populate the haloes (every halo of the catalogue,
    # not only the mass bins), stored in galaxies/ and as galaxies[_rsd], galaxy_velocity[_rsd]; None: no galaxies
    hod: dict | None = None
    params_file: str | None = None
    cosmology: dict = field(default_factory=dict)
    check_header_cosmology: bool = True
    linear_smoothing: float = 0.0  # Mpc/h, Gaussian smoothing of velocity_linear fields
    layout: dict = field(default_factory=dict)  # overrides of layout.DEFAULT_TEMPLATES
    shard: int = 0
    num_shards: int = 1
    compression: str | None = None
    chunk: int = 32
    device: str = "cpu"
    threads: int | None = None

    def __post_init__(self):
        self.fields = expand_halo_fields(list(self.fields), len(self.mass_bins or []))
        self.particle_types = [int(t) for t in self.particle_types]
        self.cosmology, self.layout = dict(self.cosmology), dict(self.layout)
        self.snapnum, self.redshift = resolve_redshift(self.snapnum, self.redshift)
        checks = [
            (
                self.grid >= 4 and self.box_size > 0,
                f"need grid >= 4 and box_size > 0, got {self.grid}, {self.box_size}",
            ),
            (self.los_axis in (0, 1, 2), f"los_axis must be 0, 1 or 2, got {self.los_axis}"),
            (
                0 <= self.shard < self.num_shards,
                f"need 0 <= shard < num_shards, got {self.shard}, {self.num_shards}",
            ),
            (self.density_source in DENSITY_SOURCES, f"density_source must be one of {DENSITY_SOURCES}"),
            (self.halo_finder in HALO_FINDERS, f"halo_finder must be one of {HALO_FINDERS}"),
            (self.cube_mas in CUBE_MAS, f"cube_mas must be one of {CUBE_MAS} (Quijote's file names)"),
            (self.indices is not None or self.n_sims >= 1, "need n_sims >= 1 or a list of indices"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        parse_mass_bins(self.mass_bins)
        self.hod = None if self.hod is None else check_hod(self.hod).to_dict()
        self._check_fields()
        if self.density_source == "cube":
            painted = [f for f in self.particle_fields() if f != "density"]
            if painted:
                raise ValueError(
                    f"density_source=cube gives only the real-space density; {painted} need density_source=snapshot"
                )

    def _check_fields(self) -> None:
        for name in self.fields:
            if is_galaxy_field(name) and self.hod is None:
                raise ValueError(
                    f"field {name!r} needs galaxies: give an hod block (hod={{}}: the default HOD)"
                )
            if not (
                name.removesuffix("_rsd") in PARTICLE_FIELDS
                or name in LINEAR_FIELDS
                or is_catalogue_field(name)
                or is_galaxy_field(name)
            ):
                raise ValueError(
                    f"cannot make field {name!r} from Quijote; choose from {list(PARTICLE_FIELDS)} (+ '_rsd'), "
                    f"{list(LINEAR_FIELDS)}, 'halos', 'halos_rsd', halos_m<i>[_rsd], halo_velocity[_rsd], "
                    "velocity_linear_halos[_rsd], or with an hod block galaxies[_rsd], galaxy_velocity[_rsd]"
                )

    @property
    def simulation_indices(self) -> list[int]:
        return (
            [int(i) for i in self.indices]
            if self.indices is not None
            else list(range(self.first, self.first + self.n_sims))
        )

    def particle_fields(self) -> list[str]:
        """Fields painted from particles (incl. the density behind a requested linear velocity)."""
        return fields_to_paint(self.fields)

    def halo_fields(self) -> list[str]:
        return [f for f in self.fields if is_catalogue_field(f)]

    @property
    def stores_catalogue(self) -> bool:
        """halos/ is stored: asked for, or implied by halo fields or galaxies (whose hosts index it)."""
        if self.hod is not None:
            return True
        return bool(self.halo_fields()) if self.halo_catalogue is None else bool(self.halo_catalogue)

    def halo_settings(self) -> dict | None:
        """The manifest's ``halos`` entry (None: no catalogue stored)."""
        if not self.stores_catalogue:
            return None
        if self.halo_finder == "fof":
            return {"finder": "fof", "source": "quijote"}
        return {"finder": "rockstar", "mass_column": self.rockstar_mass, "hosts_only": self.hosts_only}

    def field_mas(self, name: str) -> str:
        return self.cube_mas.lower() if name == "density" and self.density_source == "cube" else "cic"


def design(cfg: QuijoteConfig, layout: QuijoteLayout) -> list[dict]:
    """The simulations of the store: id, file, seed, parameters, and where they came from."""
    indices = cfg.simulation_indices
    params = simulation_parameters(layout, indices, params_file=cfg.params_file, cosmology=cfg.cosmology)
    sims = []
    for index, p in zip(indices, params, strict=True):
        sim_id = f"sim_{index:05d}"
        sims.append(
            {
                "id": sim_id,
                "file": sim_file_name(sim_id),
                "seed": read_seed(layout.ics_dir(index)),
                "params": p,
                "quijote_set": cfg.set_name,
                "quijote_index": index,
                "quijote_folder": layout.folder(index),
                **({} if cfg.hod is None else {"hod": dict(cfg.hod)}),
            }
        )
    return sims


def plan(cfg: QuijoteConfig, sims: list[dict]) -> StorePlan:
    """The store this conversion builds: its fields (with their mass assignment), the set's simulations."""
    specs = {name: field_spec(name, cfg.los_axis, mas=cfg.field_mas(name)) for name in cfg.fields}
    generator = {k: getattr(cfg, k) for k in cfg.__dataclass_fields__ if k not in RUN_ONLY}
    if cfg.hod is None:
        del generator["hod"]  # stores converted before galaxies keep reconciling
    geometry = (cfg.box_size, cfg.grid, cfg.redshift, cfg.los_axis)
    source, halos, layout = f"quijote/{cfg.set_name}", cfg.halo_settings(), (cfg.chunk, cfg.compression)
    galaxies = galaxy_settings(cfg.hod, None)
    return StorePlan(cfg.store, source, *geometry, specs, sims, generator, halos, *layout, galaxies=galaxies)


def grid_snapshot(
    snapshot: GadgetSnapshot,
    fields: list[str],
    *,
    grid: int,
    a_h: float,
    los_axis: int = 2,
    particle_types: Sequence[int] = (1,),
    chunk: int = DEFAULT_CHUNK,
    device=None,
) -> tuple[dict[str, torch.Tensor], dict[str, dict]]:
    """Stream a snapshot into the requested particle fields: (name -> (C, N, N, N) tensor, attributes)."""
    gridder = ParticleGridder(
        grid, snapshot.header.box_size, fields, a_h=a_h, los_axis=los_axis, device=device
    )
    for part in snapshot.iter_particles(particle_types, chunk):
        masses = part.masses if np.isscalar(part.masses) else torch.from_numpy(part.masses)
        gridder.add(torch.from_numpy(part.positions), torch.from_numpy(part.velocities), masses)
    grids = gridder.finalise()
    common = {"particle_types": list(particle_types), "n_particles": gridder.count}
    attrs = {name: dict(common) for name in fields}
    for name, frac in gridder.empty_fraction.items():
        attrs[name]["empty_fraction"] = frac
    return grids, attrs


class SimulationConverter:
    """Turns one Quijote simulation into the fields of the store (the ``produce`` of ``fill_store``)."""

    def __init__(self, cfg: QuijoteConfig, layout: QuijoteLayout):
        self.cfg, self.layout = cfg, layout
        self.bins = parse_mass_bins(cfg.mass_bins)
        self.device = resolve_device(cfg.device)

    def __call__(self, sim: Mapping, report: StepReporter | None = None) -> SimulationProducts:
        cfg, index = self.cfg, int(sim["quijote_index"])
        cosmo = Cosmology.from_mapping(sim["params"])
        redshift = cfg.redshift
        grids: dict[str, torch.Tensor] = {}
        attrs: dict[str, dict] = {}
        painted = cfg.particle_fields()
        if cfg.density_source == "cube" and painted:
            delta, cube_attrs = read_density_cube(
                self.layout.cube_path(index, cfg.grid, cfg.cube_mas, redshift), cfg.grid
            )
            grids["density"], attrs["density"] = torch.from_numpy(delta), cube_attrs
        elif painted:
            snapshot = GadgetSnapshot(self.layout.snapshot_base(index, cfg.snapnum))
            redshift = self._check_header(snapshot, cosmo)
            new, new_attrs = grid_snapshot(
                snapshot,
                painted,
                grid=cfg.grid,
                a_h=cosmo.a_h(redshift),
                los_axis=cfg.los_axis,
                particle_types=cfg.particle_types,
                chunk=cfg.chunk_particles,
                device=self.device,
            )
            grids.update(new)
            attrs.update(new_attrs)
        catalogue = self._catalogue(index) if cfg.stores_catalogue or cfg.halo_fields() else None
        galaxies = self._galaxies(sim, catalogue, cosmo, redshift)
        a_h, a_h_f = cosmo.a_h(redshift), cosmo.a_h_f(redshift)
        box = BoxGrid(cfg.grid, cfg.box_size, a_h, a_h_f, cfg.los_axis, cfg.linear_smoothing)
        try:
            fields, attrs = store_fields(
                grids, attrs, cfg.fields, box, catalogue, self.bins, galaxies=galaxies
            )
        except ValueError as e:  # an empty mass bin: a problem of this Quijote set's haloes
            raise QuijoteError(str(e)) from e
        return SimulationProducts(
            fields,
            {k: v for k, v in attrs.items() if k in fields},
            catalogue if cfg.stores_catalogue else None,
            galaxies,
        )

    def _galaxies(self, sim: Mapping, catalogue: HaloCatalogue | None, cosmo: Cosmology, redshift: float):
        """The HOD galaxies of the simulation's haloes (its entry's ``hod``, the mocks' seeding), or None."""
        if "hod" not in sim:
            return None
        hod = HODParameters.from_mapping(sim["hod"])
        seed = galaxy_seed(sim["seed"])
        return populate(
            catalogue, hod, box_size=self.cfg.box_size, redshift=redshift, omega_m=cosmo.Omega_m, rng=seed
        )

    def _check_header(self, snapshot: GadgetSnapshot, cosmo: Cosmology) -> float:
        """The snapshot's own redshift, after checking box, redshift and (optionally) cosmology against the store."""
        h, first = snapshot.header, snapshot.files[0]
        if not math.isclose(h.box_size, self.cfg.box_size, rel_tol=1e-5):
            raise QuijoteError(
                f"{first}: BoxSize is {h.box_size} Mpc/h, the store expects box_size={self.cfg.box_size}; set box_size"
            )
        if abs(h.redshift - self.cfg.redshift) > 1e-3 * (1 + self.cfg.redshift):
            raise QuijoteError(
                f"{first}: Redshift is {h.redshift:.4f}, the store expects {self.cfg.redshift} (snapnum "
                f"{self.cfg.snapnum}); set redshift= and snapnum= to match this set's numbering"
            )
        if self.cfg.check_header_cosmology and abs(h.hubble - cosmo.h) > 1e-3:
            raise QuijoteError(
                f"{first}: HubbleParam is {h.hubble}, the parameter table gives h = {cosmo.h}; the table's rows do not "
                "match the simulation folders (wrong params_file or set?), or set check_header_cosmology=false"
            )
        if self.cfg.check_header_cosmology and abs(h.omega_m - cosmo.Omega_m) > 1e-3:
            log.warning(
                "%s: Omega0 = %s but the parameters say Omega_m = %s", first, h.omega_m, cosmo.Omega_m
            )
        return h.redshift

    def _catalogue(self, index: int) -> HaloCatalogue:
        cfg = self.cfg
        if cfg.halo_finder == "fof":
            return read_fof(self.layout.fof_base(index, cfg.snapnum), cfg.redshift, cfg.box_size)
        path = find_rockstar_file(self.layout.rockstar_dir(index), cfg.snapnum)
        catalogue, a = read_rockstar(
            path, cfg.box_size, mass_column=cfg.rockstar_mass, hosts_only=cfg.hosts_only
        )
        if a is not None and abs(1 / a - 1 - cfg.redshift) > 1e-3 * (1 + cfg.redshift):
            raise QuijoteError(f"{path}: '#a = {a}' is z = {1 / a - 1:.4f}, the store expects {cfg.redshift}")
        return catalogue


def shard_ids(sims: list[dict], shard: int, num_shards: int) -> list[str]:
    """Simulations of one shard: every num_shards-th, starting at shard."""
    return [s["id"] for s in sims[shard::num_shards]]


def check_sources(cfg: QuijoteConfig, layout: QuijoteLayout) -> None:
    """Fail before any work if a whole kind of input is absent for this set."""
    if cfg.particle_fields():
        layout.require_set_folder("cube" if cfg.density_source == "cube" else "snapshot")
    if cfg.halo_fields() or cfg.stores_catalogue:
        layout.require_set_folder("fof" if cfg.halo_finder == "fof" else "rockstar")


def convert_store(cfg: QuijoteConfig, *, progress: bool = True) -> FieldStore:
    """Convert this shard's simulations into ``cfg.store``; returns the store (other shards may be pending)."""
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    layout = QuijoteLayout(resolve_root(cfg.root), cfg.set_name, cfg.folder_format, cfg.layout)
    check_sources(cfg, layout)
    sims = design(cfg, layout)
    mine = shard_ids(sims, cfg.shard, cfg.num_shards)
    text, shard = f"Quijote {cfg.set_name} z={cfg.redshift:g} -> {cfg.grid}^3", (cfg.shard, cfg.num_shards)
    produce = SimulationConverter(cfg, layout)
    store = build_store(plan(cfg, sims), produce, only=mine, shard=shard, description=text, progress=progress)
    for sim_id in mine:
        store.open(sim_id).close()
    return store
