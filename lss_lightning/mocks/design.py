"""The simulations of a mock store: ids, files, seeds (from ``numpy.random.SeedSequence(seed)``, so growing
``n_sims`` keeps the existing ones), cosmologies (one fiducial, or a seeded Latin hypercube over a prior) and,
with an hod block, each simulation's HOD (one, or a seeded Latin hypercube over ``hod_prior``).

The HOD hypercube has its own seed stream (``galaxies.store_hods``); the galaxy draws of a simulation are seeded
by ``galaxies.galaxy_seed`` from the simulation's own seed, so a rerun redraws the same galaxies."""

from __future__ import annotations

import numpy as np

from lss_lightning.cosmology import Cosmology, latin_hypercube
from lss_lightning.galaxies import store_hods
from lss_lightning.mocks.config import MockConfig
from lss_lightning.store.schema import (
    sim_file_name,
)


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
    for box, hod in zip(boxes, hod_design(cfg), strict=False):  # no entries without an hod block
        box["hod"] = hod
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


def hod_design(cfg: MockConfig) -> list[dict[str, float]]:
    """The HOD (name -> value) of each simulation: cfg.hod for all, or a seeded Latin hypercube over
    cfg.hod_prior (the other parameters from cfg.hod); [] without an hod block."""
    base = cfg.hod_parameters
    return [] if base is None else store_hods(base, cfg.hod_prior, cfg.n_sims, cfg.seed)
