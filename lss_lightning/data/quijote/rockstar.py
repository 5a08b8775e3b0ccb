"""Rockstar ASCII halo catalogues (``out_N.list``, or ``out_N_pid.list`` with parent IDs).

The first ``#`` line names the columns (read them; their order and set depend on the Rockstar
version and MASS_DEFINITION); more ``#`` lines follow (``#a = <scale factor>``, units, box size).
Units: positions X Y Z in comoving Mpc/h, velocities VX VY VZ peculiar km/s, masses Msun/h.
Host haloes have PID = -1 (the PID column comes from Rockstar's find_parents, i.e. ``*_pid.list``).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from lss_lightning.data.quijote.errors import QuijoteError
from lss_lightning.data.quijote.halos import HaloCatalogue
from lss_lightning.data.quijote.layout import missing_path_error

POSITION_COLUMNS = ("X", "Y", "Z")
VELOCITY_COLUMNS = ("VX", "VY", "VZ")
PARENT_COLUMN = "PID"
SCALE_FACTOR = re.compile(r"^#\s*a\s*=\s*([0-9.eE+-]+)")


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


def read_columns(path: Path) -> tuple[list[str], float | None]:
    """Column names from the first ``#`` line and the scale factor from ``#a = ...`` (None if absent)."""
    names, scale_factor = None, None
    with open(path) as f:
        for line in f:
            if not line.startswith("#"):
                break
            if names is None:
                names = line[1:].split()
                continue
            match = SCALE_FACTOR.match(line)
            if match:
                scale_factor = float(match.group(1))
    if not names:
        raise QuijoteError(
            f"{path} has no '#' header line naming the columns; it is not a Rockstar out_*.list file"
        )
    return names, scale_factor


def read_rockstar(
    path: str | Path, box_size: float, *, mass_column: str = "Mvir", hosts_only: bool = True
) -> tuple[HaloCatalogue, float | None]:
    """Haloes of one Rockstar list in project units, and the catalogue's scale factor (None if not stated)."""
    path = Path(path)
    names, scale_factor = read_columns(path)
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
    index = [names.index(c) for c in wanted]
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
        table = table[table[:, -1] == -1]
    pos = np.mod(table[:, 0:3], box_size).astype(np.float32)
    vel = table[:, 3:6].astype(np.float32)
    mass = table[:, 6]
    if not (np.isfinite(pos).all() and np.isfinite(vel).all() and np.isfinite(mass).all()):
        raise QuijoteError(
            f"{path}: NaN or inf in positions, velocities or {mass_column}; the file is damaged"
        )
    finder = f"rockstar:{mass_column}" + (":hosts" if hosts_only else "")
    return HaloCatalogue(pos, vel, mass, str(path), finder), scale_factor
