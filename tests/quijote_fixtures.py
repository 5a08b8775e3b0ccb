"""Tiny Quijote trees in Quijote's exact on-disk layout, with the particles and haloes they hold.

Snapshots come from the package's synthetic writer (several Blosc-compressed files per snapshot,
kpc/h positions, velocities stored as v / sqrt(a)); this module adds FoF group_tab binaries over several
files, Rockstar lists, parameter tables and 3D_cubes grids, written from the format descriptions in
lss_lightning/data/quijote (and /work/shared/REFERENCES.md), not through the readers under test.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lss_lightning.data.quijote.synthetic import write_gadget_snapshot

BOX = 100.0  # Mpc/h
SNAPNUM, REDSHIFT = 3, 0.5  # z = 0.5 so that sqrt(a) and (1 + z) factors matter
CDM_MASS = 6.5e11  # Msun/h
NU_MASS = 5.0e10  # Msun/h
LH_ROWS = np.array(
    [
        [0.3175, 0.049, 0.6711, 0.9624, 0.834],
        [0.2100, 0.041, 0.7500, 1.0100, 0.700],
        [0.4200, 0.060, 0.5600, 0.8800, 0.910],
    ]
)
HALO_PARTICLES = np.array([3, 8, 18, 46, 92, 231, 615, 1385, 38, 123])  # member particles (FoF GroupLen)
HALO_MASSES = HALO_PARTICLES * CDM_MASS  # Msun/h, from 2e12 to 9e14
ROCKSTAR_COLUMNS = "ID DescID Mvir Vmax Vrms Rvir Rs Np X Y Z VX VY VZ JX JY JZ Spin M200c PID".split()


@dataclass
class Truth:
    """What one simulation of the tree holds, in project units."""

    positions: np.ndarray  # CDM (P, 3) Mpc/h
    velocities: np.ndarray  # CDM (P, 3) km/s peculiar
    nu_positions: np.ndarray | None
    nu_velocities: np.ndarray | None
    halo_positions: np.ndarray  # (H, 3) Mpc/h
    halo_velocities: np.ndarray  # (H, 3) km/s
    halo_masses: np.ndarray  # (H,) Msun/h
    halo_pid: np.ndarray  # (H,) -1 = host
    params: dict


def write_parameter_table(path: Path, rows: np.ndarray, header: str | None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ([header] if header else []) + [" ".join(f"{v:.8f}" for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_group_tab_files(base: Path, per_file: list[tuple[np.ndarray, ...]]) -> None:
    """FoF group_tab files: per file (positions Mpc/h, velocities km/s, masses Msun/h, member counts)."""
    base.parent.mkdir(parents=True, exist_ok=True)
    total = sum(len(part[2]) for part in per_file)
    for j, (pos, vel, mass, count) in enumerate(per_file):
        n = len(mass)
        with open(base.with_name(f"{base.name}.{j}"), "wb") as f:
            np.array([n, total, 20 * n], dtype="<i4").tofile(f)  # Ngroups, TotNgroups, Nids
            np.array([20 * total], dtype="<u8").tofile(f)  # TotNids
            np.array([len(per_file)], dtype="<u4").tofile(f)  # Nfiles
            count.astype("<i4").tofile(f)  # GroupLen
            np.arange(n, dtype="<i4").tofile(f)  # GroupOffset
            (mass / 1e10).astype("<f4").tofile(f)  # GroupMass, 1e10 Msun/h
            (pos * 1e3).astype("<f4").tofile(f)  # GroupPos, kpc/h
            (vel / (1 + REDSHIFT)).astype("<f4").tofile(f)  # GroupVel, times (1+z) = km/s
            np.zeros((n, 6), dtype="<i4").tofile(f)  # GroupTLen
            np.zeros((n, 6), dtype="<f4").tofile(f)  # GroupTMass


def write_rockstar_list(path: Path, truth: Truth, columns: list[str] = ROCKSTAR_COLUMNS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(truth.halo_masses)
    values = {
        "ID": np.arange(n),
        "DescID": -np.ones(n),
        "Mvir": truth.halo_masses,
        "M200c": 0.9 * truth.halo_masses,
        "PID": truth.halo_pid,
        "Np": HALO_PARTICLES,
        **{c: truth.halo_positions[:, i] for i, c in enumerate("XYZ")},
        **{c: truth.halo_velocities[:, i] for i, c in enumerate(("VX", "VY", "VZ"))},
    }
    lines = [
        "#" + " ".join(columns),
        f"#a = {1 / (1 + REDSHIFT):.6f}",
        "#Om = 0.317500; Ol = 0.682500; h = 0.671100",
        "#FOF linking length: 0.280000",
        "#Unbound Threshold: 0.500000; FOF Refinement Threshold: 0.700000",
        f"#Particle mass: {CDM_MASS:.5e} Msun/h",
        f"#Box size: {BOX:.6f} Mpc/h",
        "#Units: Masses in Msun / h",
        "#Units: Positions in Mpc / h (comoving)",
        "#Units: Velocities in km / s (physical, peculiar)",
    ]
    for k in range(n):
        lines.append(" ".join(f"{float(values.get(c, np.zeros(n))[k]):.7g}" for c in columns))
    path.write_text("\n".join(lines) + "\n")
    return path


def make_truth(seed: int, params: dict, n_particles: int = 240, neutrinos: bool = False) -> Truth:
    rng = np.random.default_rng(seed)
    pos = rng.random((n_particles, 3)) * BOX
    vel = rng.normal(0, 250, (n_particles, 3))
    n_h = len(HALO_MASSES)
    return Truth(
        positions=pos,
        velocities=vel,
        nu_positions=rng.random((60, 3)) * BOX if neutrinos else None,
        nu_velocities=rng.normal(0, 900, (60, 3)) if neutrinos else None,
        halo_positions=rng.random((n_h, 3)) * BOX,
        halo_velocities=rng.normal(0, 300, (n_h, 3)),
        halo_masses=HALO_MASSES.copy(),
        halo_pid=np.where(np.arange(n_h) % 4 == 3, 0, -1),  # every fourth halo is a subhalo
        params=params,
    )


def make_quijote_tree(
    root: Path,
    set_name: str = "latin_hypercube",
    n_sims: int = 3,
    *,
    n_files: int = 3,
    neutrinos: bool = False,
    param_header: str | None = "# Omega_m Omega_b h n_s sigma_8",
) -> list[Truth]:
    """Snapshots, FoF, Rockstar and (for LH sets) the parameter table of ``n_sims`` simulations."""
    truths = []
    for i in range(n_sims):
        row = LH_ROWS[i % len(LH_ROWS)]
        params = dict(zip(("Omega_m", "Omega_b", "h", "n_s", "sigma_8"), row.tolist(), strict=True))
        if not set_name.startswith("latin_hypercube"):
            params = dict(zip(params, LH_ROWS[0].tolist(), strict=True))
        truth = make_truth(100 + i, params, neutrinos=neutrinos)
        particles = {1: (truth.positions, truth.velocities)}
        masses = {1: CDM_MASS}
        if neutrinos:
            particles[2] = (truth.nu_positions, truth.nu_velocities)
            masses[2] = NU_MASS
        sim = f"{set_name}/{i}"
        write_gadget_snapshot(
            root / f"Snapshots/{sim}/snapdir_{SNAPNUM:03d}/snap_{SNAPNUM:03d}",
            particles,
            masses=masses,
            box_size=BOX,
            redshift=REDSHIFT,
            n_files=n_files,
            cosmology=(params["Omega_m"], 1 - params["Omega_m"], params["h"]),
        )
        ics = root / f"Snapshots/{sim}/ICs"
        ics.mkdir(parents=True)
        (ics / "2LPT.param").write_text(f"Nmesh 1024\nSeed {1000 + i}   % the seed\nBox 1000000.0\n")
        split = [slice(0, 4), slice(4, 4), slice(4, None)]  # three FoF files, the middle one empty
        write_group_tab_files(
            root / f"Halos/FoF/{sim}/groups_{SNAPNUM:03d}/group_tab_{SNAPNUM:03d}",
            [
                (truth.halo_positions[s], truth.halo_velocities[s], truth.halo_masses[s], HALO_PARTICLES[s])
                for s in split
            ],
        )
        write_rockstar_list(root / f"Halos/Rockstar/{sim}/out_{SNAPNUM}_pid.list", truth)
        truths.append(truth)
    if set_name.startswith("latin_hypercube"):
        write_parameter_table(
            root / f"Snapshots/{set_name}/latin_hypercube_params.txt",
            LH_ROWS[np.arange(n_sims) % len(LH_ROWS)],
            param_header,
        )
    return truths
