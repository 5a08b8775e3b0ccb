"""Parameter design -> simulations (2LPT, or particle mesh + FoF haloes) -> field store, resumably.

A design is either one cosmology with many seeds (``design=seeds``) or a seeded Latin hypercube over a
prior (``design=latin_hypercube``, one seed per cosmology). Simulation seeds come from
``numpy.random.SeedSequence(seed)``, so growing ``n_sims`` keeps the existing simulations (the manifest
is extended rather than rejected). A rerun skips every simulation whose file validates; ``shard`` k of
``num_shards`` K makes simulations k, k + K, ..., so K jobs fill one store side by side.

Solvers: ``lpt`` moves particles from the lattice straight to the output redshift (1LPT or 2LPT);
``pm`` starts from 2LPT at ``pm.a_start`` and integrates gravity with the particle-mesh kick-drift-kick
of ``mocks/pm.py``, then finds friends-of-friends haloes (``mocks/halos.py``), stored in each file's
``halos/`` group and gridded into halo fields by ``fields/catalogue.py``. With a ``lightcone`` block the
particle mesh instead writes FoF haloes at several redshifts and the store holds one field, ``lightcone``:
the histogram of the haloes on the observer's past light cone in (RA, DEC, observed z) (``mocks/lightcone.py``).
With ``lightcone.cones_per_box`` K > 1 each particle-mesh run ("box") gives K cones along disjoint axis
directions, each its own simulation entry ``sim_<box>_c<k>`` recording ``box``, ``observer`` and
``direction`` (``n_sims`` counts boxes; the store holds n_sims x K cones; a box runs once for all its
cones, and shards split by box). The particle-mesh initial
conditions are the z = 0 linear P(k) scaled back by the growth factor D(a_start)^2 (so linear growth
brings them exactly to the z = 0 spectrum); the LPT solver uses CAMB's P(k) at the output redshift.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf

from lss_lightning.config import resolve_device
from lss_lightning.cosmology import Cosmology, latin_hypercube
from lss_lightning.data.store import (
    LIGHTCONE_FIELD,
    FieldStore,
    SimulationProducts,
    StepReporter,
    build_manifest,
    field_spec,
    fill_store,
    sim_file_name,
)
from lss_lightning.fields.particles import (
    LINEAR_FIELDS,
    PARTICLE_FIELDS,
    ParticleGridder,
    add_linear_velocities,
    fields_to_paint,
)
from lss_lightning.fields.tracers import (
    HaloCatalogue,
    catalogue_fields,
    expand_halo_fields,
    is_catalogue_field,
    parse_mass_bins,
)
from lss_lightning.mocks.fof import friends_of_friends, particle_mass
from lss_lightning.mocks.ics import gaussian_field_k
from lss_lightning.mocks.lightcone import LightconeSettings, histogram, place_on_lightcone
from lss_lightning.mocks.lpt import Particles, lpt_particles
from lss_lightning.mocks.pm import PMSettings, PMState, evolve

log = logging.getLogger(__name__)
SOLVERS = ("lpt", "pm")
RUN_ONLY = ("store", "n_sims", "device", "shard", "num_shards")  # settings that do not change the data


@dataclass(frozen=True)
class FoFSettings:
    """Friends-of-friends settings (the ``fof`` block of conf/mock/default.yaml)."""

    linking_length: float = 0.2  # of the mean interparticle separation
    min_particles: int = 20

    def __post_init__(self):
        if not 0 < self.linking_length < 1 or int(self.min_particles) < 2:
            raise ValueError(
                f"need 0 < fof.linking_length < 1 and fof.min_particles >= 2, "
                f"got {self.linking_length}, {self.min_particles}"
            )


@dataclass
class MockConfig:
    """Everything that defines a mock store (mirrors conf/mock/default.yaml)."""

    store: str
    n_sims: int = 16
    grid: int = 64
    particles: int | None = None  # particles per side; None = grid
    box_size: float = 128.0  # Mpc/h
    redshift: float = 0.0
    seed: int = 42
    solver: str = "pm"  # lpt | pm
    lpt_order: int = 2  # the LPT solver's order, and the order of the PM initial conditions
    pm: dict = field(default_factory=dict)  # PMSettings: steps, mesh_factor, a_start, stepping
    fof: dict = field(default_factory=dict)  # FoFSettings: linking_length, min_particles
    # LightconeSettings (ra, dec, z, snapshots, margin, mass_min, observer, rsd): a light-cone store instead
    lightcone: dict | None = None
    mass_bins: list | None = field(default_factory=lambda: [[1.0e13, None]])  # Msun/h, [lo, hi)
    allow_empty_bins: bool = False  # an empty mass bin gives a channel of zeros instead of an error
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
    shard: int = 0
    num_shards: int = 1

    def __post_init__(self):
        for name in self.__dataclass_fields__:  # Hydra hands over DictConfig / ListConfig: plain containers
            value = getattr(self, name)
            if isinstance(value, DictConfig | ListConfig):
                setattr(self, name, OmegaConf.to_container(value, resolve=True))
        self.pm, self.fof, self.cosmology = dict(self.pm), dict(self.fof), dict(self.cosmology)
        self.lightcone = dict(self.lightcone) if self.lightcone else None
        self.mass_bins = [list(b) for b in self.mass_bins] if self.mass_bins else None
        self.fields = expand_halo_fields(list(self.fields), len(self.mass_bins or []))
        if self.n_sims < 1 or self.grid < 4 or self.box_size <= 0:
            raise ValueError(
                f"need n_sims >= 1, grid >= 4, box_size > 0; got {self.n_sims}, {self.grid}, {self.box_size}"
            )
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        if self.lpt_order not in (1, 2):
            raise ValueError(f"lpt_order must be 1 or 2, got {self.lpt_order}")
        if self.design not in ("seeds", "latin_hypercube"):
            raise ValueError(f"design must be 'seeds' or 'latin_hypercube', got {self.design!r}")
        if self.los_axis not in (0, 1, 2):
            raise ValueError(f"los_axis must be 0, 1 or 2, got {self.los_axis}")
        if not self.redshift >= 0:  # also NaN; a = 1 / (1 + z) needs z > -1, and a mock ends today or before
            raise ValueError(
                f"redshift must be >= 0 (the output of a mock: z = 0 today, earlier times z > 0), got {self.redshift}"
            )
        if not 0 <= self.shard < self.num_shards:
            raise ValueError(f"need 0 <= shard < num_shards, got {self.shard}, {self.num_shards}")
        pm, _, _ = self.pm_settings, self.fof_settings, self.bins  # each raises on bad values
        if self.lightcone is not None:
            cone = self.lightcone_settings
            if self.solver != "pm" or self.fields != [LIGHTCONE_FIELD]:
                raise ValueError(
                    f"a lightcone store needs solver=pm and fields=[{LIGHTCONE_FIELD}] (the histogram has grid^3 "
                    f"cells over RA, DEC, z); got solver={self.solver}, fields={self.fields}"
                )
            pm.scale_factors(1.0 / (1.0 + cone.snapshot_redshifts()[0]))
            return
        if LIGHTCONE_FIELD in self.fields:
            raise ValueError(
                f"field {LIGHTCONE_FIELD!r} needs a lightcone block (e.g. +lightcone.snapshots=6)"
            )
        if self.solver == "pm":
            pm.scale_factors(1.0 / (1.0 + self.redshift))  # a_start must come before the output
        for name in self.fields:
            if name in LINEAR_FIELDS or name.removesuffix("_rsd") in PARTICLE_FIELDS:
                continue
            if not is_catalogue_field(name):
                raise ValueError(
                    f"mocks cannot make field {name!r}; choose from {list(PARTICLE_FIELDS)} (+ '_rsd'), "
                    f"{list(LINEAR_FIELDS)}, and with solver=pm: halos, halos_rsd, halo_velocity[_rsd], "
                    "halo_mass[_rsd], velocity_linear_halos[_rsd]"
                )
            if self.solver != "pm":
                raise ValueError(
                    f"field {name!r} needs haloes, which only the particle mesh makes: set solver=pm"
                )

    @property
    def n_particles(self) -> int:
        return self.particles or self.grid

    @property
    def pm_settings(self) -> PMSettings:
        return _settings(PMSettings, self.pm, "pm")

    @property
    def fof_settings(self) -> FoFSettings:
        return _settings(FoFSettings, self.fof, "fof")

    @property
    def bins(self) -> list:
        return parse_mass_bins(self.mass_bins)

    @property
    def lightcone_settings(self) -> LightconeSettings | None:
        return None if self.lightcone is None else _settings(LightconeSettings, self.lightcone, "lightcone")

    @property
    def store_redshift(self) -> float:
        """The redshift recorded in the store: the output's, or the middle of a light cone's range."""
        return self.redshift if self.lightcone is None else float(np.mean(self.lightcone_settings.z))

    def halo_fields(self) -> list[str]:
        return [f for f in self.fields if is_catalogue_field(f)]

    def describe(self) -> str:
        solver = (
            f"PM {self.pm_settings.steps} steps, mesh {self.pm_settings.mesh_factor * self.n_particles}^3"
            if self.solver == "pm"
            else f"{self.lpt_order}LPT"
        )
        return f"{self.n_particles}^3 particles, {solver} -> {self.grid}^3"


def _settings(kind, values: Mapping, block: str):
    unknown = sorted(set(values) - set(kind.__dataclass_fields__))
    if unknown:
        raise ValueError(f"unknown {block} settings {unknown}; known: {sorted(kind.__dataclass_fields__)}")
    return kind(**values)


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
    boxes = [
        {"id": f"sim_{i:05d}", "file": sim_file_name(f"sim_{i:05d}"), "seed": int(s), "params": c.to_dict()}
        for i, (s, c) in enumerate(zip(seeds, cosmologies, strict=True))
    ]
    cone = cfg.lightcone_settings
    if cone is None or cone.cones_per_box == 1:
        return boxes  # one entry per box, as stores made before cones_per_box
    return [
        {
            **box,
            "id": f"{box['id']}_c{k}",
            "file": sim_file_name(f"{box['id']}_c{k}"),
            "box": b,
            "observer": list(cone.observer),
            "direction": direction,
        }
        for b, box in enumerate(boxes)
        for k, direction in enumerate(cone.directions)
    ]


# -- one simulation, stage by stage (bench/bench_pm.py times each) ---------------------------------------
def initial_particles(cfg: MockConfig, cosmo: Cosmology, seed: int, device) -> tuple[Particles, float]:
    """Particles from the lattice by LPT: at the output redshift (lpt) or at pm.a_start (pm); returns (particles, a)."""
    if cfg.solver == "pm":
        a = cfg.pm_settings.a_start
        growth = float(cosmo.growth_factor(1.0 / a - 1.0))
        power = lambda k: cosmo.linear_power(k, 0.0, cfg.power) * growth**2  # noqa: E731
    else:
        a = 1.0 / (1.0 + cfg.redshift)
        power = lambda k: cosmo.linear_power(k, cfg.redshift, cfg.power)  # noqa: E731
    delta_k = gaussian_field_k(
        power, cfg.n_particles, cfg.box_size, seed, fixed_amplitude=cfg.fixed_amplitude, device=device
    )
    return lpt_particles(delta_k, cfg.box_size, cosmo, 1.0 / a - 1.0, cfg.lpt_order), a


def run_solver(
    cfg: MockConfig, cosmo: Cosmology, particles: Particles, on_step: StepReporter | None = None
) -> Particles:
    """Particles at the output redshift: unchanged for lpt, evolved by the particle mesh for pm."""
    if cfg.solver != "pm":
        return particles
    report = (
        None if on_step is None else (lambda i, n, a: on_step(i, n, f"PM step {i}/{n}, z = {1 / a - 1:.2f}"))
    )
    state = evolve(
        particles.positions,
        particles.velocities,
        cosmo,
        cfg.box_size,
        cfg.n_particles,
        1.0 / (1.0 + cfg.redshift),
        cfg.pm_settings,
        on_step=report,
    )
    return Particles(positions=state.positions, velocities=state.velocities())


def find_haloes(cfg: MockConfig, cosmo: Cosmology, particles: Particles) -> HaloCatalogue:
    """FoF haloes of the evolved particles."""
    catalogue, _ = friends_of_friends(
        particles.positions,
        particles.velocities,
        cfg.box_size,
        particle_mass=particle_mass(cosmo, cfg.box_size, cfg.n_particles),
        mean_separation=cfg.box_size / cfg.n_particles,
        linking_length=cfg.fof_settings.linking_length,
        min_particles=cfg.fof_settings.min_particles,
    )
    return catalogue


def paint_fields(
    cfg: MockConfig, cosmo: Cosmology, particles: Particles, haloes: HaloCatalogue | None, device
) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """The store's fields from particles (and haloes): name -> (C, N, N, N) float32, dataset attributes."""
    z = cfg.redshift
    gridder = ParticleGridder(
        cfg.grid,
        cfg.box_size,
        fields_to_paint(cfg.fields),
        a_h=cosmo.a_h(z),
        los_axis=cfg.los_axis,
        device=device,
    )
    if gridder.fields:
        gridder.add(particles.positions, particles.velocities)
        grids = gridder.finalise()
    else:
        grids = {}
    attrs = {name: {"empty_fraction": frac} for name, frac in getattr(gridder, "empty_fraction", {}).items()}
    add_linear_velocities(grids, attrs, cfg.fields, cfg.box_size, cosmo.a_h_f(z), cfg.linear_smoothing)
    fields = {name: grids[name].cpu().numpy() for name in cfg.fields if name in grids}
    if cfg.halo_fields():
        halo_fields, halo_attrs = catalogue_fields(
            haloes,
            cfg.bins,
            cfg.halo_fields(),
            grid=cfg.grid,
            box_size=cfg.box_size,
            a_h=cosmo.a_h(z),
            a_h_f=cosmo.a_h_f(z),
            los_axis=cfg.los_axis,
            device=device,
            allow_empty=cfg.allow_empty_bins,
            smoothing=cfg.linear_smoothing,
        )
        fields.update(halo_fields)
        attrs.update(halo_attrs)
    return fields, attrs


def lightcone_snapshots(
    cfg: MockConfig,
    cosmo: Cosmology,
    particles: Particles,
    report: StepReporter | None = None,
    find: Callable[[MockConfig, Cosmology, Particles], HaloCatalogue] = find_haloes,
) -> list[tuple[float, HaloCatalogue]]:
    """Particle mesh down to the cone's nearest edge; haloes by ``find`` at each snapshot redshift of
    the cone, as (z_snapshot, catalogue) pairs."""
    redshifts = cfg.lightcone_settings.snapshot_redshifts()
    catalogues = []

    def at_output(state: PMState) -> None:
        evolved = Particles(positions=state.positions, velocities=state.velocities())
        z = float(redshifts[np.argmin(np.abs(redshifts - (1.0 / state.a - 1.0)))])
        catalogues.append((z, find(cfg, cosmo, evolved)))

    step = None if report is None else (lambda i, n, a: report(i, n, f"PM step {i}/{n}, z = {1 / a - 1:.2f}"))
    outputs = 1.0 / (1.0 + redshifts)
    evolve(
        particles.positions,
        particles.velocities,
        cosmo,
        cfg.box_size,
        cfg.n_particles,
        float(outputs.max()),
        cfg.pm_settings,
        on_step=step,
        outputs=outputs,
        on_output=at_output,
    )
    return catalogues


def lightcone_histograms(
    cfg: MockConfig,
    cosmo: Cosmology,
    particles: Particles,
    report: StepReporter | None = None,
    directions: tuple[str, ...] | None = None,
) -> dict[str, np.ndarray]:
    """Particle mesh with FoF haloes at the cone's snapshot redshifts, run once -> the (1, N, N, N)
    (RA, DEC, z) histogram of the cone along each of ``directions`` (default: all cones of the box)."""
    cone = cfg.lightcone_settings
    catalogues = lightcone_snapshots(cfg, cosmo, particles, report)
    return {
        d: histogram(place_on_lightcone(catalogues, cosmo, cfg.box_size, cone, d), cone, cfg.grid)
        for d in (directions or cone.directions)
    }


def lightcone_histogram(
    cfg: MockConfig,
    cosmo: Cosmology,
    particles: Particles,
    report: StepReporter | None = None,
    direction: str = "+x",
) -> np.ndarray:
    """The (1, N, N, N) (RA, DEC, z) histogram of one cone (along ``direction``) of a particle-mesh run."""
    return lightcone_histograms(cfg, cosmo, particles, report, (direction,))[direction]


class BoxCones:
    """Producer of a store with several cones per box: the first cone asked of a box runs its particle
    mesh and FoF once and histograms all its cones; the others are handed out from that box (kept until a
    cone of another box is asked, so ``fill_store``'s in-order loop runs each box once)."""

    def __init__(self, cfg: MockConfig, device):
        self.cfg, self.device = cfg, device
        self.box, self.cones = None, {}

    def __call__(self, sim: Mapping, report: StepReporter | None = None) -> SimulationProducts:
        key = (sim["box"], sim["seed"])
        if key != self.box or sim["direction"] not in self.cones:
            cosmo = Cosmology.from_mapping(sim["params"])
            particles, _ = initial_particles(self.cfg, cosmo, sim["seed"], self.device)
            self.box, self.cones = key, lightcone_histograms(self.cfg, cosmo, particles, report)
        return SimulationProducts({LIGHTCONE_FIELD: self.cones[sim["direction"]]}, {})


def simulate(
    cfg: MockConfig, sim: Mapping, device=None, report: StepReporter | None = None
) -> SimulationProducts:
    """Run one simulation and grid it: fields, their attributes and (pm) the FoF halo catalogue."""
    device = device or resolve_device(cfg.device)
    cosmo = Cosmology.from_mapping(sim["params"])
    timings, start = {}, time.perf_counter()
    particles, _ = initial_particles(cfg, cosmo, sim["seed"], device)
    timings["ics"] = time.perf_counter() - start
    if cfg.lightcone is not None:
        cone = lightcone_histogram(cfg, cosmo, particles, report, sim.get("direction", "+x"))
        return SimulationProducts({LIGHTCONE_FIELD: cone}, {})
    particles = run_solver(cfg, cosmo, particles, report)
    timings["solver"] = time.perf_counter() - start - sum(timings.values())
    haloes = find_haloes(cfg, cosmo, particles) if cfg.solver == "pm" else None  # stored in halos/
    timings["haloes"] = time.perf_counter() - start - sum(timings.values())
    fields, attrs = paint_fields(cfg, cosmo, particles, haloes, device)
    timings["painting"] = time.perf_counter() - start - sum(timings.values())
    log.debug("%s: %s", sim["id"], ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()))
    return SimulationProducts(fields, attrs, haloes)


def generator_settings(cfg: MockConfig) -> dict:
    """The settings recorded in a store's manifest (``generator``): what the data depends on, as JSON."""
    values = {k: getattr(cfg, k) for k in cfg.__dataclass_fields__ if k not in RUN_ONLY}
    return json.loads(json.dumps(values))


def _manifest(cfg: MockConfig, sims: list[dict]) -> dict:
    specs = {name: field_spec(name, cfg.los_axis) for name in cfg.fields}
    halos = None
    if cfg.solver == "pm" and cfg.lightcone is None:
        halos = {
            "finder": "fof",
            **{k: getattr(cfg.fof_settings, k) for k in ("linking_length", "min_particles")},
        }
    return build_manifest(
        source=("mock-pm-lightcone" if cfg.lightcone else "mock-pm")
        if cfg.solver == "pm"
        else f"mock-{cfg.lpt_order}lpt",
        box_size=cfg.box_size,
        grid=cfg.grid,
        redshift=cfg.store_redshift,
        los_axis=cfg.los_axis,
        fields=specs,
        simulations=sims,
        generator=generator_settings(cfg),
        halos=halos,
    )


def warn_if_resolution_limited(cfg: MockConfig, sims: list[dict]) -> None:
    """Halo fields of a Latin hypercube whose lowest mass bin reaches below min_particles x m_p for some of
    its cosmologies: there the counts follow the particle mass (so Omega_m), not only the mass function."""
    if not cfg.halo_fields() or not cfg.bins or cfg.solver != "pm" or cfg.design != "latin_hypercube":
        return
    limit = cfg.fof_settings.min_particles * max(
        particle_mass(Cosmology.from_mapping(s["params"]), cfg.box_size, cfg.n_particles) for s in sims
    )
    lowest = min(b.lo for b in cfg.bins)
    if lowest < limit:
        log.warning(
            "mass_bins start at %.3g Msun/h, below the FoF limit of %.3g Msun/h (%d particles) of some simulations: "
            "halo counts there depend on the particle mass; start the bins above it (or raise particles=)",
            lowest,
            limit,
            cfg.fof_settings.min_particles,
        )


def warn_if_cone_resolution_limited(cfg: MockConfig, sims: list[dict]) -> None:
    """A light-cone Latin hypercube whose ``lightcone.mass_min`` lies below min_particles x m_p of its
    largest Omega_m: near the threshold the counts would follow the particle mass (so Omega_m)."""
    if cfg.lightcone is None or cfg.design != "latin_hypercube":
        return
    limit = cfg.fof_settings.min_particles * max(
        particle_mass(Cosmology.from_mapping(s["params"]), cfg.box_size, cfg.n_particles) for s in sims
    )
    if cfg.lightcone_settings.mass_min < limit:
        log.warning(
            "lightcone.mass_min %.3g Msun/h is below the FoF limit of %.3g Msun/h (%d particles) of some "
            "simulations: cone counts there depend on the particle mass; raise mass_min above it",
            cfg.lightcone_settings.mass_min,
            limit,
            cfg.fof_settings.min_particles,
        )


def generate_store(cfg: MockConfig, *, progress: bool = True) -> FieldStore:
    """Build (or finish) this shard of the store at ``cfg.store``; returns the store (validated when complete)."""
    root = Path(cfg.store).expanduser().resolve()
    device = resolve_device(cfg.device)
    sims = design(cfg)
    warn_if_resolution_limited(cfg, sims)
    warn_if_cone_resolution_limited(cfg, sims)
    # shard k takes boxes k, k + K, ...: all cones of a box in one job (a box is one entry without cones)
    mine = [s["id"] for i, s in enumerate(sims) if s.get("box", i) % cfg.num_shards == cfg.shard]
    cones = cfg.lightcone is not None and cfg.lightcone_settings.cones_per_box > 1
    produce = BoxCones(cfg, device) if cones else (lambda sim, report: simulate(cfg, sim, device, report))
    shard = f" shard {cfg.shard}/{cfg.num_shards}" if cfg.num_shards > 1 else ""
    store = fill_store(
        root,
        _manifest(cfg, sims),
        produce,
        only=mine,
        chunk=cfg.chunk,
        compression=cfg.compression,
        progress=progress,
        description=f"{cfg.describe()} on {device}{shard}",
    )
    if not store.missing():
        store.validate()
    return store
