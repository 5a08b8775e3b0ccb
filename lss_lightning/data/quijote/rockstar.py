"""Rockstar ASCII halo catalogues (``out_N.list``, or ``out_N_pid.list`` with parent IDs).

The first ``#`` line names the columns (read them; their order and set depend on the Rockstar
version and MASS_DEFINITION); more ``#`` lines follow (``#a = <scale factor>``, units, box size).
Units: positions X Y Z in comoving Mpc/h, velocities VX VY VZ peculiar km/s, masses Msun/h.
Host haloes have PID = -1 (the PID column comes from Rockstar's find_parents, i.e. ``*_pid.list``).
``#FOF linking length: b`` and ``#Particle mass: m Msun/h`` header lines and the ``Np`` column are read
when present (NaN / -1 otherwise).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from lss_lightning.data.quijote.errors import QuijoteError
from lss_lightning.data.quijote.layout import missing_path_error
from lss_lightning.store.schema import UNKNOWN_COUNT, HaloCatalogue

POSITION_COLUMNS = ("X", "Y", "Z")
VELOCITY_COLUMNS = ("VX", "VY", "VZ")
PARENT_COLUMN = "PID"
COUNT_COLUMN = "Np"
HEADER_NUMBERS = {  # header line -> key
    "a": re.compile(r"^#\s*a\s*=\s*([0-9.eE+-]+)"),
    "linking_length": re.compile(r"^#\s*FOF linking length:\s*([0-9.eE+-]+)", re.IGNORECASE),
    "particle_mass": re.compile(r"^#\s*Particle mass:\s*([0-9.eE+-]+)", re.IGNORECASE),
}


def find_rockstar_file(directory: str | Path, snapnum: int) -> Path:
    """``out_<N>_pid.list`` if present (it has PID), else ``out_<N>.list``."""
    directory = Path(directory)
    candidates = [directory / f"out_{snapnum}_pid.list", directory / f"out_{snapnum}.list"]
    for path in candidates:
        if path.exists():
            return path
    raise missing_path_error(
        candidates[0],
        f"Rockstar catalogue (nor {candidates[1].name})",
        "check root, set_name, the simulation index and snapnum, or use halo_finder=fof",
    )


def read_columns(path: Path) -> tuple[list[str], dict[str, float]]:
    """Column names from the first ``#`` line and the numbers of ``HEADER_NUMBERS`` found after it."""
    names, numbers = None, {}
    with open(path) as f:
        for line in f:
            if not line.startswith("#"):
                break
            if names is None:
                names = line[1:].split()
                continue
            for key, pattern in HEADER_NUMBERS.items():
                match = pattern.match(line)
                if match:
                    numbers[key] = float(match.group(1))
    if not names:
        raise QuijoteError(
            f"{path} has no '#' header line naming the columns; it is not a Rockstar out_*.list file"
        )
    return names, numbers


def read_rockstar(
    path: str | Path, box_size: float, *, mass_column: str = "Mvir", hosts_only: bool = True
) -> tuple[HaloCatalogue, float | None]:
    """Haloes of one Rockstar list in project units, and the catalogue's scale factor (None if not stated)."""
    path = Path(path)
    names, header = read_columns(path)
    wanted = [*POSITION_COLUMNS, *VELOCITY_COLUMNS, mass_column] + ([PARENT_COLUMN] if hosts_only else [])
    missing = [c for c in wanted if c not in names]
    if missing:
        fix = "choose rockstar_mass= from the columns present"
        if PARENT_COLUMN in missing:
            fix = (
                f"host haloes need the {PARENT_COLUMN} column: use the out_N_pid.list from Rockstar's find_parents, "
                "or set hosts_only=false"
            )
        raise QuijoteError(f"{path}: columns {missing} are missing (the header names {names}); {fix}")
    has_count = COUNT_COLUMN in names
    index = [names.index(c) for c in wanted] + ([names.index(COUNT_COLUMN)] if has_count else [])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore", UserWarning
            )  # an empty catalogue is reported below, not warned about
            table = np.loadtxt(path, comments="#", usecols=index, ndmin=2, dtype=np.float64)
    except ValueError as e:
        raise QuijoteError(
            f"{path}: rows do not match the {len(names)} header columns ({e}); the file is damaged"
        ) from e
    if hosts_only:
        table = table[table[:, 7] == -1]
    pos = np.mod(table[:, 0:3], box_size).astype(np.float32)
    vel = table[:, 3:6].astype(np.float32)
    mass = table[:, 6]
    if not (np.isfinite(pos).all() and np.isfinite(vel).all() and np.isfinite(mass).all()):
        raise QuijoteError(
            f"{path}: NaN or inf in positions, velocities or {mass_column}; the file is damaged"
        )
    finder = f"rockstar:{mass_column}" + (":hosts" if hosts_only else "")
    count = table[:, -1].astype(np.int64) if has_count else np.full(len(mass), UNKNOWN_COUNT, dtype=np.int64)
    catalogue = HaloCatalogue(
        positions=pos,
        velocities=vel,
        masses=mass,
        n_particles=count,
        particle_mass=header.get("particle_mass", float("nan")),
        linking_length=header.get("linking_length", float("nan")),
        finder=finder,
        source=str(path),
    )
    return catalogue, header.get("a")
