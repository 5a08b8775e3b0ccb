"""Compiled CPU kernels on periodic meshes (numba): cloud-in-cell paint and readout in the project's grid
convention, and the real-space finite-difference gradient of the particle-mesh force.

Grid point i sits at x = i dx, dx = L / N; a particle at u = x / dx (cells) gives (1 - f) to point floor(u) and f
to floor(u) + 1, periodic, f = u - floor(u), along each axis (``fields.mesh``). Each particle's 8 weights are
computed in the positions' precision (pass inv_cell = N / L as a scalar of that dtype; float32 maths are 20%
faster and round as torch's path does) and added to (or read from) the grid in the loop, so no weights are
stored: torch's index_add_ path needs (8, P) indices and weights in memory (64 bytes per particle, against the
sorted copy's 16 below) and is slower on a CPU (``bench/bench_cic.py``). The 8 corners are written out, not
looped over: numba indexes a tuple with a loop variable through a branch per element, which cost 2x. Written
by hand because no installed library paints CIC onto a torch grid in place.

Cache locality sets the speed: 128^3 particles of a jittered lattice painted in their own order touch ~20
planes of a 256^3 grid at a time and wait on memory for 3/4 of the loop (the same loop on particles packed into
4 cells is 4x faster). :func:`sort_by_row` orders them by grid row first (a counting sort, two passes), so
consecutive particles share rows; the paint and readout kernels take the sorted positions and the order back
to the caller's rows (``fields.mesh.CompiledCICStencil`` sorts once per particle set and keeps both).

Vector fields are painted and read a component at a time: on sorted particles one N^3 grid in cache per pass
beats a channels-last (N^3, C) layout (3 components: 135 against 195 ms at 1 thread, 96 against 115 ms at 2;
a weighted paint of 4 channels 2x faster), so there is no channels-last kernel.
Threads: paint and the row sort are serial loops (scatters; parallel writes would race), readout and the
gradient parallel loops over particles and mesh planes (numba's threads, ``numba.set_num_threads``).
Compilation (seconds per dtype, on first use) is cached on disk beside this module (``cache=True``), so later
processes start at once.
"""

from __future__ import annotations

import os

import numba
import numpy as np
import torch

if "NUMBA_THREADING_LAYER" not in os.environ:
    # numba's own thread pool: its OpenMP layer shares torch's libgomp and resets torch's thread count to
    # NUMBA_NUM_THREADS when it starts (measured: torch.set_num_threads(1) undone by the first parallel kernel)
    numba.config.THREADING_LAYER = "workqueue"


def use_torch_threads() -> None:
    """Run numba's parallel loops on as many threads as torch's (``torch.set_num_threads``, OMP_NUM_THREADS),
    within numba's own limit (NUMBA_NUM_THREADS): one setting for both."""
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


@numba.njit(cache=True, nogil=True, boundscheck=False, inline="always")
def _corner_cells(u, one, n: int):
    """Lower and upper grid points (wrapped) and their weights (1 - f, f), f = u - floor(u), for a position u in
    cells, in u's own precision (``one``: 1 of that dtype; numba makes float32 + an int literal float64)."""
    i0 = int(u)  # truncation: floor for u >= 0, the usual case, and cheaper
    if u < 0:
        i0 = int(np.floor(u))
    f = u - i0
    g = one - f
    if i0 < 0 or i0 >= n:  # outside the box: wrap (the modulo only where needed, it costs ~30%)
        i0 %= n
    i1 = i0 + 1
    if i1 == n:
        i1 = 0
    return i0, i1, g, f


@numba.njit(cache=True, nogil=True, boundscheck=False, inline="always")
def _stencil(x, y, z, inv_cell, n: int):
    """The 8 flat cells (i_x N + i_y) N + i_z of a particle at (x, y, z) Mpc/h and their CIC weights, in corner
    order k = 4 a + 2 b + c at (i_x + a, i_y + b, i_z + c): 16 scalars."""
    one = inv_cell / inv_cell
    x0, x1, gx, fx = _corner_cells(x * inv_cell, one, n)
    y0, y1, gy, fy = _corner_cells(y * inv_cell, one, n)
    z0, z1, gz, fz = _corner_cells(z * inv_cell, one, n)
    a0, a1, b0, b1 = x0 * n * n, x1 * n * n, y0 * n, y1 * n
    w00, w01, w10, w11 = gx * gy, gx * fy, fx * gy, fx * fy
    return (
        a0 + b0 + z0, a0 + b0 + z1, a0 + b1 + z0, a0 + b1 + z1,
        a1 + b0 + z0, a1 + b0 + z1, a1 + b1 + z0, a1 + b1 + z1,
        w00 * gz, w00 * fz, w01 * gz, w01 * fz, w10 * gz, w10 * fz, w11 * gz, w11 * fz,
    )  # fmt: skip


@numba.njit(cache=True, nogil=True, boundscheck=False)
def paint_unit(positions: np.ndarray, inv_cell, n: int, out: np.ndarray) -> None:
    """out (N^3,) += the CIC counts of particles (P, 3) in Mpc/h; inv_cell = N / L."""
    for p in range(positions.shape[0]):
        c0, c1, c2, c3, c4, c5, c6, c7, w0, w1, w2, w3, w4, w5, w6, w7 = _stencil(
            positions[p, 0], positions[p, 1], positions[p, 2], inv_cell, n
        )
        out[c0] += w0
        out[c1] += w1
        out[c2] += w2
        out[c3] += w3
        out[c4] += w4
        out[c5] += w5
        out[c6] += w6
        out[c7] += w7


@numba.njit(cache=True, nogil=True, boundscheck=False, inline="always")
def _row(x, y, inv_cell, n: int) -> int:
    """The grid row i_x N + i_y of the lower CIC corner of a particle at (x, y) Mpc/h."""
    one = inv_cell / inv_cell
    x0, _, _, _ = _corner_cells(x * inv_cell, one, n)
    y0, _, _, _ = _corner_cells(y * inv_cell, one, n)
    return x0 * n + y0


@numba.njit(cache=True, nogil=True, boundscheck=False)
def sort_by_row(
    positions: np.ndarray, inv_cell, n: int, order: np.ndarray, sorted_positions: np.ndarray
) -> None:
    """Counting sort of particles (P, 3) Mpc/h by the grid row (i_x, i_y) of their lower CIC corner, stable:
    order (P,) gets the original index of each sorted particle and sorted_positions = positions[order].
    Painted or read in this order, a particle's 8 corners fall in the rows the previous one touched (2 planes
    of the grid in cache, not the ~20 of a jittered lattice). At 128^3 jittered particles on 256^3 the paint
    itself took 23 against 72 ms (one process) and the sort 21 ms (another run; ``bench/bench_cic.py`` times
    both together), for two passes over the particles and 16 bytes per particle (float32) of order and copy."""
    start = np.zeros(n * n + 1, np.int64)  # start[row + 1] = particles in row, then the running sum
    for p in range(positions.shape[0]):
        start[_row(positions[p, 0], positions[p, 1], inv_cell, n) + 1] += 1
    for r in range(n * n):
        start[r + 1] += start[r]
    for p in range(positions.shape[0]):  # the row again: recomputing it is faster than storing it
        r = _row(positions[p, 0], positions[p, 1], inv_cell, n)
        q = start[r]
        start[r] = q + 1
        order[q] = p
        sorted_positions[q, 0] = positions[p, 0]
        sorted_positions[q, 1] = positions[p, 1]
        sorted_positions[q, 2] = positions[p, 2]


@numba.njit(cache=True, nogil=True, boundscheck=False)
def paint_weighted(positions: np.ndarray, inv_cell, n: int, weights: np.ndarray, out: np.ndarray) -> None:
    """out (C, N^3) += the CIC sums of per-particle weights (P, C) at particles (P, 3) in Mpc/h, a channel at
    a time: one N^3 grid in cache per pass, not C (1.5x faster for C = 4 on sorted particles; the stencil is
    recomputed per channel, which costs less than the memory traffic it saves)."""
    for c in range(out.shape[0]):
        grid = out[c]
        for p in range(positions.shape[0]):
            c0, c1, c2, c3, c4, c5, c6, c7, w0, w1, w2, w3, w4, w5, w6, w7 = _stencil(
                positions[p, 0], positions[p, 1], positions[p, 2], inv_cell, n
            )
            w = weights[p, c]
            grid[c0] += w * w0
            grid[c1] += w * w1
            grid[c2] += w * w2
            grid[c3] += w * w3
            grid[c4] += w * w4
            grid[c5] += w * w5
            grid[c6] += w * w6
            grid[c7] += w * w7


@numba.njit(cache=True, nogil=True, boundscheck=False, parallel=True)
def readout(
    field: np.ndarray, positions: np.ndarray, order: np.ndarray, inv_cell, n: int, out: np.ndarray
) -> None:
    """out[order[q]] (P,) = the CIC interpolation of a scalar field (N^3,) at positions[q] (P, 3) in Mpc/h
    (:func:`sort_by_row`'s order and sorted positions; a permutation, so the parallel writes never collide)."""
    for q in numba.prange(positions.shape[0]):
        c0, c1, c2, c3, c4, c5, c6, c7, w0, w1, w2, w3, w4, w5, w6, w7 = _stencil(
            positions[q, 0], positions[q, 1], positions[q, 2], inv_cell, n
        )
        out[order[q]] = (
            w0 * field[c0] + w1 * field[c1] + w2 * field[c2] + w3 * field[c3]
            + w4 * field[c4] + w5 * field[c5] + w6 * field[c6] + w7 * field[c7]
        )  # fmt: skip


@numba.njit(cache=True, nogil=True, boundscheck=False, parallel=True)
def finite_difference_gradient(phi: np.ndarray, scale: float, out: np.ndarray) -> None:
    """out (3, N, N, N) = scale times the 4-point gradient of phi (N, N, N), periodic:
    (8 (phi[i+1] - phi[i-1]) - (phi[i+2] - phi[i-2])) / 12 along each axis, whose Fourier symbol is
    i (8 sin(k dx) - sin(2 k dx)) / (6 dx) times dx (``fields.kernels.finite_difference_gradient``): with
    scale = -1 / dx this is the force -grad phi of the Fourier path, to float rounding."""
    n = phi.shape[0]
    s = scale / 12.0
    for i in numba.prange(n):
        im2, im1, ip1, ip2 = (i - 2) % n, (i - 1) % n, (i + 1) % n, (i + 2) % n
        for j in range(n):
            jm2, jm1, jp1, jp2 = (j - 2) % n, (j - 1) % n, (j + 1) % n, (j + 2) % n
            row, ox, oy, oz = phi[i, j], out[0, i, j], out[1, i, j], out[2, i, j]
            xm2, xm1, xp1, xp2 = phi[im2, j], phi[im1, j], phi[ip1, j], phi[ip2, j]
            ym2, ym1, yp1, yp2 = phi[i, jm2], phi[i, jm1], phi[i, jp1], phi[i, jp2]
            for k in range(n):  # x and y: the same k in neighbouring rows (vectorised)
                ox[k] = s * (8.0 * (xp1[k] - xm1[k]) - (xp2[k] - xm2[k]))
                oy[k] = s * (8.0 * (yp1[k] - ym1[k]) - (yp2[k] - ym2[k]))
            for k in range(2, n - 2):  # z inside the row, then its 4 periodic ends
                oz[k] = s * (8.0 * (row[k + 1] - row[k - 1]) - (row[k + 2] - row[k - 2]))
            for k in (0, 1, n - 2, n - 1):
                oz[k] = s * (
                    8.0 * (row[(k + 1) % n] - row[(k - 1) % n]) - (row[(k + 2) % n] - row[(k - 2) % n])
                )
