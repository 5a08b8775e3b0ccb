"""CIC paint of 128^3 particles onto a 256^3 grid, and CIC readout of a 3-component field (the PM force) at the
same particles from the 256^3 mesh: lss_lightning's compiled CPU kernels (fields/compiled.py, numba) and its
torch path (the stencil of index_add_ / index_select, the GPU path) against numpy and Pylians.

Baseline: plain numpy (8 np.bincount calls, float64; readout: 8 fancy-indexed gathers per component). Peer:
Pylians' MAS_library (``MA(..., "CIC")`` for the paint, serial Cython; ``CIC_interp`` per component for the
readout) where it imports, else skipped with the reason. Every case runs once per round in a fresh process after
one warm-up call, rounds interleaved (``_harness.interleaved``); the tables give the median and best of
--rounds (default 5), the load average and peak memory. Agreement with numpy and Pylians is printed.

Run: OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 .venv/bin/python bench/bench_cic.py [--only paint|readout] [--rounds 5]
(the issue's goal is at one thread; drop the variables to time all cores).
"""

from __future__ import annotations

import argparse

import numpy as np
from _harness import interleaved, load, report

N_PART, N_GRID, BOX = 128, 256, 256.0  # particles per side, mesh cells per side (mesh_factor 2, as the PM)


def particles() -> np.ndarray:
    """A 2LPT-like particle load: a jittered lattice (realistic memory locality), float32 Mpc/h."""
    rng = np.random.default_rng(0)
    q = (np.arange(N_PART) + 0.5) * BOX / N_PART
    lattice = np.stack(np.meshgrid(q, q, q, indexing="ij"), -1).reshape(-1, 3)
    return ((lattice + rng.normal(scale=3.0, size=lattice.shape)) % BOX).astype(np.float32)


def force_field() -> np.ndarray:
    """A random 3-component float32 field on the mesh (the 3 force components)."""
    return np.random.default_rng(1).standard_normal((3, N_GRID, N_GRID, N_GRID), dtype=np.float32)


def numpy_corners(pos: np.ndarray):
    """(flat index, weight) of each of the 8 CIC corners, float64, the project's convention."""
    u = pos.astype(np.float64) / (BOX / N_GRID)
    i0 = np.floor(u).astype(np.int64)
    f = u - i0
    i0 %= N_GRID
    i1 = (i0 + 1) % N_GRID
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                ix, iy, iz = (i1 if dx else i0)[:, 0], (i1 if dy else i0)[:, 1], (i1 if dz else i0)[:, 2]
                w = (f[:, 0] if dx else 1 - f[:, 0]) * (f[:, 1] if dy else 1 - f[:, 1])
                yield (ix * N_GRID + iy) * N_GRID + iz, w * (f[:, 2] if dz else 1 - f[:, 2])


def numpy_paint(pos: np.ndarray) -> np.ndarray:
    out = np.zeros(N_GRID**3)
    for idx, w in numpy_corners(pos):
        out += np.bincount(idx, weights=w, minlength=N_GRID**3)
    return out.reshape((N_GRID,) * 3)


def numpy_readout(state) -> np.ndarray:
    pos, field = state
    flat = field.reshape(3, -1)
    out = np.zeros((len(pos), 3))
    for idx, w in numpy_corners(pos):
        out += flat[:, idx].T * w[:, None]
    return out


# --- paint cases (module level: spawn pickles them) -------------------------------------------------------


def setup_positions():
    return particles()


def warm_compiled(pos) -> None:
    """Load numba and the cached kernels during the untimed setup, so their memory is not counted as work."""
    import torch

    from lss_lightning.fields.mesh import cic_paint, cic_readout, cic_stencil

    few = pos[:10]
    cic_paint(few, 4, BOX)
    cic_paint(few, 4, BOX, torch.ones(len(few), 2))
    cic_readout(torch.zeros(4, 4, 4), few, BOX)
    cic_stencil(few, 4, BOX).readout(torch.zeros(3, 4, 4, 4))


def setup_tensor():
    import torch

    pos = torch.from_numpy(particles())
    warm_compiled(pos)
    return pos


def paint_numpy(pos):
    numpy_paint(pos)


def paint_compiled(pos):
    from lss_lightning.fields.mesh import cic_paint

    cic_paint(pos, N_GRID, BOX, compiled=True)


def paint_torch(pos):
    from lss_lightning.fields.mesh import cic_paint

    cic_paint(pos, N_GRID, BOX, compiled=False)


def paint_pylians(pos):
    import MAS_library

    grid = np.zeros((N_GRID,) * 3, dtype=np.float32)
    MAS_library.MA(pos, grid, BOX, "CIC", verbose=False)


# --- readout cases ----------------------------------------------------------------------------------------


def setup_readout_numpy():
    return particles(), force_field()


def setup_readout_tensor():
    import torch

    pos = torch.from_numpy(particles())
    warm_compiled(pos)
    return pos, torch.from_numpy(force_field())


def readout_numpy(state):
    numpy_readout(state)


def readout_compiled(state):
    """As the PM's CPU force: one stencil (the particles sorted by row once), one (N, N, N) component at a
    time."""
    from lss_lightning.fields.mesh import cic_stencil

    pos, field = state
    stencil = cic_stencil(pos, N_GRID, BOX, compiled=True)
    for i in range(3):
        stencil.readout(field[i])


def readout_torch_stencil(state):
    from lss_lightning.fields.mesh import cic_stencil

    pos, field = state
    stencil = cic_stencil(pos, N_GRID, BOX, compiled=False)
    for i in range(3):
        stencil.readout(field[i])


def readout_pylians(state):
    import MAS_library

    pos, field = state
    out = np.zeros(len(pos), dtype=np.float32)
    for i in range(3):
        out[:] = 0.0
        MAS_library.CIC_interp(field[i], BOX, pos, out)


def pylians_missing() -> str | None:
    try:
        import MAS_library  # noqa: F401
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    return None


# --- tables -----------------------------------------------------------------------------------------------


def paint_agreement(missing: str | None) -> None:
    import torch

    from lss_lightning.fields.mesh import cic_paint

    pos = particles()
    expect = numpy_paint(pos)
    for compiled in (True, False):
        ours = cic_paint(torch.from_numpy(pos), N_GRID, BOX, compiled=compiled).numpy()
        print(f"  max |ours (compiled={compiled}) - numpy| per cell: {np.abs(ours - expect).max():.2e}")
    if missing is None:
        import MAS_library

        grid = np.zeros((N_GRID,) * 3, dtype=np.float32)
        MAS_library.MA(pos, grid, BOX, "CIC", verbose=False)
        print(f"  max |numpy - Pylians| per cell: {np.abs(grid - expect).max():.2e} (same grid convention)")


def readout_agreement(missing: str | None) -> None:
    import torch

    from lss_lightning.fields.mesh import cic_readout

    pos, field = particles(), force_field()
    expect = numpy_readout((pos, field))
    for compiled in (True, False):
        ours = cic_readout(torch.from_numpy(field), torch.from_numpy(pos), BOX, compiled=compiled).numpy()
        print(f"  max |ours (compiled={compiled}) - numpy|: {np.abs(ours - expect).max():.2e}")
    if missing is None:
        import MAS_library

        out = np.zeros(len(pos), dtype=np.float32)
        MAS_library.CIC_interp(field[0], BOX, pos, out)
        print(f"  max |numpy - Pylians| (component x): {np.abs(out - expect[:, 0]).max():.2e}")


def bench_paint(rounds: int, missing: str | None) -> None:
    import torch

    cases = [
        ("numpy bincount (float64)", setup_positions, paint_numpy),
        ("ours compiled (numba)", setup_tensor, paint_compiled),
        ("ours torch (index_add_)", setup_tensor, paint_torch),
    ]
    if missing is None:
        cases.append(("Pylians MAS_library.MA", setup_positions, paint_pylians))
    results = interleaved(cases, rounds)
    report(
        f"CIC paint, {N_PART}^3 particles -> {N_GRID}^3 grid, torch threads={torch.get_num_threads()}, "
        f"median of {rounds} interleaved rounds, {load()}",
        results,
        "numpy bincount (float64)",
    )
    ratios(results, "ours compiled (numba)", "Pylians MAS_library.MA", missing)
    paint_agreement(missing)


def bench_readout(rounds: int, missing: str | None) -> None:
    import torch

    cases = [
        ("numpy gathers (float64)", setup_readout_numpy, readout_numpy),
        ("ours compiled, 3 x (N,N,N)", setup_readout_tensor, readout_compiled),
        ("ours torch stencil, 3 x (N,N,N)", setup_readout_tensor, readout_torch_stencil),
    ]
    if missing is None:
        cases.append(("Pylians CIC_interp x 3", setup_readout_numpy, readout_pylians))
    results = interleaved(cases, rounds)
    report(
        f"CIC readout of 3 components, {N_PART}^3 particles <- {N_GRID}^3 mesh, torch threads="
        f"{torch.get_num_threads()}, median of {rounds} interleaved rounds, {load()}",
        results,
        "numpy gathers (float64)",
    )
    ratios(results, "ours compiled, 3 x (N,N,N)", "Pylians CIC_interp x 3", missing)
    readout_agreement(missing)


def ratios(results, ours: str, peer: str, missing: str | None) -> None:
    if missing is not None:
        print(f"  Pylians skipped: `import MAS_library` failed ({missing})")
        return
    by = {r.name: r for r in results}
    ratio = by[peer].seconds / by[ours].seconds
    print(
        f"  {ours} vs {peer}: {ratio:.2f}x its speed (median t_Pylians / t_ours; goal >= 1.0x: {ratio >= 1.0})"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=("paint", "readout"), default=None, help="run one table")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median is reported")
    args = parser.parse_args()
    missing = pylians_missing()
    if args.only != "readout":
        bench_paint(args.rounds, missing)
    if args.only != "paint":
        bench_readout(args.rounds, missing)
