"""Compiled cloud-in-cell paint and readout for CPU tensors (numba), the project's grid convention.

Grid point i sits at x = i dx, dx = L / N; a particle at u = x / dx (cells) gives (1 - f) to point floor(u) and f
to floor(u) + 1, periodic, f = u - floor(u), along each axis (``fields.mesh``). Each particle's 8 weights are
computed in float64 and added to (or read from) the float32/64 grid in the loop, so nothing per particle is
stored: torch's index_add_ needs (8, P) indices and weights in memory and runs ~4x slower on one core
(``bench/bench_cic.py``). Written by hand because no installed library paints CIC onto a torch grid in place.

Threads: paint is one serial loop (a scatter; parallel writes would race), readout a parallel loop over particles
(numba's threads, ``numba.set_num_threads``). Compilation (a few seconds per dtype, on first use) is cached on
disk beside this module (``cache=True``), so later processes start at once.
"""

from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(cache=True, nogil=True, boundscheck=False, inline="always")
def _corner_cells(u: float, n: int) -> tuple[int, int, float]:
    """Lower and upper grid points (wrapped) and the weight f of the upper one, for a position u in cells."""
    lower = math.floor(u)
    f = u - lower
    i0 = int(lower)
    if i0 < 0 or i0 >= n:  # outside the box: wrap (the modulo only where needed, it costs ~30%)
        i0 %= n
    i1 = i0 + 1
    if i1 == n:
        i1 = 0
    return i0, i1, f


@numba.njit(cache=True, nogil=True, boundscheck=False, inline="always")
def _stencil(position: np.ndarray, inv_cell: float, n: int):
    """The 8 flat cells (i_x N + i_y) N + i_z and CIC weights of one particle (3,) Mpc/h, as 8 + 8 scalars in
    corner order k = 4 a + 2 b + c at (i_x + a, i_y + b, i_z + c)."""
    x0, x1, fx = _corner_cells(position[0] * inv_cell, n)
    y0, y1, fy = _corner_cells(position[1] * inv_cell, n)
    z0, z1, fz = _corner_cells(position[2] * inv_cell, n)
    gx, gy, gz = 1.0 - fx, 1.0 - fy, 1.0 - fz
    a0, a1, b0, b1 = x0 * n * n, x1 * n * n, y0 * n, y1 * n
    w00, w01, w10, w11 = gx * gy, gx * fy, fx * gy, fx * fy
    cells = (a0 + b0 + z0, a0 + b0 + z1, a0 + b1 + z0, a0 + b1 + z1,
             a1 + b0 + z0, a1 + b0 + z1, a1 + b1 + z0, a1 + b1 + z1)  # fmt: skip
    weights = (w00 * gz, w00 * fz, w01 * gz, w01 * fz, w10 * gz, w10 * fz, w11 * gz, w11 * fz)
    return cells, weights


@numba.njit(cache=True, nogil=True, boundscheck=False)
def paint_unit(positions: np.ndarray, inv_cell: float, n: int, out: np.ndarray) -> None:
    """out (N^3,) += the CIC counts of particles (P, 3) in Mpc/h; inv_cell = N / L."""
    for p in range(positions.shape[0]):
        cells, weights = _stencil(positions[p], inv_cell, n)
        for k in range(8):
            out[cells[k]] += weights[k]


@numba.njit(cache=True, nogil=True, boundscheck=False)
def paint_weighted(
    positions: np.ndarray, inv_cell: float, n: int, weights: np.ndarray, out: np.ndarray
) -> None:
    """out (C, N^3) += the CIC sums of per-particle weights (P, C) at particles (P, 3) in Mpc/h."""
    for p in range(positions.shape[0]):
        cells, cic = _stencil(positions[p], inv_cell, n)
        for c in range(out.shape[0]):
            w = weights[p, c]
            for k in range(8):
                out[c, cells[k]] += w * cic[k]


@numba.njit(cache=True, nogil=True, boundscheck=False, parallel=True)
def readout(field: np.ndarray, positions: np.ndarray, inv_cell: float, n: int, out: np.ndarray) -> None:
    """out (P, C) = the CIC interpolation of field (C, N^3) at particles (P, 3) in Mpc/h."""
    for p in numba.prange(positions.shape[0]):
        _read_one(field, positions[p], inv_cell, n, out[p])


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _read_one(field: np.ndarray, position: np.ndarray, inv_cell: float, n: int, out: np.ndarray) -> None:
    """out (C,) = field (C, N^3) interpolated at one particle (a function of its own: numba's parallel loop
    analysis fails on the tuple indexing inlined)."""
    cells, weights = _stencil(position, inv_cell, n)
    for c in range(field.shape[0]):
        total = 0.0
        for k in range(8):
            total += weights[k] * field[c, cells[k]]
        out[c] = total
