"""FoF group catalogues in the binary ``group_tab`` format of Gadget/P-FoF that Quijote ships.

Files ``groups_00N/group_tab_00N.<j>``, j < Nfiles; each holds a packed header
    int32 Ngroups, int32 TotNgroups, int32 Nids, uint64 TotNids, uint32 Nfiles   (24 bytes)
then, for its Ngroups groups, one array after the other:
    GroupLen int32, GroupOffset int32, GroupMass float32 (1e10 Msun/h), GroupPos float32 x3 (kpc/h),
    GroupVel float32 x3 (times (1+z) gives peculiar km/s), GroupTLen int32 x6, GroupTMass float32 x6.
The file must end there (84 bytes per group). Member IDs live in ``group_ids_00N.<j>`` (not needed here).
Byte order is detected per file (little-endian in Quijote). The particle mass is GroupMass / GroupLen;
Quijote's FoF used b = 0.2 and kept groups of >= 20 particles (its documentation; the files do not say).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lss_lightning.data.quijote.errors import QuijoteError
from lss_lightning.data.quijote.layout import missing_path_error
from lss_lightning.data.quijote.snapshots import GADGET_MASS_UNIT, KPC_TO_MPC
from lss_lightning.store.schema import HaloCatalogue

HEADER_FIELDS = [
    ("n_groups", "i4"),
    ("tot_groups", "i4"),
    ("n_ids", "i4"),
    ("tot_ids", "u8"),
    ("n_files", "u4"),
]
GROUP_FIELDS = [  # (name, dtype, components) in file order
    ("GroupLen", "i4", 1),
    ("GroupOffset", "i4", 1),
    ("GroupMass", "f4", 1),
    ("GroupPos", "f4", 3),
    ("GroupVel", "f4", 3),
    ("GroupTLen", "i4", 6),
    ("GroupTMass", "f4", 6),
]
HEADER_BYTES = 24
GROUP_BYTES = sum(np.dtype(t).itemsize * c for _, t, c in GROUP_FIELDS)  # 84
QUIJOTE_LINKING_LENGTH = 0.2  # of the mean interparticle separation
QUIJOTE_MIN_PARTICLES = 20


def _header(raw: bytes, path: Path) -> tuple[dict, str]:
    """Decode the header, choosing the byte order under which the file size is consistent."""
    for order in ("<", ">"):
        dtype = np.dtype([(n, order + t) for n, t in HEADER_FIELDS])
        h = np.frombuffer(raw[:HEADER_BYTES], dtype=dtype)[0]
        n_groups = int(h["n_groups"])
        if 0 <= n_groups and HEADER_BYTES + n_groups * GROUP_BYTES == len(raw) and int(h["n_files"]) > 0:
            return {name: int(h[name]) for name, _ in HEADER_FIELDS}, order
    raise QuijoteError(
        f"{path} is not a FoF group_tab file: its {len(raw)} bytes do not match a 24-byte header plus "
        f"{GROUP_BYTES} bytes per group in either byte order (truncated or not FoF); download it again"
    )


def read_group_tab(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """One group_tab file: (header, arrays by name)."""
    raw = path.read_bytes()
    if len(raw) < HEADER_BYTES:
        raise QuijoteError(
            f"{path} holds {len(raw)} bytes, less than the 24-byte FoF header; download it again"
        )
    header, order = _header(raw, path)
    n, offset, arrays = header["n_groups"], HEADER_BYTES, {}
    for name, t, c in GROUP_FIELDS:
        dtype = np.dtype(order + t)
        values = np.frombuffer(raw, dtype=dtype, count=n * c, offset=offset).reshape(n, c)
        arrays[name] = values[:, 0] if c == 1 else values
        offset += n * c * dtype.itemsize
    return header, arrays


def read_fof(
    base: str | Path,
    redshift: float,
    box_size: float,
    *,
    linking_length: float = QUIJOTE_LINKING_LENGTH,
    min_particles: int = QUIJOTE_MIN_PARTICLES,
) -> HaloCatalogue:
    """All groups of ``<base>.<j>`` (e.g. ``.../groups_004/group_tab_004``) in Mpc/h, km/s and Msun/h.

    linking_length and min_particles describe the run that made the files (Quijote's by default).
    """
    base = Path(base)
    first = base.with_name(base.name + ".0")
    if not first.exists():
        raise missing_path_error(
            first, "FoF catalogue file", "check root, set_name, the simulation index and snapnum"
        )
    header, _ = read_group_tab(first)
    n_files, expected = header["n_files"], header["tot_groups"]
    parts = []
    for j in range(n_files):
        path = base.with_name(f"{base.name}.{j}")
        if not path.exists():
            raise QuijoteError(
                f"FoF file {path} is missing: {first} says the catalogue has {n_files} files; download it"
            )
        parts.append(read_group_tab(path)[1])
    found = sum(len(p["GroupMass"]) for p in parts)
    if found != expected:
        raise QuijoteError(
            f"{base}.*: the files hold {found} groups but TotNgroups says {expected}; a file is stale or damaged"
        )
    source = f"{base}.[0-{n_files - 1}]"
    pos = np.concatenate([p["GroupPos"] for p in parts]).reshape(-1, 3).astype(np.float32) * np.float32(
        KPC_TO_MPC
    )
    vel = np.concatenate([p["GroupVel"] for p in parts]).reshape(-1, 3).astype(np.float32) * np.float32(
        1.0 + redshift
    )
    mass = np.concatenate([p["GroupMass"] for p in parts]).astype(np.float64) * GADGET_MASS_UNIT
    count = np.concatenate([p["GroupLen"] for p in parts]).astype(np.int64)
    if not (np.isfinite(pos).all() and np.isfinite(vel).all() and np.isfinite(mass).all()):
        raise QuijoteError(
            f"{source}: NaN or inf in GroupPos, GroupVel or GroupMass; the catalogue is damaged"
        )
    if (count <= 0).any():
        raise QuijoteError(f"{source}: a group has GroupLen <= 0; the catalogue is damaged")
    return HaloCatalogue(
        positions=np.mod(pos, np.float32(box_size)),
        velocities=vel,
        masses=mass,
        n_particles=count,
        particle_mass=float(np.median(mass / count)) if len(count) else float("nan"),
        linking_length=linking_length,
        min_particles=min_particles,
        finder="fof",
        source=source,
    )
