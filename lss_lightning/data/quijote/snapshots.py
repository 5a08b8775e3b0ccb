"""Gadget HDF5 snapshots as Quijote writes them, streamed file by file and slice by slice.

One snapshot is ``snap_00N.<j>.hdf5`` for j < NumFilesPerSnapshot (or a single ``snap_00N.hdf5``).
Header attributes used: BoxSize (kpc/h), Time (a), Redshift, MassTable (1e10 Msun/h per type),
NumPart_ThisFile, NumPart_Total + NumPart_Total_HighWord (count = low + high * 2^32),
NumFilesPerSnapshot, Omega0, OmegaLambda, HubbleParam.
Particles: ``PartType<t>/Coordinates`` in kpc/h and ``PartType<t>/Velocities`` stored as
u = v / sqrt(a), so v = u sqrt(a) in km/s (peculiar). Type 1 is CDM, type 2 massive neutrinos.
Since 2023 the datasets are Blosc-compressed: ``hdf5plugin`` registers the filter with h5py.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (registers the Blosc filter Quijote's snapshots are compressed with)
import numpy as np

from lss_lightning.data.quijote.errors import QuijoteError
from lss_lightning.data.quijote.layout import missing_path_error

KPC_TO_MPC = 1e-3  # Quijote lengths are kpc/h; the project works in Mpc/h
GADGET_MASS_UNIT = 1e10  # Msun/h
HEADER_ATTRS = (
    "BoxSize",
    "Time",
    "Redshift",
    "MassTable",
    "NumPart_ThisFile",
    "NumPart_Total",
    "NumFilesPerSnapshot",
)
DEFAULT_CHUNK = 2**21  # particles painted at once: bounds memory whatever the file size


def total_particles(low: Sequence[int], high: Sequence[int] | None) -> tuple[int, ...]:
    """Particles per type from Gadget's NumPart_Total and NumPart_Total_HighWord (count = low + high * 2^32)."""
    high = [0] * len(low) if high is None else high
    return tuple(int(lo) + (int(hi) << 32) for lo, hi in zip(low, high, strict=True))


@dataclass(frozen=True)
class SnapshotHeader:
    """The header of a snapshot, in project units (Mpc/h, Msun/h)."""

    box_size: float  # Mpc/h
    redshift: float
    scale_factor: float
    omega_m: float
    omega_lambda: float
    hubble: float
    mass_table: tuple[float, ...]  # Msun/h per particle type (0 = per-particle masses in the file)
    num_total: tuple[int, ...]  # particles per type in the whole snapshot
    num_files: int


@dataclass(frozen=True)
class ParticleChunk:
    """A slice of one particle type from one file: positions (P, 3) Mpc/h, velocities (P, 3) km/s."""

    positions: np.ndarray
    velocities: np.ndarray
    masses: float | np.ndarray  # Msun/h, one value for the type or (P,)
    particle_type: int


def _open(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise QuijoteError(
            f"{path} cannot be opened as HDF5 ({e}); the file is truncated or corrupt: download it again"
        ) from e


def read_header(path: Path, length_unit: float = KPC_TO_MPC) -> SnapshotHeader:
    """The header of one snapshot file (any file of the snapshot carries the same global header)."""
    with _open(path) as f:
        if "Header" not in f:
            raise QuijoteError(f"{path} has no Header group: it is not a Gadget HDF5 snapshot file")
        attrs = f["Header"].attrs
        missing = [a for a in HEADER_ATTRS if a not in attrs]
        if missing:
            raise QuijoteError(
                f"{path}: Header lacks attributes {missing}; the file is not a complete Gadget snapshot"
            )
        high = attrs.get("NumPart_Total_HighWord")
        return SnapshotHeader(
            box_size=float(attrs["BoxSize"]) * length_unit,
            redshift=float(attrs["Redshift"]),
            scale_factor=float(attrs["Time"]),
            omega_m=float(attrs.get("Omega0", np.nan)),
            omega_lambda=float(attrs.get("OmegaLambda", np.nan)),
            hubble=float(attrs.get("HubbleParam", np.nan)),
            mass_table=tuple(float(m) * GADGET_MASS_UNIT for m in attrs["MassTable"]),
            num_total=total_particles(attrs["NumPart_Total"], high),
            num_files=int(attrs["NumFilesPerSnapshot"]),
        )


def _file_counts(path: Path) -> np.ndarray:
    with _open(path) as f:
        try:
            return np.asarray(f["Header"].attrs["NumPart_ThisFile"], dtype=np.int64)
        except KeyError:
            raise QuijoteError(
                f"{path}: Header lacks NumPart_ThisFile; the file is damaged, download it again"
            ) from None


class GadgetSnapshot:
    """A multi-file Gadget HDF5 snapshot; ``iter_particles`` streams it without holding it in memory.

    base: the path without ``.<j>.hdf5``, e.g. ``.../snapdir_004/snap_004``.
    """

    def __init__(self, base: str | Path, length_unit: float = KPC_TO_MPC):
        self.base = Path(base)
        self.length_unit = length_unit
        self.files = self._find_files()
        self.header = read_header(self.files[0], length_unit)
        self._counts = [_file_counts(p) for p in self.files]
        self._check_counts()

    def _find_files(self) -> list[Path]:
        single = self.base.with_name(self.base.name + ".hdf5")
        first = self.base.with_name(self.base.name + ".0.hdf5")
        if not first.exists():
            if single.exists():
                return [single]
            raise missing_path_error(
                first,
                "snapshot file",
                "check root, set_name, the simulation index and snapnum (or the layout)",
            )
        n_files = read_header(first, self.length_unit).num_files
        files = [self.base.with_name(f"{self.base.name}.{j}.hdf5") for j in range(n_files)]
        for path in files:
            if not path.exists():
                raise QuijoteError(
                    f"snapshot file {path} is missing: {first} says the snapshot has {n_files} files "
                    "(NumFilesPerSnapshot); download the missing file"
                )
        return files

    def _check_counts(self) -> None:
        found = np.sum(self._counts, axis=0)
        expected = np.asarray(self.header.num_total[: len(found)])
        if not np.array_equal(found, expected):
            raise QuijoteError(
                f"{self.base}.*.hdf5: the files hold {found.tolist()} particles per type (NumPart_ThisFile) but the "
                f"header says {expected.tolist()} (NumPart_Total + HighWord); a file is missing, stale or truncated"
            )

    def count(self, particle_types: Sequence[int]) -> int:
        return sum(self.header.num_total[t] for t in particle_types)

    def iter_particles(
        self, particle_types: Sequence[int] = (1,), chunk: int = DEFAULT_CHUNK
    ) -> Iterator[ParticleChunk]:
        """Yield particles file by file in slices of at most ``chunk``, in project units."""
        for t in particle_types:
            if t >= len(self.header.num_total) or self.header.num_total[t] == 0:
                raise QuijoteError(
                    f"{self.files[0]}: the snapshot has no particles of type {t} (NumPart_Total "
                    f"{list(self.header.num_total)}); drop {t} from particle_types"
                )
        sqrt_a = np.float32(np.sqrt(self.header.scale_factor))
        for path, counts in zip(self.files, self._counts, strict=True):
            with _open(path) as f:
                for t in particle_types:
                    n = int(counts[t])
                    if n == 0:
                        continue
                    group = self._group(f, path, t, n)
                    for start in range(0, n, chunk):
                        stop = min(start + chunk, n)
                        pos = self._read(group, "Coordinates", path, start, stop) * np.float32(
                            self.length_unit
                        )
                        vel = self._read(group, "Velocities", path, start, stop) * sqrt_a
                        yield ParticleChunk(pos, vel, self._masses(group, path, t, start, stop), t)

    def _group(self, f: h5py.File, path: Path, t: int, n: int) -> h5py.Group:
        name = f"PartType{t}"
        if name not in f:
            raise QuijoteError(
                f"{path}: NumPart_ThisFile promises {n} particles of type {t} but {name} is absent"
            )
        for ds in ("Coordinates", "Velocities"):
            if ds not in f[name]:
                raise QuijoteError(
                    f"{path}: {name}/{ds} is missing; the file is incomplete, download it again"
                )
            if f[name][ds].shape != (n, 3):
                raise QuijoteError(
                    f"{path}: {name}/{ds} is shaped {f[name][ds].shape}, the header promises ({n}, 3); "
                    "the file is malformed, download it again"
                )
        return f[name]

    def _read(self, group: h5py.Group, name: str, path: Path, start: int, stop: int) -> np.ndarray:
        try:
            return np.asarray(group[name][start:stop], dtype=np.float32)
        except OSError as e:
            raise QuijoteError(
                f"{path}: {group.name}/{name} cannot be read ({e}). Quijote snapshots are Blosc-compressed: "
                "install hdf5plugin (`pip install hdf5plugin`); if it is installed the file is corrupt, download it again"
            ) from e

    def _masses(self, group: h5py.Group, path: Path, t: int, start: int, stop: int) -> float | np.ndarray:
        mass = self.header.mass_table[t]
        if mass > 0:
            return mass
        if "Masses" not in group:
            raise QuijoteError(
                f"{path}: MassTable[{t}] is 0 and {group.name}/Masses is absent; cannot weight particles"
            )
        return self._read(group, "Masses", path, start, stop) * np.float32(GADGET_MASS_UNIT)
