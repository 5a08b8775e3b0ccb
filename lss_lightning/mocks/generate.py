"""Parameter design -> LPT simulations -> field store, resumably.

A design is either one cosmology with many seeds (``design=seeds``) or a seeded Latin hypercube over a
prior (``design=latin_hypercube``, one seed per cosmology). Simulation seeds come from
``numpy.random.SeedSequence(seed)``, so growing ``n_sims`` keeps the existing simulations (the manifest
is extended rather than rejected). A rerun skips every simulation whose file validates.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lss_lightning.config import resolve_device
from lss_lightning.cosmology import Cosmology, latin_hypercube
from lss_lightning.data.store import FieldStore, build_manifest, field_spec, fill_store, sim_file_name
from lss_lightning.fields.particles import (
    LINEAR_FIELDS,
    PARTICLE_FIELDS,
    ParticleGridder,
    add_linear_velocities,
    fields_to_paint,
)
from lss_lightning.mocks.ics import gaussian_field_k
from lss_lightning.mocks.lpt import lpt_particles

log = logging.getLogger(__name__)


@dataclass
class MockConfig:
    """Everything that defines a mock store (mirrors conf/mocks.yaml)."""

    store: str
    n_sims: int = 16
    grid: int = 64
    particles: int | None = None  # particles per side; None = grid
    box_size: float = 128.0  # Mpc/h
    redshift: float = 0.0
    seed: int = 42
    lpt_order: int = 2
    power: str = "camb"  # camb | eh
    design: str = "seeds"  # seeds | latin_hypercube
    prior: str | dict = "quijote_lh"
    cosmology: dict = field(default_factory=dict)  # overrides of the Quijote fiducial
    fields: list = field(default_factory=lambda: ["density", "velocity", "momentum", "density_rsd"])
    los_axis: int = 2
    linear_smoothing: float = 0.0  # Mpc/h, Gaussian smoothing of velocity_linear fields
    fixed_amplitude: bool = False
    compression: str | None = None
    chunk: int = 32
    device: str = "auto"

    def __post_init__(self):
        self.fields = list(self.fields)
        self.cosmology = dict(self.cosmology)
        if self.n_sims < 1 or self.grid < 4 or self.box_size <= 0:
            raise ValueError(
                f"need n_sims >= 1, grid >= 4, box_size > 0; got {self.n_sims}, {self.grid}, {self.box_size}"
            )
        if self.design not in ("seeds", "latin_hypercube"):
            raise ValueError(f"design must be 'seeds' or 'latin_hypercube', got {self.design!r}")
        if self.los_axis not in (0, 1, 2):
            raise ValueError(f"los_axis must be 0, 1 or 2, got {self.los_axis}")
        for name in self.fields:
            if name in LINEAR_FIELDS:
                continue
            if name.removesuffix("_rsd") not in PARTICLE_FIELDS:
                raise ValueError(
                    f"mocks cannot make field {name!r}; choose from {list(PARTICLE_FIELDS)} (+ '_rsd') "
                    f"and {list(LINEAR_FIELDS)}"
                )

    @property
    def n_particles(self) -> int:
        return self.particles or self.grid


def design(cfg: MockConfig) -> list[dict]:
    """The simulations of a store: id, file, seed and cosmological parameters."""
    seeds = np.random.SeedSequence(cfg.seed).generate_state(cfg.n_sims).tolist()
    fiducial = Cosmology.from_mapping(cfg.cosmology)
    if cfg.design == "seeds":
        cosmologies = [fiducial] * cfg.n_sims
    else:
        cosmologies = latin_hypercube(
            cfg.prior, cfg.n_sims, seed=cfg.seed, fiducial=fiducial if cfg.cosmology else None
        )
    return [
        {"id": f"sim_{i:05d}", "file": sim_file_name(f"sim_{i:05d}"), "seed": int(s), "params": c.to_dict()}
        for i, (s, c) in enumerate(zip(seeds, cosmologies, strict=True))
    ]


def simulate(cfg: MockConfig, sim: Mapping, device=None) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """Run one LPT simulation and grid it: (fields name -> (C, N, N, N) float32, dataset attributes)."""
    device = device or resolve_device(cfg.device)
    cosmo = Cosmology.from_mapping(sim["params"])
    z = cfg.redshift
    delta_k = gaussian_field_k(
        lambda k: cosmo.linear_power(k, z, cfg.power),
        cfg.n_particles,
        cfg.box_size,
        sim["seed"],
        fixed_amplitude=cfg.fixed_amplitude,
        device=device,
    )
    particles = lpt_particles(delta_k, cfg.box_size, cosmo, z, cfg.lpt_order)
    del delta_k
    gridder = ParticleGridder(
        cfg.grid,
        cfg.box_size,
        fields_to_paint(cfg.fields),
        a_h=cosmo.a_h(z),
        los_axis=cfg.los_axis,
        device=device,
    )
    gridder.add(particles.positions, particles.velocities)
    grids = gridder.finalise()
    attrs = {name: {"empty_fraction": frac} for name, frac in gridder.empty_fraction.items()}
    add_linear_velocities(grids, attrs, cfg.fields, cfg.box_size, cosmo.a_h_f(z), cfg.linear_smoothing)
    return {name: grids[name].cpu().numpy() for name in cfg.fields}, attrs


def _manifest(cfg: MockConfig, sims: list[dict]) -> dict:
    specs = {name: field_spec(name, cfg.los_axis) for name in cfg.fields}
    return build_manifest(
        source=f"mock-{cfg.lpt_order}lpt",
        box_size=cfg.box_size,
        grid=cfg.grid,
        redshift=cfg.redshift,
        los_axis=cfg.los_axis,
        fields=specs,
        simulations=sims,
        generator={
            k: getattr(cfg, k) for k in cfg.__dataclass_fields__ if k not in ("store", "n_sims", "device")
        },
    )


def generate_store(cfg: MockConfig, *, progress: bool = True) -> FieldStore:
    """Build (or finish) the store at ``cfg.store``; returns the validated store."""
    root = Path(cfg.store).expanduser().resolve()
    device = resolve_device(cfg.device)
    store = fill_store(
        root,
        _manifest(cfg, design(cfg)),
        lambda sim: simulate(cfg, sim, device),
        chunk=cfg.chunk,
        compression=cfg.compression,
        progress=progress,
        description=f"{cfg.n_particles}^3 {cfg.lpt_order}LPT -> {cfg.grid}^3 on {device}",
    )
    store.validate()
    return store
