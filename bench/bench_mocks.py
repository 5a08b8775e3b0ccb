"""Seconds per 2LPT mock with 128^3 particles and 128^3 grids (target: < 10 s on 2 CPU cores).

Each case is one whole simulation as the generator runs it (ICs from CAMB P(k), LPT, CIC painting of
density, velocity, momentum and redshift-space density, linear velocity; no disk I/O), after a warm-up
that fills the CAMB cache. Baseline: the same simulation at first order (Zel'dovich).
Run: .venv/bin/python bench/bench_mocks.py
"""

from __future__ import annotations

import time

from _harness import measure, report

FIELDS = ["density", "velocity", "momentum", "density_rsd", "velocity_linear"]


def _config(order: int):
    from lss_lightning.mocks.config import MockConfig

    return MockConfig(
        store="unused",
        n_sims=1,
        grid=128,
        box_size=256.0,
        solver="lpt",
        lpt_order=order,
        fields=FIELDS,
        device="cpu",
    )


def setup_1lpt():
    from lss_lightning.mocks.design import design

    cfg = _config(1)
    return cfg, design(cfg)[0]


def setup_2lpt():
    from lss_lightning.mocks.design import design

    cfg = _config(2)
    return cfg, design(cfg)[0]


def run(state):
    from lss_lightning.mocks.simulate import simulate

    simulate(*state)


def stages():
    """Split one 2LPT simulation into its stages (same process, after warm-up)."""
    import torch

    from lss_lightning.cosmology import Cosmology
    from lss_lightning.fields.particles import ParticleGridder
    from lss_lightning.mocks.ics import gaussian_field_k
    from lss_lightning.mocks.lpt import lpt_particles

    cosmo = Cosmology()
    cosmo.linear_power([0.1])
    out = {}
    t = time.perf_counter()
    dk = gaussian_field_k(lambda k: cosmo.linear_power(k), 128, 256.0, 1)
    out["initial conditions"] = time.perf_counter() - t
    t = time.perf_counter()
    p = lpt_particles(dk, 256.0, cosmo, 0.0, 2)
    out["2LPT displacements"] = time.perf_counter() - t
    t = time.perf_counter()
    g = ParticleGridder(128, 256.0, ["density", "velocity", "momentum", "density_rsd"], a_h=cosmo.a_h(0.0))
    g.add(p.positions, p.velocities)
    g.finalise()
    out["CIC painting (real + rsd)"] = time.perf_counter() - t
    torch.cuda.empty_cache()
    return out


if __name__ == "__main__":
    import torch

    results = [
        measure("Zel'dovich (1LPT) simulation", setup_1lpt, run, repeats=3),
        measure("2LPT simulation", setup_2lpt, run, repeats=3),
    ]
    report(
        f"one mock, 128^3 particles -> 128^3 grids, 5 fields, torch threads={torch.get_num_threads()}",
        results,
        "Zel'dovich (1LPT) simulation",
    )
    print("  stages of one 2LPT simulation:")
    for name, seconds in stages().items():
        print(f"    {name:<28} {seconds:7.3f} s")
