"""Where Quijote keeps things: the root folder, the per-set folders and the file names inside them.

Quijote's tree (https://quijote-simulations.readthedocs.io, "Organization"):

    <root>/Snapshots/<set>/<i>/snapdir_00N/snap_00N.<j>.hdf5      Gadget HDF5, several files per snapshot
    <root>/Snapshots/<set>/<i>/ICs/2LPT.param (or NGenIC.param)   holds the initial random seed
    <root>/Halos/FoF/<set>/<i>/groups_00N/group_tab_00N.<j>       FoF binary catalogues
    <root>/Halos/Rockstar/<set>/<i>/out_N_pid.list (out_N.list)   Rockstar ASCII catalogues
    <root>/3D_cubes/<set>/<i>/df_m_<grid>_<MAS>_z=<z>.npy         precomputed real-space density grids

Snapshot number N = 0..4 is z = 3, 2, 1, 0.5, 0 in every standard set. Every template below can be
overridden (config ``layout``) for mirrors that arrange the same files differently.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lss_lightning.data.quijote.errors import QuijoteError

ROOT_ENV_VAR = "QUIJOTE_ROOT"
STANDARD_REDSHIFTS = {0: 3.0, 1: 2.0, 2: 1.0, 3: 0.5, 4: 0.0}  # snapnum -> z in Quijote's standard sets
DEFAULT_TEMPLATES = {
    # format keys: set, folder, snapnum, grid, mas, redshift
    "snapshot": "Snapshots/{set}/{folder}/snapdir_{snapnum:03d}/snap_{snapnum:03d}",
    "ics": "Snapshots/{set}/{folder}/ICs",
    "fof": "Halos/FoF/{set}/{folder}/groups_{snapnum:03d}/group_tab_{snapnum:03d}",
    "rockstar": "Halos/Rockstar/{set}/{folder}",
    "cube": "3D_cubes/{set}/{folder}/df_m_{grid}_{mas}_z={redshift:g}.npy",
}
# where a set's parameter table may sit on a cluster copy (the GitHub repository keeps it at <set>/...)
PARAMETER_FILE_CANDIDATES = (
    "Snapshots/{set}/latin_hypercube_params.txt",
    "{set}/latin_hypercube_params.txt",
    "Halos/FoF/{set}/latin_hypercube_params.txt",
    "3D_cubes/{set}/latin_hypercube_params.txt",
)
TOP_FOLDERS = {"snapshot": "Snapshots", "fof": "Halos/FoF", "rockstar": "Halos/Rockstar", "cube": "3D_cubes"}


def resolve_root(root: str | os.PathLike | None) -> Path:
    """The Quijote root folder: ``root`` if given, else the ``QUIJOTE_ROOT`` environment variable."""
    if root in (None, ""):
        root = os.environ.get(ROOT_ENV_VAR)
    if not root:
        raise QuijoteError(
            f"no Quijote root folder: set the environment variable {ROOT_ENV_VAR}=/path/to/Quijote "
            "(the folder holding Snapshots/, Halos/, 3D_cubes/) or pass root=/path/to/Quijote"
        )
    path = Path(root).expanduser().resolve()
    if not path.is_dir():
        raise QuijoteError(f"Quijote root {path} is not a folder: fix {ROOT_ENV_VAR} or root=PATH")
    return path


def resolve_redshift(snapnum: int | None, redshift: float | None) -> tuple[int, float]:
    """(snapnum, nominal redshift): either one follows from the other through Quijote's standard table."""
    if snapnum is None and redshift is None:
        raise ValueError("give redshift (3, 2, 1, 0.5 or 0) or snapnum (0..4)")
    if snapnum is None:
        matches = [n for n, z in STANDARD_REDSHIFTS.items() if abs(z - float(redshift)) < 1e-6]
        if not matches:
            raise ValueError(
                f"redshift {redshift} is not one of Quijote's standard snapshots {sorted(STANDARD_REDSHIFTS.values())}; "
                "give snapnum=N as well"
            )
        return matches[0], float(redshift)
    if redshift is None:
        if snapnum not in STANDARD_REDSHIFTS:
            raise ValueError(
                f"snapnum {snapnum} is not a standard Quijote snapshot (0..4); give redshift=Z as well"
            )
        return int(snapnum), STANDARD_REDSHIFTS[snapnum]
    return int(snapnum), float(redshift)


def missing_path_error(path: Path, what: str, fix: str) -> QuijoteError:
    """An error naming a missing file or folder, its closest existing parent, and the fix."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return QuijoteError(f"{what} {path} not found (closest existing folder: {parent}); {fix}")


@dataclass(frozen=True)
class QuijoteLayout:
    """Paths of one Quijote set: ``root/<kind>/<set>/<folder>/...`` with folder = folder_format(index)."""

    root: Path
    set_name: str
    folder_format: str = "{index}"  # e.g. "NCV_{index}" for paired-fixed runs, "HR_{index}" for some mirrors
    templates: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self):
        unknown = set(self.templates) - set(DEFAULT_TEMPLATES)
        if unknown:
            raise ValueError(
                f"unknown layout templates {sorted(unknown)}; known: {sorted(DEFAULT_TEMPLATES)}"
            )
        object.__setattr__(self, "templates", {**DEFAULT_TEMPLATES, **dict(self.templates)})

    def folder(self, index: int) -> str:
        return self.folder_format.format(index=index)

    def _path(self, kind: str, index: int | None = None, **keys) -> Path:
        folder = "" if index is None else self.folder(index)
        return self.root / self.templates[kind].format(set=self.set_name, folder=folder, **keys)

    def snapshot_base(self, index: int, snapnum: int) -> Path:
        """``.../snapdir_00N/snap_00N`` (the files are this plus ``.<j>.hdf5``)."""
        return self._path("snapshot", index, snapnum=snapnum)

    def ics_dir(self, index: int) -> Path:
        return self._path("ics", index)

    def fof_base(self, index: int, snapnum: int) -> Path:
        """``.../groups_00N/group_tab_00N`` (the files are this plus ``.<j>``)."""
        return self._path("fof", index, snapnum=snapnum)

    def rockstar_dir(self, index: int) -> Path:
        return self._path("rockstar", index)

    def cube_path(self, index: int, grid: int, mas: str, redshift: float) -> Path:
        return self._path("cube", index, grid=grid, mas=mas, redshift=redshift)

    def set_folder(self, kind: str) -> Path:
        """The folder of this set for one kind of product, e.g. ``root/Snapshots/latin_hypercube``."""
        return self.root / TOP_FOLDERS[kind] / self.set_name

    def require_set_folder(self, kind: str) -> None:
        """Fail early, naming the folder, if this set has no products of this kind under the root."""
        if not self.templates[kind].startswith(TOP_FOLDERS[kind] + "/{set}/"):
            return  # a custom layout: the per-simulation reader names whatever is missing
        folder = self.set_folder(kind)
        if not folder.is_dir():
            raise missing_path_error(
                folder,
                f"Quijote {TOP_FOLDERS[kind]} folder of set {self.set_name!r}",
                f"check set_name and root ({ROOT_ENV_VAR}), or download that set's {TOP_FOLDERS[kind]}",
            )

    def parameter_file_candidates(self) -> list[Path]:
        return [self.root / c.format(set=self.set_name) for c in PARAMETER_FILE_CANDIDATES]
