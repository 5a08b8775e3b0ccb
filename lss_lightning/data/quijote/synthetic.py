"""Synthetic snapshots written in Quijote's exact Gadget HDF5 layout (for tests, benchmarks, dry runs).

Lives in the package because both the test suite and ``bench/bench_quijote_conversion.py`` write them.
Files ``<base>.<j>.hdf5`` carry the Gadget header (BoxSize in kpc/h, Time, Redshift, MassTable in
1e10 Msun/h, NumPart_ThisFile, NumPart_Total + NumPart_Total_HighWord, NumFilesPerSnapshot, Omega0,
OmegaLambda, HubbleParam) and ``PartType<t>/{Coordinates, Velocities, ParticleIDs}`` with positions in
kpc/h and velocities stored as u = v / sqrt(a), Blosc/zstd-compressed as Quijote's since 2023.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np

from lss_lightning.cosmology import Cosmology
from lss_lightning.data.quijote.snapshots import GADGET_MASS_UNIT, KPC_TO_MPC

N_TYPES = 6


def _blosc() -> dict:
    return dict(hdf5plugin.Blosc(cname="zstd", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE))


_F = Cosmology()  # Quijote's fiducial cosmology
GADGET_FIDUCIAL = (_F.Omega_m, 1.0 - _F.Omega_m, _F.h)  # the header's Omega0, OmegaLambda, HubbleParam


def write_snapshot_file(
    path: Path,
    particles: Mapping[int, tuple[np.ndarray, np.ndarray]],
    *,
    totals: list[int],
    masses: Mapping[int, float],
    box_size: float,
    redshift: float,
    n_files: int,
    first_id: Mapping[int, int] | None = None,
    cosmology: tuple[float, float, float] = GADGET_FIDUCIAL,
    compress: bool = True,
) -> None:
    """One file of a snapshot: particles type -> (positions Mpc/h, velocities km/s) held by this file."""
    a = 1.0 / (1.0 + redshift)
    this_file = np.zeros(N_TYPES, dtype=np.int32)
    for t, (pos, _) in particles.items():
        this_file[t] = len(pos)
    totals = np.asarray(totals, dtype=np.uint64)
    with h5py.File(path, "w") as f:
        header = f.create_group("Header")
        header.attrs.update(
            {
                "BoxSize": box_size / KPC_TO_MPC,
                "Time": a,
                "Redshift": redshift,
                "MassTable": np.array([masses.get(t, 0.0) / GADGET_MASS_UNIT for t in range(N_TYPES)]),
                "NumPart_ThisFile": this_file,
                "NumPart_Total": (totals & 0xFFFFFFFF).astype(np.uint32),
                "NumPart_Total_HighWord": (totals >> np.uint64(32)).astype(np.uint32),
                "NumFilesPerSnapshot": np.int32(n_files),
                "Omega0": cosmology[0],
                "OmegaLambda": cosmology[1],
                "HubbleParam": cosmology[2],
                "Flag_DoublePrecision": np.int32(0),
            }
        )
        for t, (pos, vel) in particles.items():
            if not len(pos):
                continue
            group = f.create_group(f"PartType{t}")
            opts = dict(chunks=(min(len(pos), 65536), 3), **_blosc()) if compress else {}
            group.create_dataset(
                "Coordinates", data=(np.asarray(pos) / KPC_TO_MPC).astype(np.float32), **opts
            )
            group.create_dataset("Velocities", data=(np.asarray(vel) / np.sqrt(a)).astype(np.float32), **opts)
            start = (first_id or {}).get(t, 0)
            group.create_dataset("ParticleIDs", data=np.arange(start, start + len(pos), dtype=np.uint32) + 1)


def write_gadget_snapshot(
    base: str | Path,
    particles: Mapping[int, tuple[np.ndarray, np.ndarray]],
    *,
    masses: Mapping[int, float],
    box_size: float,
    redshift: float,
    n_files: int,
    cosmology: tuple[float, float, float] = GADGET_FIDUCIAL,
    compress: bool = True,
) -> list[Path]:
    """Split each type's (positions Mpc/h, velocities km/s) over ``n_files`` files ``<base>.<j>.hdf5``."""
    base = Path(base)
    base.parent.mkdir(parents=True, exist_ok=True)
    totals = [len(particles[t][0]) if t in particles else 0 for t in range(N_TYPES)]
    splits = {t: np.array_split(np.arange(len(p[0])), n_files) for t, p in particles.items()}
    paths = []
    for j in range(n_files):
        part = {t: (p[0][splits[t][j]], p[1][splits[t][j]]) for t, p in particles.items()}
        first = {t: int(splits[t][j][0]) if len(splits[t][j]) else 0 for t in particles}
        path = base.with_name(f"{base.name}.{j}.hdf5")
        header = {"totals": totals, "masses": masses, "box_size": box_size, "redshift": redshift}
        write_snapshot_file(
            path, part, n_files=n_files, first_id=first, cosmology=cosmology, compress=compress, **header
        )
        paths.append(path)
    return paths


def write_random_snapshot(
    base: str | Path,
    n_particles: int,
    *,
    box_size: float = 1000.0,
    n_files: int = 8,
    redshift: float = 0.0,
    velocity_rms: float = 300.0,
    particle_mass: float = 6.56e11,
    seed: int = 0,
) -> list[Path]:
    """CDM particles uniform in the box with Gaussian velocities, generated and written one file at a time."""
    base = Path(base)
    base.parent.mkdir(parents=True, exist_ok=True)
    counts = [len(c) for c in np.array_split(np.arange(n_particles), n_files)]
    totals = [0, n_particles, 0, 0, 0, 0]
    rng = np.random.default_rng(seed)
    paths, start = [], 0
    for j, n in enumerate(counts):
        pos = rng.random((n, 3), dtype=np.float32) * np.float32(box_size)
        vel = rng.standard_normal((n, 3), dtype=np.float32) * np.float32(velocity_rms / np.sqrt(3))
        path = base.with_name(f"{base.name}.{j}.hdf5")
        write_snapshot_file(
            path,
            {1: (pos, vel)},
            totals=totals,
            masses={1: particle_mass},
            box_size=box_size,
            redshift=redshift,
            n_files=n_files,
            first_id={1: start},
        )
        paths.append(path)
        start += n
    return paths
