"""The mock store builder: parameter design -> simulations (2LPT, or particle mesh + FoF haloes) -> field
store, resumably (settings in ``mocks.config``, the design in ``mocks.design``, one simulation in ``mocks.simulate``).

A design is either one cosmology with many seeds (``design=seeds``) or a seeded Latin hypercube over a
prior (``design=latin_hypercube``, one seed per cosmology). Simulation seeds come from
``numpy.random.SeedSequence(seed)``, so growing ``n_sims`` keeps the existing simulations (the manifest
is extended rather than rejected). A rerun skips every simulation whose file validates; ``shard`` k of
``num_shards`` K makes simulations k, k + K, ..., so K jobs fill one store side by side.

Solvers: ``lpt`` moves particles from the lattice straight to the output redshift (1LPT or 2LPT);
``pm`` starts from 2LPT at ``pm.a_start`` and integrates gravity with the particle-mesh kick-drift-kick
of ``mocks/pm.py``, then finds friends-of-friends haloes (``mocks/fof.py``), stored in each file's
``halos/`` group and gridded into halo fields by ``fields/tracers.py``; with an ``hod`` block the haloes are
populated with galaxies (``lss_lightning/galaxies.py``, one HOD per store or per simulation with ``hod_prior``), stored
in ``galaxies/`` and gridded into galaxy fields by the same code. With a ``lightcone`` block the
particle mesh instead writes FoF haloes at several redshifts and the store holds one field, ``lightcone``:
the histogram of the haloes on the observer's past light cone in (RA, DEC, observed z) (``mocks/lightcone.py``).
With ``lightcone.cones_per_box`` K > 1 each particle-mesh run ("box") gives K cones along disjoint axis
directions, each its own simulation entry ``sim_<box>_c<k>`` recording ``box``, ``observer`` and
``direction`` (``n_sims`` counts boxes; the store holds n_sims x K cones; a box runs once for all its
cones, and shards split by box). A ``lightcone.survey`` block applies an angular mask, redshift errors and a
radial selection n(z) to the haloes of each cone before its histogram (``mocks/survey.py``). The particle-mesh initial
conditions are the z = 0 linear P(k) scaled back by the growth factor D(a_start)^2 (so linear growth
brings them exactly to the z = 0 spectrum); the LPT solver uses CAMB's P(k) at the output redshift.
"""

from __future__ import annotations

import json
import logging

from lss_lightning.config import resolve_device
from lss_lightning.cosmology import Cosmology
from lss_lightning.galaxies import galaxy_settings
from lss_lightning.mocks.config import RUN_ONLY, MockConfig
from lss_lightning.mocks.design import design
from lss_lightning.mocks.fof import particle_mass
from lss_lightning.mocks.simulate import BoxCones, simulate
from lss_lightning.store.builder import StorePlan, build_store
from lss_lightning.store.reader import FieldStore
from lss_lightning.store.schema import (
    field_spec,
)

log = logging.getLogger(__name__)


def generator_settings(cfg: MockConfig) -> dict:
    """The settings recorded in a store's manifest (``generator``): what the data depends on, as JSON.
    Without galaxies hod and hod_prior are left out, and redshift_errors without errors, so stores made before
    them still match."""
    values = {k: getattr(cfg, k) for k in cfg.__dataclass_fields__ if k not in RUN_ONLY}
    if cfg.hod is None:
        values = {k: v for k, v in values.items() if k not in ("hod", "hod_prior")}
    if cfg.redshift_errors is None:
        values.pop("redshift_errors", None)
    return json.loads(json.dumps(values))


def plan(cfg: MockConfig, sims: list[dict]) -> StorePlan:
    """The store this configuration builds: its fields, the design's simulations, the FoF settings and
    the galaxy model (the HOD, or its fixed values and prior)."""
    specs = {name: field_spec(name, cfg.los_axis) for name in cfg.fields}
    halos = None
    if cfg.solver == "pm" and cfg.lightcone is None:
        halos = {
            "finder": "fof",
            **{k: getattr(cfg.fof_settings, k) for k in ("linking_length", "min_particles")},
        }
    source = f"mock-{cfg.lpt_order}lpt"
    if cfg.solver == "pm":
        source = "mock-pm-lightcone" if cfg.lightcone else "mock-pm"
    geometry = (cfg.box_size, cfg.grid, cfg.store_redshift, cfg.los_axis)
    layout = (cfg.chunk, cfg.compression)
    galaxies = galaxy_settings(cfg.hod, cfg.hod_prior)
    return StorePlan(
        cfg.store, source, *geometry, specs, sims, generator_settings(cfg), halos, *layout, galaxies=galaxies
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
    device = resolve_device(cfg.device)
    sims = design(cfg)
    warn_if_resolution_limited(cfg, sims)
    warn_if_cone_resolution_limited(cfg, sims)
    # shard k takes boxes k, k + K, ...: all cones of a box in one job (a box is one entry without cones)
    mine = [s["id"] for i, s in enumerate(sims) if s.get("box", i) % cfg.num_shards == cfg.shard]
    cones = cfg.lightcone is not None and cfg.lightcone_settings.cones_per_box > 1
    produce = BoxCones(cfg, device) if cones else (lambda sim, report: simulate(cfg, sim, device, report))
    text, shard = f"{cfg.describe()} on {device}", (cfg.shard, cfg.num_shards)
    store = build_store(plan(cfg, sims), produce, only=mine, shard=shard, description=text, progress=progress)
    if not store.missing():
        store.validate()
    return store
