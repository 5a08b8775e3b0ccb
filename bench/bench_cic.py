"""CIC paint of 128^3 particles onto a 128^3 grid: lss_lightning (torch index_add_) vs numpy bincount;
CIC readout of a 3-component field (the PM force) at 128^3 particles from a 256^3 mesh: one stencil
(cic_stencil) against three cic_readout calls.

Baseline: the plain numpy implementation (8 np.bincount calls, float64). Peer: Pylians' MAS_library
when importable. Run: .venv/bin/python bench/bench_cic.py [--only paint|readout]; prefix OMP_NUM_THREADS=1
to time one thread.
"""

from __future__ import annotations

import argparse

import numpy as np
from _harness import measure, report

N_PART, N_GRID, BOX = 128, 128, 256.0
N_FORCE = 256  # force mesh of the readout rows: mesh_factor 2 over the particle lattice, as in the PM


def particles() -> np.ndarray:
    """A 2LPT-like particle load: a jittered lattice (realistic memory locality), float32 Mpc/h."""
    rng = np.random.default_rng(0)
    q = (np.arange(N_PART) + 0.5) * BOX / N_PART
    lattice = np.stack(np.meshgrid(q, q, q, indexing="ij"), -1).reshape(-1, 3)
    return ((lattice + rng.normal(scale=3.0, size=lattice.shape)) % BOX).astype(np.float32)


def numpy_cic(pos: np.ndarray) -> np.ndarray:
    u = pos.astype(np.float64) / (BOX / N_GRID)
    i0 = np.floor(u).astype(np.int64)
    f = u - i0
    i0 %= N_GRID
    i1 = (i0 + 1) % N_GRID
    out = np.zeros(N_GRID**3)
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                idx = (((i1 if dx else i0)[:, 0] * N_GRID + (i1 if dy else i0)[:, 1]) * N_GRID) + (
                    i1 if dz else i0
                )[:, 2]
                w = (
                    (f[:, 0] if dx else 1 - f[:, 0])
                    * (f[:, 1] if dy else 1 - f[:, 1])
                    * (f[:, 2] if dz else 1 - f[:, 2])
                )
                out += np.bincount(idx, weights=w, minlength=N_GRID**3)
    return out.reshape(N_GRID, N_GRID, N_GRID)


def setup_numpy():
    return particles()


def run_numpy(pos):
    numpy_cic(pos)


def setup_torch():
    import torch

    return torch.from_numpy(particles())


def run_torch(pos):
    from lss_lightning.fields.mesh import cic_paint

    cic_paint(pos, N_GRID, BOX)


def setup_pylians():
    import MAS_library  # noqa: F401

    return particles()


def run_pylians(pos):
    import MAS_library

    grid = np.zeros((N_GRID,) * 3, dtype=np.float32)
    MAS_library.MA(pos, grid, BOX, "CIC", verbose=False)


def check_agreement() -> float:
    import torch

    from lss_lightning.fields.mesh import cic_paint

    pos = particles()
    ours = cic_paint(torch.from_numpy(pos), N_GRID, BOX).numpy()
    return float(np.abs(ours - numpy_cic(pos)).max())


def check_pylians() -> float:
    import MAS_library
    import torch

    from lss_lightning.fields.mesh import cic_paint

    pos = particles()
    grid = np.zeros((N_GRID,) * 3, dtype=np.float32)
    MAS_library.MA(pos, grid, BOX, "CIC", verbose=False)
    return float(np.abs(cic_paint(torch.from_numpy(pos), N_GRID, BOX).numpy() - grid).max())


def setup_readout():
    """Particles and a random 3-component float32 field on the force mesh (the 3 force components)."""
    import torch

    gen = torch.Generator().manual_seed(1)
    return torch.from_numpy(particles()), torch.randn(3, N_FORCE, N_FORCE, N_FORCE, generator=gen)


def run_three_readouts(state):
    from lss_lightning.fields.mesh import cic_readout

    pos, field = state
    for i in range(3):
        cic_readout(field[i], pos, BOX)


def run_stencil_by_component(state):
    """As ForceMesh.forces_at: one stencil, one (N, N, N) component at a time (one real mesh alive)."""
    from lss_lightning.fields.mesh import cic_stencil

    pos, field = state
    stencil = cic_stencil(pos, N_FORCE, BOX)
    for i in range(3):
        stencil.readout(field[i])


def run_stencil_stacked(state):
    from lss_lightning.fields.mesh import cic_stencil

    pos, field = state
    cic_stencil(pos, N_FORCE, BOX).readout(field)


def check_readout_agreement() -> float:
    import torch

    from lss_lightning.fields.mesh import cic_readout, cic_stencil

    pos, field = setup_readout()
    three = torch.stack([cic_readout(field[i], pos, BOX) for i in range(3)], dim=1)
    return float((cic_stencil(pos, N_FORCE, BOX).readout(field) - three).abs().max())


def bench_paint() -> None:
    import torch

    results = [
        measure("numpy bincount (float64)", setup_numpy, run_numpy),
        measure("lss_lightning cic_paint", setup_torch, run_torch),
    ]
    try:
        results.append(measure("Pylians MAS_library.MA", setup_pylians, run_pylians))
    except Exception:
        print("(Pylians not importable: peer comparison skipped)")
    report(
        f"CIC paint, {N_PART}^3 particles -> {N_GRID}^3 grid, torch threads={torch.get_num_threads()}",
        results,
        "numpy bincount (float64)",
    )
    print(f"  max |lss - numpy| per cell: {check_agreement():.2e} (mean occupancy 1 particle per cell)")
    try:
        print(
            f"  max |lss - Pylians| per cell: {check_pylians():.2e} (same grid convention: point i at x = i dx)"
        )
    except ImportError:
        pass


def bench_readout() -> None:
    import torch

    base = "3 x cic_readout"
    results = [
        measure(base, setup_readout, run_three_readouts, repeats=3),
        measure("cic_stencil, 3 readouts (N,N,N)", setup_readout, run_stencil_by_component, repeats=3),
        measure("cic_stencil, 1 readout (3,N,N,N)", setup_readout, run_stencil_stacked, repeats=3),
    ]
    report(
        f"CIC readout of 3 components, {N_PART}^3 particles <- {N_FORCE}^3 mesh (stencil built inside the "
        f"timed call), torch threads={torch.get_num_threads()}",
        results,
        base,
    )
    print(f"  max |stencil - cic_readout|: {check_readout_agreement():.2e} (float32)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=("paint", "readout"), default=None, help="run one table")
    args = parser.parse_args()
    if args.only != "readout":
        bench_paint()
    if args.only != "paint":
        bench_readout()
