"""Two-point correlation of haloes in a periodic box: xi(s, mu), its Legendre multipoles, Kaiser's prediction.

Pairs are counted with scipy's cKDTree (periodic ``boxsize``, all pairs closer than s_max, each unordered
pair once) and binned in separation s (Mpc/h) and mu = |s_los| / s in [0, 1] (along ``los_axis``).
Estimator: natural, xi = DD / RR - 1 with the analytic RR of a periodic box,
RR = N (N - 1) / 2 * (4 pi / 3) (s_hi^3 - s_lo^3) * dmu / V, to which Landy-Szalay reduces when the
randoms are uniform in a periodic box. Multipoles xi_l(s) = (2 l + 1) int_0^1 xi(s, mu) L_l(mu) dmu
(midpoint rule in mu; even l, since xi(s, mu) = xi(s, -mu)); xi_1D(mu) = int xi(s, mu) ds over the s range
(Mpc/h), as in Wu et al. 2023's figure. Pairs are counted by a compiled cell list (``evaluate.pair_counting``)
or streamed from cKDTree in chunks and binned on the fly (``tree_pair_counts``, memory bounded by
``PAIRS_PER_CHUNK``); neither holds the pairs, and both give the same counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from lss_lightning.fields.kernels import legendre


@dataclass(frozen=True)
class CorrelationSMu:
    """Pair counts and xi(s, mu) of one catalogue (or summed over several boxes)."""

    s_edges: np.ndarray  # Mpc/h
    mu_edges: np.ndarray
    dd: np.ndarray  # (n_s, n_mu) pair counts
    rr: np.ndarray  # (n_s, n_mu) expected counts of a uniform catalogue of the same size

    @property
    def s(self) -> np.ndarray:
        """Pair-weighted mean separation of each s bin for a uniform catalogue: 3/4 (s2^4 - s1^4)/(s2^3 - s1^3)."""
        lo, hi = self.s_edges[:-1], self.s_edges[1:]
        return 0.75 * (hi**4 - lo**4) / (hi**3 - lo**3)

    @property
    def mu(self) -> np.ndarray:
        return 0.5 * (self.mu_edges[:-1] + self.mu_edges[1:])

    @property
    def xi(self) -> np.ndarray:
        return self.dd / self.rr - 1.0

    def multipoles(self, ells=(0, 2, 4)) -> dict[int, np.ndarray]:
        dmu = np.diff(self.mu_edges)
        return {ell: (2 * ell + 1) * (self.xi * legendre(ell, self.mu) * dmu).sum(axis=1) for ell in ells}

    def xi_of_mu(self) -> np.ndarray:
        """xi_1D(mu) = int xi(s, mu) ds over the s range, in Mpc/h."""
        return (self.xi * np.diff(self.s_edges)[:, None]).sum(axis=0)

    def xi_monopole_error(self) -> np.ndarray:
        """Poisson error of xi_0 from the pair counts alone: (1 + xi_0) / sqrt(DD summed over mu)."""
        dd = self.dd.sum(axis=1)
        return (dd / self.rr.sum(axis=1)) / np.sqrt(np.maximum(dd, 1))

    def __add__(self, other: CorrelationSMu) -> CorrelationSMu:
        """Counts of several boxes added: xi of the combined volume."""
        if not (
            np.array_equal(self.s_edges, other.s_edges) and np.array_equal(self.mu_edges, other.mu_edges)
        ):
            raise ValueError("cannot add pair counts binned differently")
        return CorrelationSMu(self.s_edges, self.mu_edges, self.dd + other.dd, self.rr + other.rr)


def correlation_s_mu(
    positions: np.ndarray,
    box_size: float,
    s_edges: np.ndarray,
    n_mu: int = 20,
    los_axis: int = 2,
) -> CorrelationSMu:
    """xi(s, mu) of points (P, 3) in Mpc/h in a periodic box (positions wrapped into [0, L) here)."""
    s_edges = np.asarray(s_edges, dtype=float)
    if s_edges.ndim != 1 or len(s_edges) < 2 or np.any(np.diff(s_edges) <= 0) or s_edges[0] < 0:
        raise ValueError(f"s_edges must increase from >= 0, got {s_edges}")
    if s_edges[-1] >= box_size / 2:
        raise ValueError(
            f"s_max = {s_edges[-1]} Mpc/h must stay below half the box ({box_size / 2}) in a periodic box"
        )
    if los_axis not in (0, 1, 2):
        raise ValueError(f"los_axis must be 0, 1 or 2, got {los_axis}")
    pos = np.mod(np.asarray(positions, dtype=np.float64), box_size)
    pos[pos >= box_size] = 0.0
    mu_edges = np.linspace(0.0, 1.0, n_mu + 1)
    n = len(pos)
    dd = pair_counts(pos, box_size, s_edges, n_mu, los_axis).astype(np.float64)
    shell = 4.0 * np.pi / 3.0 * (s_edges[1:] ** 3 - s_edges[:-1] ** 3)
    rr = 0.5 * n * (n - 1) * shell[:, None] * np.diff(mu_edges)[None, :] / box_size**3
    return CorrelationSMu(s_edges, mu_edges, dd, rr)


PAIRS_PER_CHUNK = 2_000_000  # pairs held at once while counting (~100 bytes each): memory bounded by this


def pair_counts(
    pos: np.ndarray,
    box_size: float,
    s_edges: np.ndarray,
    n_mu: int,
    los_axis: int,
    method: str = "compiled",
    pairs_per_chunk: int = PAIRS_PER_CHUNK,
) -> np.ndarray:
    """(n_s, n_mu) counts of unordered pairs of points (P, 3) in [0, L) by separation s and mu = |s_los| / s.

    method: "compiled", the cell list of ``evaluate.pair_counting`` (numba, parallel, no memory per pair), or
    "tree", the streamed cKDTree search (:func:`tree_pair_counts`); both give the same integers."""
    if method == "compiled":
        from lss_lightning.evaluate.pair_counting import cell_pair_counts

        return cell_pair_counts(pos, box_size, s_edges, np.linspace(0.0, 1.0, n_mu + 1), los_axis)
    if method != "tree":
        raise ValueError(f"pair_counts method must be 'compiled' or 'tree', got {method!r}")
    return tree_pair_counts(pos, box_size, s_edges, n_mu, los_axis, pairs_per_chunk)


def tree_pair_counts(
    pos: np.ndarray,
    box_size: float,
    s_edges: np.ndarray,
    n_mu: int,
    los_axis: int,
    pairs_per_chunk: int = PAIRS_PER_CHUNK,
) -> np.ndarray:
    """(n_s, n_mu) counts of unordered pairs by separation s and mu = |s_los| / s, streamed: the points are
    taken in chunks, each chunk's pairs with the points after its start found by scipy's periodic cKDTree
    (``sparse_distance_matrix``), binned with ``bincount`` and dropped, so memory follows the chunk, not the
    number of pairs. Positions in [0, L). Every unordered pair is counted once. The points are sorted along x
    first (the counts do not depend on their order), so a chunk is a slab of the box and its search is local."""
    pos = pos[np.argsort(pos[:, 0], kind="stable")]
    n = len(pos)
    s_max = float(s_edges[-1])
    neighbours = max(n / box_size**3 * 4.0 / 3.0 * np.pi * s_max**3, 1.0)  # points within s_max of a point
    chunk = int(max(64, min(n, pairs_per_chunk / neighbours)))
    counts = np.zeros((len(s_edges) - 1) * n_mu, dtype=np.int64)
    mu_edges = np.linspace(0.0, 1.0, n_mu + 1)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        rest = cKDTree(pos[start:], boxsize=box_size)  # the points after this chunk's start
        found = cKDTree(pos[start:stop], boxsize=box_size).sparse_distance_matrix(
            rest, s_max, output_type="ndarray"
        )
        i, j = found["i"], found["j"]  # j counts from ``start``; i < j keeps each pair once
        keep = i < j
        i, j = i[keep] + start, j[keep] + start
        d = pos[j] - pos[i]
        d -= box_size * np.round(d / box_size)
        s = np.sqrt((d * d).sum(axis=1))
        mu = np.minimum(np.abs(d[:, los_axis]) / np.where(s > 0, s, 1.0), 1.0)
        # [lo, hi) bins, the last one closed, as numpy's histogram
        s_bin = np.minimum(np.searchsorted(s_edges, s, side="right") - 1, len(s_edges) - 2)
        mu_bin = np.minimum(np.searchsorted(mu_edges, mu, side="right") - 1, n_mu - 1)
        inside = (s >= s_edges[0]) & (s <= s_edges[-1])
        counts += np.bincount(s_bin[inside] * n_mu + mu_bin[inside], minlength=counts.size)
    return counts.reshape(len(s_edges) - 1, n_mu)


def volume_average(r: np.ndarray, xi: np.ndarray, power: int = 2) -> np.ndarray:
    """(power + 1) / r^(power + 1) int_0^r xi r'^power dr': xibar for power 2, xibarbar for power 4.

    Trapezoids from r = 0 over the tabulated points, with xi held at its first value below r[0].
    """
    r, xi = np.asarray(r, float), np.asarray(xi, float)
    grid, values = np.r_[0.0, r], np.r_[xi[0], xi]
    integrand = values * grid**power
    cumulative = np.r_[0.0, np.cumsum(0.5 * (integrand[1:] + integrand[:-1]) * np.diff(grid))]
    return (power + 1) * cumulative[1:] / r ** (power + 1)


def kaiser_multipoles(r: np.ndarray, xi: np.ndarray, beta: float) -> dict[int, np.ndarray]:
    """Linear redshift-space multipoles (Kaiser 1987, Hamilton 1992) from the real-space xi(r), beta = f / b."""
    xi = np.asarray(xi, float)
    xibar, xibarbar = volume_average(r, xi, 2), volume_average(r, xi, 4)
    return {
        0: (1 + 2 * beta / 3 + beta**2 / 5) * xi,
        2: (4 * beta / 3 + 4 * beta**2 / 7) * (xi - xibar),
        4: 8 * beta**2 / 35 * (xi + 2.5 * xibar - 3.5 * xibarbar),
    }
