"""Compiled pair counts DD(s, mu) in a periodic box (numba): a cell list, every unordered pair once.

The points (P, 3) Mpc/h in [0, L) are sorted into a grid of cells of side >= s_max / REFINE; each cell is paired
with the cells within REFINE cells of it along each axis (periodic; the same cell pair only once, so a grid
of fewer than 2 REFINE + 1 cells per side still counts every pair once, down to all pairs of a one-cell grid).
Each candidate pair's separation is the minimum image d - L round(d / L), its s = sqrt(dx^2 + dy^2 + dz^2) and
mu = min(|d_los| / s, 1) binned as ``evaluate.clustering.pair_counts`` bins them ([lo, hi) bins, the last one
closed; the same float64 operations in the same order), so both give the same integers (tests). Cells are
counted in parallel (numba's threads, as many as torch's), each into its own row of counts, summed at the end: no races.
Written by hand because the one library that does this (Corrfunc) needs libgsl and is not a dependency.
"""

from __future__ import annotations

import numba
import numpy as np

from lss_lightning.fields.compiled import use_torch_threads

REFINE = 2  # cells per s_max: fewer candidate pairs (the cube of 5 cells of s_max / 2 holds 2.4x the sphere)


def cell_pair_counts(
    pos: np.ndarray, box_size: float, s_edges: np.ndarray, mu_edges: np.ndarray, los_axis: int
) -> np.ndarray:
    """(n_s, n_mu) int64 counts of unordered pairs of points (P, 3) in [0, L) Mpc/h, float64."""
    s_max = float(s_edges[-1])
    n_cells = max(1, int(box_size // (s_max / REFINE)))
    cell_of = np.minimum((pos * (n_cells / box_size)).astype(np.int64), n_cells - 1)
    flat = (cell_of[:, 0] * n_cells + cell_of[:, 1]) * n_cells + cell_of[:, 2]
    order = np.argsort(flat, kind="stable")
    starts = np.zeros(n_cells**3 + 1, dtype=np.int64)
    np.cumsum(np.bincount(flat, minlength=n_cells**3), out=starts[1:])
    counts = np.zeros((n_cells**3, (len(s_edges) - 1) * (len(mu_edges) - 1)), dtype=np.int64)
    use_torch_threads()
    xyz = np.ascontiguousarray(pos[order].T, dtype=np.float64)  # (3, P): x, y, z each contiguous (SIMD)
    _count_cells(
        xyz[0],
        xyz[1],
        xyz[2],
        starts,
        n_cells,
        _neighbour_offsets(n_cells),
        float(box_size),
        np.asarray(s_edges, dtype=np.float64),
        np.asarray(mu_edges, dtype=np.float64),
        int(los_axis),
        counts,
    )
    return counts.sum(axis=0).reshape(len(s_edges) - 1, len(mu_edges) - 1)


def _neighbour_offsets(n_cells: int) -> np.ndarray:
    """(K, 3) distinct cell offsets within REFINE cells along each axis, modulo the grid (so a small grid lists
    each neighbouring cell once)."""
    span = np.arange(-REFINE, REFINE + 1) % n_cells
    grid = np.stack(np.meshgrid(span, span, span, indexing="ij"), -1).reshape(-1, 3)
    return np.unique(grid, axis=0).astype(np.int64)


@numba.njit(cache=True, nogil=True, boundscheck=False, inline="always")
def _bin(edges: np.ndarray, value: float, inv_width: float) -> int:
    """searchsorted(edges, value, side="right") - 1, clipped to the last bin (numpy's histogram rule): a guess
    from the mean bin width, corrected against the edges themselves (exact for any increasing edges, O(1) for
    even ones)."""
    last = len(edges) - 2
    k = min(max(int((value - edges[0]) * inv_width), 0), last)
    while k > 0 and edges[k] > value:
        k -= 1
    while k < last and edges[k + 1] <= value:
        k += 1
    return k


@numba.njit(cache=True, nogil=True, boundscheck=False, inline="always")
def _minimum_image(d: float, box: float) -> float:
    """d - L round(d / L) for |d| < L (points in [0, L)), without the division; the same value wherever a pair
    can be counted (apart from the half-box tie, which lies beyond s_max < L / 2)."""
    if d > 0.5 * box:
        return d - box
    if d < -0.5 * box:
        return d + box
    return d


@numba.njit(cache=True, nogil=True, boundscheck=False, inline="always")
def _image_shift(cell: int, offset: int, n_cells: int, box: float, wrap_free: bool) -> float:
    """The periodic shift (0 or +-L) of the pairs between a cell and its neighbour ``offset`` cells away along
    one axis (offset in [0, n_cells) modulo the grid); NaN where it is not one shift for all of them (a grid of
    fewer than 2 REFINE + 1 cells)."""
    if not wrap_free:
        return np.nan
    step = offset if offset <= REFINE else offset - n_cells  # -REFINE..REFINE
    target = cell + step
    return -box if target >= n_cells else (box if target < 0 else 0.0)  # d - shift: +L across the top


@numba.njit(cache=True, nogil=True, boundscheck=False, parallel=True)
def _count_cells(x, y, z, starts, n_cells, offsets, box, s_edges, mu_edges, los, counts):
    """counts[a] += the pairs of cell a with itself and with its neighbours b > a (see the module docstring)."""
    s2_reject = s_edges[-1] * s_edges[-1] * (1.0 + 1e-9)  # surely beyond s_max; the exact test on s follows
    wrap_free = n_cells >= 2 * REFINE + 1
    largest = np.max(starts[1:] - starts[:-1])
    for a in numba.prange(n_cells**3):
        ax, ay, az = a // (n_cells * n_cells), (a // n_cells) % n_cells, a % n_cells
        s2 = np.empty(largest)  # squared separations of one point to a neighbour cell's points
        d = np.empty((3, largest))
        for k in range(offsets.shape[0]):
            b = (((ax + offsets[k, 0]) % n_cells) * n_cells + (ay + offsets[k, 1]) % n_cells) * n_cells + (
                az + offsets[k, 2]
            ) % n_cells
            if b < a:  # each cell pair once: from its lower cell
                continue
            # (p_j - p_i) - shift is the minimum image d - L round(d / L) of every pair of the two cells
            sx = _image_shift(ax, offsets[k, 0], n_cells, box, wrap_free)
            sy = _image_shift(ay, offsets[k, 1], n_cells, box, wrap_free)
            sz = _image_shift(az, offsets[k, 2], n_cells, box, wrap_free)
            lo_b, hi_b = starts[b], starts[b + 1]
            for i in range(starts[a], starts[a + 1]):
                first = i + 1 if b == a else lo_b
                m = hi_b - first
                if wrap_free:  # a branch-free loop the compiler vectorises
                    for t in range(m):
                        dx, dy, dz = (
                            (x[first + t] - x[i]) - sx,
                            (y[first + t] - y[i]) - sy,
                            (z[first + t] - z[i]) - sz,
                        )
                        d[0, t], d[1, t], d[2, t] = dx, dy, dz
                        s2[t] = dx * dx + dy * dy + dz * dz
                else:
                    for t in range(m):
                        dx = _minimum_image(x[first + t] - x[i], box)
                        dy = _minimum_image(y[first + t] - y[i], box)
                        dz = _minimum_image(z[first + t] - z[i], box)
                        d[0, t], d[1, t], d[2, t] = dx, dy, dz
                        s2[t] = dx * dx + dy * dy + dz * dz
                for t in range(m):
                    if s2[t] <= s2_reject:
                        _add_pair(counts[a], s2[t], d[los, t], s_edges, mu_edges)


@numba.njit(cache=True, nogil=True, boundscheck=False, inline="always")
def _add_pair(row: np.ndarray, s2: float, d_los: float, s_edges: np.ndarray, mu_edges: np.ndarray) -> None:
    """Bin one pair of squared separation s2 and line-of-sight component d_los into row (n_s * n_mu,)."""
    s = np.sqrt(s2)
    if s < s_edges[0] or s > s_edges[-1]:
        return
    n_mu = len(mu_edges) - 1
    mu = min(abs(d_los) / s, 1.0) if s > 0 else 0.0
    s_bin = _bin(s_edges, s, (len(s_edges) - 1) / (s_edges[-1] - s_edges[0]))
    row[s_bin * n_mu + _bin(mu_edges, mu, n_mu / (mu_edges[-1] - mu_edges[0]))] += 1
