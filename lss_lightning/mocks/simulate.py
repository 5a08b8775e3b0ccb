"""One mock simulation: initial conditions -> LPT or particle mesh -> FoF haloes (-> HOD galaxies) -> the
store's fields of the box (``simulate``), or the histograms of its light cones (``BoxCones``, several cones per box)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

import numpy as np

from lss_lightning.config import resolve_device
from lss_lightning.cosmology import Cosmology
from lss_lightning.fields.particles import (
    ParticleGridder,
    fields_to_paint,
)
from lss_lightning.fields.tracers import BoxGrid, store_fields
from lss_lightning.galaxies import HODParameters, galaxy_seed, populate
from lss_lightning.mocks.config import MockConfig
from lss_lightning.mocks.fof import friends_of_friends, particle_mass
from lss_lightning.mocks.ics import gaussian_field_k
from lss_lightning.mocks.lightcone import AXIS_ORDER, apply_survey, histogram, place_on_lightcone
from lss_lightning.mocks.lpt import Particles, lpt_particles
from lss_lightning.mocks.pm import PMState, evolve
from lss_lightning.mocks.survey import survey_rng
from lss_lightning.store.schema import (
    LIGHTCONE_FIELD,
    GalaxyCatalogue,
    HaloCatalogue,
)
from lss_lightning.store.writer import SimulationProducts, StepReporter

log = logging.getLogger(__name__)


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


def populate_haloes(
    cfg: MockConfig, cosmo: Cosmology, sim: Mapping, haloes: HaloCatalogue
) -> GalaxyCatalogue:
    """The galaxies of a simulation: its HOD (entry ``hod``) in all its FoF haloes, drawn with ``galaxy_seed``."""
    hod = HODParameters.from_mapping(sim["hod"])
    seed = galaxy_seed(sim["seed"])
    return populate(
        haloes, hod, box_size=cfg.box_size, redshift=cfg.redshift, omega_m=cosmo.Omega_m, rng=seed
    )


def paint_fields(
    cfg: MockConfig,
    cosmo: Cosmology,
    particles: Particles,
    haloes: HaloCatalogue | None,
    device,
    galaxies: GalaxyCatalogue | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """The store's fields from particles (and haloes, galaxies): name -> (C, N, N, N) float32, dataset attributes."""
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
    box = BoxGrid(
        cfg.grid, cfg.box_size, cosmo.a_h(z), cosmo.a_h_f(z), cfg.los_axis, cfg.linear_smoothing, device
    )
    return store_fields(
        grids,
        attrs,
        cfg.fields,
        box,
        haloes,
        cfg.bins,
        cfg.allow_empty_bins,
        galaxies,
        cfg.redshift_error_settings,
    )


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


def lightcone_products(
    cfg: MockConfig,
    cosmo: Cosmology,
    particles: Particles,
    seed: int,
    report: StepReporter | None = None,
    directions: tuple[str, ...] | None = None,
) -> dict[str, SimulationProducts]:
    """Particle mesh with FoF haloes at the cone's snapshot redshifts, run once -> the (1, N, N, N)
    (RA, DEC, z) histogram of the cone along each of ``directions`` (default: all cones of the box), after
    the survey effects (drawn from ``survey_rng(seed, cone)``), with their attributes."""
    cone = cfg.lightcone_settings
    catalogues = lightcone_snapshots(cfg, cosmo, particles, report)
    products = {}
    for d in directions or cone.directions:
        haloes = place_on_lightcone(catalogues, cosmo, cfg.box_size, cone, d)
        rng = survey_rng(seed, AXIS_ORDER.index(d))
        haloes, attrs = apply_survey(haloes, cone, cfg.grid, cosmo, rng)
        counts = histogram(haloes, cone, cfg.grid)
        products[d] = SimulationProducts({LIGHTCONE_FIELD: counts}, {LIGHTCONE_FIELD: attrs} if attrs else {})
    return products


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
            self.box, self.cones = key, lightcone_products(self.cfg, cosmo, particles, sim["seed"], report)
        return self.cones[sim["direction"]]


def simulate(
    cfg: MockConfig, sim: Mapping, device=None, report: StepReporter | None = None
) -> SimulationProducts:
    """Run one simulation and grid it: fields, their attributes, (pm) the FoF halo catalogue and (hod) its galaxies."""
    device = device or resolve_device(cfg.device)
    cosmo = Cosmology.from_mapping(sim["params"])
    timings, start = {}, time.perf_counter()
    particles, _ = initial_particles(cfg, cosmo, sim["seed"], device)
    timings["ics"] = time.perf_counter() - start
    if cfg.lightcone is not None:
        direction = sim.get("direction", "+x")
        return lightcone_products(cfg, cosmo, particles, sim["seed"], report, (direction,))[direction]
    particles = run_solver(cfg, cosmo, particles, report)
    timings["solver"] = time.perf_counter() - start - sum(timings.values())
    haloes = find_haloes(cfg, cosmo, particles) if cfg.solver == "pm" else None  # stored in halos/
    galaxies = populate_haloes(cfg, cosmo, sim, haloes) if cfg.hod is not None else None  # in galaxies/
    timings["haloes"] = time.perf_counter() - start - sum(timings.values())
    fields, attrs = paint_fields(cfg, cosmo, particles, haloes, device, galaxies)
    timings["painting"] = time.perf_counter() - start - sum(timings.values())
    log.debug("%s: %s", sim["id"], ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()))
    return SimulationProducts(fields, attrs, haloes, galaxies)
