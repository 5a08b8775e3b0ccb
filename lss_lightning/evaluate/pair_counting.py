"""Compiled pair counts DD(s, mu) in a periodic box (numba): a cell list, every unordered pair once.

The points (P, 3) Mpc/h in [0, L) are sorted into a grid of cells of side >= s_max / R (R = 2 or 3, see
:func:`refinement`); each cell is paired with the cells within R cells of it along each axis (periodic; the same
cell pair only once, so a grid of fewer than 2 R + 1 cells per side still counts every pair once, down to all
pairs of a one-cell grid).
Each candidate pair's separation is the minimum image d - L round(d / L), its s = sqrt(dx^2 + dy^2 + dz^2) and
mu = min(|d_los| / s, 1) binned as ``evaluate.clustering.pair_counts`` bins them ([lo, hi) bins, the last one
closed; the same float64 operations in the same order), so both give the same integers (tests). Runs of cells
are counted in parallel (numba's threads, as many as torch's), each into its own row of counts, summed at the
end: no races.
Written by hand because the one library that does this (Corrfunc) needs libgsl and is not a dependency.
"""

from __future__ import annotations

import numba
import numpy as np

from lss_lightning.fields.compiled import use_torch_threads

DENSE = 4.0  # points per cell of side s_max / 3 from which 3 cells per s_max beat 2 (measured: below)
# parallel tasks, each a run of cells with its own scratch and row of counts (one per cell: 13 against 11 ms at
# 3,000 points on 1,728 cells, L = 256, s_max = 60 Mpc/h)
RUNS = 64


def cell_pair_counts(
    pos: np.ndarray,
    box_size: float,
    s_edges: np.ndarray,
    mu_edges: np.ndarray,
    los_axis: int,
    refine: int | None = None,
) -> np.ndarray:
    """(n_s, n_mu) int64 counts of unordered pairs of points (P, 3) in [0, L) Mpc/h, float64; ``refine``: cells
    per s_max (None: :func:`refinement`'s choice)."""
    s_max = float(s_edges[-1])
    refine = refinement(len(pos), box_size, s_max) if refine is None else int(refine)
    n_cells = max(1, int(box_size // (s_max / refine)))
    cell_of = np.minimum((pos * (n_cells / box_size)).astype(np.int64), n_cells - 1)
    flat = (cell_of[:, 0] * n_cells + cell_of[:, 1]) * n_cells + cell_of[:, 2]
    order = np.argsort(flat, kind="stable")
    starts = np.zeros(n_cells**3 + 1, dtype=np.int64)
    np.cumsum(np.bincount(flat, minlength=n_cells**3), out=starts[1:])
    runs = min(n_cells**3, RUNS)
    counts = np.zeros((runs, (len(s_edges) - 1) * (len(mu_edges) - 1)), dtype=np.int64)
    use_torch_threads()
    xyz = np.ascontiguousarray(pos[order].T, dtype=np.float64)  # (3, P): x, y, z each contiguous (SIMD)
    _count_cells(
        xyz[0],
        xyz[1],
        xyz[2],
        starts,
        n_cells,
        _neighbour_offsets(n_cells, box_size / n_cells, s_max, refine),
        refine,
        float(box_size),
        np.asarray(s_edges, dtype=np.float64),
        np.asarray(mu_edges, dtype=np.float64),
        int(los_axis),
        counts,
    )
    return counts.sum(axis=0).reshape(len(s_edges) - 1, len(mu_edges) - 1)


def refinement(points: int, box_size: float, s_max: float) -> int:
    """Cells per s_max: 3 where a cell of side s_max / 3 holds at least DENSE points on average, else 2. Finer
    cells cut the candidate pairs (the neighbours that cannot hold a pair within s_max are left out, so the
    candidates fill little more than the sphere), coarser ones the work per cell pair: 30,000 points in
    256 Mpc/h (15.6 per finer cell) took 0.34 s at 3 and 0.44 s at 2; 3,000 points (1.6 per cell) 13 ms at 3
    and 7 ms at 2 (s_max 60 Mpc/h, one process, medians of 7)."""
    finer = max(1, int(box_size // (s_max / 3)))
    return 3 if points / finer**3 >= DENSE else 2


def _neighbour_offsets(n_cells: int, width: float, s_max: float, refine: int) -> np.ndarray:
    """(K, 3) distinct cell offsets within ``refine`` cells along each axis, modulo the grid (so a small grid lists
    each neighbouring cell once). On a wrap-free grid an offset is dropped where its cells (side ``width``) are
    farther apart than s_max: their closest points are (|step| - 1) width apart along each axis (with a 1e-6
    margin for the rounding of the cell assignment)."""
    steps = np.arange(-refine, refine + 1)
    grid = np.stack(np.meshgrid(steps, steps, steps, indexing="ij"), -1).reshape(-1, 3)
    if n_cells >= 2 * refine + 1:
        gap = np.maximum(np.abs(grid) - 1, 0) * width
        grid = grid[(gap**2).sum(axis=1) <= s_max**2 * (1.0 + 1e-6)]
    return np.unique(grid % n_cells, axis=0).astype(np.int64)


@numba.njit(cache=True, nogil=True, boundscheck=False, inline="always")
def _settle(edges: np.ndarray, value: float, k: int) -> int:
    """searchsorted(edges, value, side="right") - 1, clipped to the last bin (numpy's histogram rule), from a
    guess k in range (the mean bin width's): exact for any increasing edges, no step for even ones."""
    last = len(edges) - 2
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
def _image_shift(cell: int, offset: int, n_cells: int, refine: int, box: float, wrap_free: bool) -> float:
    """The periodic shift (0 or +-L) of the pairs between a cell and its neighbour ``offset`` cells away along
    one axis (offset in [0, n_cells) modulo the grid); NaN where it is not one shift for all of them (a grid of
    fewer than 2 refine + 1 cells)."""
    if not wrap_free:
        return np.nan
    step = offset if offset <= refine else offset - n_cells  # -refine..refine
    target = cell + step
    return -box if target >= n_cells else (box if target < 0 else 0.0)  # d - shift: +L across the top


@numba.njit(cache=True, nogil=True, boundscheck=False, parallel=True, error_model="numpy")
def _count_cells(x, y, z, starts, n_cells, offsets, refine, box, s_edges, mu_edges, los, counts):
    """counts[c] += the pairs of the cells a of run c with themselves and with their neighbours b > a (see the
    module docstring)."""
    wrap_free = n_cells >= 2 * refine + 1
    largest = np.max(starts[1:] - starts[:-1])
    cells = n_cells**3
    n_mu, s_lo, s_hi, mu_lo = len(mu_edges) - 1, s_edges[0], s_edges[-1], mu_edges[0]
    bins = (  # s^2 surely beyond s_max (the exact test on s follows), edges, 1 / mean bin widths, last bins
        s_hi * s_hi * (1.0 + 1e-9), s_lo, s_hi, mu_lo, (len(s_edges) - 1) / (s_hi - s_lo),
        n_mu / (mu_edges[-1] - mu_lo), len(s_edges) - 2, n_mu - 1,
    )  # fmt: skip
    for c in numba.prange(counts.shape[0]):  # a run of cells per task: its own work arrays and row of counts
        d, s2 = np.empty((3, largest)), np.empty(largest)  # one point against one cell's points
        kept_s, kept_mu = np.empty(largest), np.empty(largest)  # the pairs within s_max: s^2, d_los; s, mu
        guess_s, guess_mu = np.empty(largest, np.int64), np.empty(largest, np.int64)
        row = counts[c]
        for a in range(c * cells // counts.shape[0], (c + 1) * cells // counts.shape[0]):
            ax, ay, az = a // (n_cells * n_cells), (a // n_cells) % n_cells, a % n_cells
            for k in range(offsets.shape[0]):
                b = (
                    ((ax + offsets[k, 0]) % n_cells) * n_cells + (ay + offsets[k, 1]) % n_cells
                ) * n_cells + (az + offsets[k, 2]) % n_cells
                if b < a:  # each cell pair once: from its lower cell
                    continue
                # (p_j - p_i) - shift is the minimum image d - L round(d / L) of every pair of the two cells
                shift = (
                    _image_shift(ax, offsets[k, 0], n_cells, refine, box, wrap_free),
                    _image_shift(ay, offsets[k, 1], n_cells, refine, box, wrap_free),
                    _image_shift(az, offsets[k, 2], n_cells, refine, box, wrap_free),
                )
                for i in range(starts[a], starts[a + 1]):
                    first = i + 1 if b == a else starts[b]
                    _count_point(
                        x, y, z, i, first, starts[b + 1], shift, wrap_free, box, los, s_edges, mu_edges, bins,
                        d, s2, kept_s, kept_mu, guess_s, guess_mu, row,
                    )  # fmt: skip


@numba.njit(cache=True, nogil=True, boundscheck=False, inline="always", error_model="numpy")
def _count_point(
    x, y, z, i, first, stop, shift, wrap_free, box, los, s_edges, mu_edges, bins,
    d, s2, kept_s, kept_mu, guess_s, guess_mu, row,
):  # fmt: skip
    """row += the pairs of point i with points first..stop - 1 (one neighbour cell), in three loops: the
    separations (vectorised), a branch-free compaction of the pairs within s_max (1 in 4: a branch would
    mispredict), then s, mu and bin guesses (vectorised square roots and divisions) and the exact bins."""
    m = stop - first
    if wrap_free:  # a branch-free loop the compiler vectorises
        for t in range(m):
            dx, dy, dz = (
                (x[first + t] - x[i]) - shift[0],
                (y[first + t] - y[i]) - shift[1],
                (z[first + t] - z[i]) - shift[2],
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
    s2_reject, s_lo, s_hi, mu_lo, inv_s, inv_mu, last_s, last_mu = bins
    accepted = 0
    for t in range(m):
        kept_s[accepted], kept_mu[accepted] = s2[t], d[los, t]
        accepted += s2[t] <= s2_reject
    for u in range(accepted):
        s = np.sqrt(kept_s[u])
        ratio = abs(kept_mu[u]) / s
        mu = min(ratio, 1.0) if s > 0 else 0.0
        kept_s[u], kept_mu[u] = s, mu
        guess_s[u] = min(max(np.int64((s - s_lo) * inv_s), 0), last_s)
        guess_mu[u] = min(max(np.int64((mu - mu_lo) * inv_mu), 0), last_mu)
    n_mu = last_mu + 1
    for u in range(accepted):
        s = kept_s[u]
        if s < s_lo or s > s_hi:
            continue
        row[_settle(s_edges, s, guess_s[u]) * n_mu + _settle(mu_edges, kept_mu[u], guess_mu[u])] += 1
