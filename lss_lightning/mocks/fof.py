"""Friends-of-friends haloes from simulation particles, in a periodic box.

Two particles are friends when closer than b times the mean interparticle separation (b = 0.2 by
default, as Quijote's FoF); a halo is a connected group of friends with at least ``min_particles``
members (20 by default). Per halo: the centre of mass taken across the periodic boundary (members are
unwrapped around their first member before averaging), the mean velocity, the mass n m_p and the count n.

The neighbour search is scipy's cKDTree with ``boxsize`` (periodic), the groups scipy.sparse.csgraph's
connected components: both compiled, well kept and exact. Measured on 128^3 PM particles (bench_pm.py),
the pair search dominates and a torch cell-list version would not beat the compiled tree on a CPU.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from lss_lightning.cosmology import Cosmology
from lss_lightning.store.schema import HaloCatalogue

RHO_CRIT = 2.77536627e11  # critical density today in (Msun/h) / (Mpc/h)^3


def particle_mass(cosmology: Cosmology, box_size: float, particles_per_side: int) -> float:
    """Mass of one particle, Omega_m rho_crit (L / N)^3, in Msun/h (all matter, neutrinos included)."""
    return cosmology.Omega_m * RHO_CRIT * (box_size / particles_per_side) ** 3


def _as_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def fof_labels(positions: np.ndarray, box_size: float, linking_length: float) -> tuple[np.ndarray, int]:
    """Group label of every particle (P,) and the number of groups (singletons included).

    positions (P, 3) in Mpc/h, any real values (wrapped here); linking_length in Mpc/h.
    """
    pos = np.mod(np.asarray(positions, dtype=np.float64), box_size)
    pos[pos >= box_size] = 0.0  # np.mod can round a tiny negative value up to box_size
    tree = cKDTree(pos, boxsize=box_size)
    pairs = tree.query_pairs(linking_length, output_type="ndarray")
    n = len(pos)
    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    n_groups, labels = connected_components(graph, directed=False)
    return labels, n_groups


def friends_of_friends(
    positions,
    velocities,
    box_size: float,
    *,
    particle_mass: float,
    mean_separation: float,
    linking_length: float = 0.2,
    min_particles: int = 20,
) -> tuple[HaloCatalogue, np.ndarray]:
    """FoF haloes of particles (positions (P, 3) Mpc/h, peculiar velocities (P, 3) km/s).

    linking_length is in units of ``mean_separation`` (Mpc/h). Returns the catalogue, sorted by
    decreasing mass, and each particle's halo index (-1 outside haloes).
    """
    if linking_length <= 0 or min_particles < 2:
        raise ValueError(
            f"need linking_length > 0 and min_particles >= 2, got {linking_length}, {min_particles}"
        )
    pos = np.mod(_as_numpy(positions).astype(np.float64), box_size)
    vel = _as_numpy(velocities).astype(np.float64)
    labels, n_groups = fof_labels(pos, box_size, linking_length * mean_separation)
    counts = np.bincount(labels, minlength=n_groups)
    keep = counts >= min_particles
    # halo index per group, largest first (ties by first member: deterministic)
    first_member = np.full(n_groups, len(pos), dtype=np.int64)
    np.minimum.at(first_member, labels, np.arange(len(pos)))
    kept = np.flatnonzero(keep)
    kept = kept[np.lexsort((first_member[kept], -counts[kept]))]
    halo_of_group = np.full(n_groups, -1, dtype=np.int64)
    halo_of_group[kept] = np.arange(len(kept))
    halo = halo_of_group[labels]
    members = halo >= 0
    h, n = halo[members], counts[kept]
    # centre of mass across the boundary: offsets from each halo's first member, wrapped to [-L/2, L/2)
    anchor = pos[first_member[kept]]
    offset = pos[members] - anchor[h]
    offset -= box_size * np.round(offset / box_size)
    centre = np.stack([np.bincount(h, offset[:, i], len(kept)) for i in range(3)], axis=1) / n[:, None]
    centre = np.mod(anchor + centre, box_size)
    centre[centre >= box_size] = 0.0
    mean_v = np.stack([np.bincount(h, vel[members, i], len(kept)) for i in range(3)], axis=1) / n[:, None]
    catalogue = HaloCatalogue(
        positions=centre.astype(np.float32),
        velocities=mean_v.astype(np.float32),
        masses=n.astype(np.float64) * particle_mass,
        n_particles=n.astype(np.int64),
        particle_mass=float(particle_mass),
        linking_length=float(linking_length),
        min_particles=int(min_particles),
        finder="fof",
        source="lss_lightning.mocks.fof",
    )
    return catalogue, halo
