"""The field store: one format for mocks and Quijote (specified in README, "The field store").

A store is a directory holding ``manifest.json`` and one HDF5 file per simulation:

    manifest.json   {"schema_version", "source", "box_size", "grid", "redshift", "los_axis",
                     "fields": {name: {kind, channels, units, space, los_axis, mas}},
                     "simulations": [{"id", "file", "seed", "params": {Omega_m, ...}}], "generator": {...}}
    sim_00000.h5    attrs: schema_version, sim_id, box_size, grid, redshift, seed, los_axis, source,
                           Omega_m, Omega_b, h, n_s, sigma_8, M_nu, w0, wa, complete
                    fields/<name>: float32 (C, N, N, N), chunked, attrs kind, units, space, los_axis, mas
                    halos/ (when the manifest has "halos"): position (H, 3) float32 Mpc/h, velocity (H, 3)
                           float32 km/s, mass (H,) float64 Msun/h, n_particles (H,) int64;
                           attrs particle_mass (Msun/h), linking_length, min_particles, finder
    splits.json     {"train": [ids], "val": [ids], "test": [ids], "seed"} (written by the data modules)

Every file is written under a temporary name in the same directory and renamed when complete, so an
interrupted writer never leaves a file that reads as valid; ``complete = 1`` is the last attribute set.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import h5py
import hdf5plugin
import numpy as np

from lss_lightning.cosmology import PARAMETER_NAMES, Cosmology
from lss_lightning.fields.tracers import HALO_CHANNEL, HALO_VECTOR_FIELDS, HaloCatalogue
from lss_lightning.store import checksums

log = logging.getLogger(__name__)
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
SPLITS = "splits.json"
FIELD_KINDS = ("scalar", "vector", "pseudovector")
FIELD_AXES = ("x,y,z", "ra,dec,z")  # box coordinates, or (right ascension, declination, observed redshift)
LIGHTCONE_FIELD = "lightcone"
_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_ATTRS = ("schema_version", "sim_id", "box_size", "grid", "redshift", "seed", "complete")
HALO_GROUP = "halos"
# dataset -> (HaloCatalogue attribute, dtype, shape after the halo axis)
HALO_DATASETS = {
    "position": ("positions", np.float32, (3,)),
    "velocity": ("velocities", np.float32, (3,)),
    "mass": ("masses", np.float64, ()),
    "n_particles": ("n_particles", np.int64, ()),
}
HALO_ATTRS = ("particle_mass", "linking_length", "min_particles", "finder")


class StoreError(RuntimeError):
    """A field store that cannot be used as it is; the message names the file and the fix."""


@dataclass(frozen=True)
class FieldSpec:
    """What a stored field is: kind (scalar/vector/pseudovector), channels, units, space, los axis, MAS, and
    the meaning of its three grid axes: "x,y,z" (comoving box) or "ra,dec,z" (a light-cone histogram)."""

    kind: str
    channels: int
    units: str
    space: str = "real"
    los_axis: int = -1
    mas: str = "cic"
    axes: str = "x,y,z"

    def __post_init__(self):
        if self.kind not in FIELD_KINDS:
            raise ValueError(f"field kind must be one of {FIELD_KINDS}, got {self.kind!r}")
        if self.space not in ("real", "redshift"):
            raise ValueError(f"field space must be 'real' or 'redshift', got {self.space!r}")
        if self.axes not in FIELD_AXES:
            raise ValueError(f"field axes must be one of {FIELD_AXES}, got {self.axes!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def field_spec(name: str, los_axis: int = 2, mas: str = "cic") -> FieldSpec:
    """The spec of a standard field name: density, velocity, momentum, halos_m<i>, each optionally ``_rsd``."""
    space = "redshift" if name.endswith("_rsd") else "real"
    base = name.removesuffix("_rsd")
    los = los_axis if space == "redshift" else -1
    if base == "density" or HALO_CHANNEL.fullmatch(base):
        return FieldSpec("scalar", 1, "1", space, los, mas)
    if base in ("velocity", "momentum", "velocity_linear", *HALO_VECTOR_FIELDS):
        return FieldSpec("vector", 3, "km/s", space, los, mas)
    if name == LIGHTCONE_FIELD:  # halo counts in (RA, DEC, observed z) cells; redshift distortions along z
        return FieldSpec("scalar", 1, "count", "redshift", 2, "ngp", "ra,dec,z")
    raise ValueError(
        f"no standard spec for field {name!r}; standard names are density, velocity, momentum, "
        f"velocity_linear, halos_m<i>, {', '.join(HALO_VECTOR_FIELDS)}, each with an optional '_rsd' suffix, "
        f"and {LIGHTCONE_FIELD}"
    )


def sim_file_name(sim_id: str) -> str:
    return f"{sim_id}.h5"


@contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def require_space(root: Path, nbytes: int, what: str) -> None:
    """Stop before writing ``nbytes`` (plus 5% and 1 MiB for HDF5's metadata) to ``root`` when its device
    has less free: h5py fails messily (and HDF5 can crash the process) when the disk fills mid-write."""
    needed = int(nbytes * 1.05) + 2**20
    free = shutil.disk_usage(root).free
    if free < needed:
        raise StoreError(
            f"no space left on the device of {root}: writing {what} needs about {needed / 2**20:.1f} MiB and "
            f"{free / 2**20:.1f} MiB are free. Nothing was half-written and the finished simulations are kept: "
            "free space (or give the store another path: store=..., LSS_DATA_DIR) and rerun the same command"
        )


@contextmanager
def simulation_lock(root: Path, sim_id: str, wait: bool):
    """An OS file lock (``flock``) on one simulation of a store, so that writers never collide: yields True
    when this process holds it, False when another writer does and ``wait`` is false. Released on exit
    (also when the process dies). Shards lock disjoint simulations and run side by side."""
    lock = Path(root) / f".{sim_id}.lock"
    with open(lock, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_json_atomic(path: Path, payload: Mapping) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")


def remove_partial_files(root: Path, file_name: str) -> int:
    """Delete the temporaries an interrupted writer left for ``file_name`` (they never read as simulations)."""
    stale = list(Path(root).glob(f".{file_name}.*.tmp"))
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


def build_manifest(
    *,
    source: str,
    box_size: float,
    grid: int,
    redshift: float,
    los_axis: int,
    fields: Mapping[str, FieldSpec],
    simulations: Iterable[Mapping],
    generator: Mapping | None = None,
    halos: Mapping | None = None,
) -> dict:
    """The manifest of a store; ``halos`` (e.g. {"finder": "fof", ...}) declares a ``halos/`` group per file."""
    return {
        "schema_version": SCHEMA_VERSION,
        "source": source,
        "box_size": float(box_size),
        "grid": int(grid),
        "redshift": float(redshift),
        "los_axis": int(los_axis),
        "fields": {name: spec.to_dict() for name, spec in fields.items()},
        "simulations": [dict(s) for s in simulations],
        "generator": dict(generator or {}),
        "halos": dict(halos) if halos else None,
    }


def write_simulation(
    root: Path,
    manifest: Mapping,
    sim: Mapping,
    fields: Mapping[str, np.ndarray],
    *,
    chunk: int = 32,
    compression: str | None = None,
    extra_attrs: Mapping[str, Mapping] | None = None,
    halos: HaloCatalogue | None = None,
) -> Path:
    """Write one simulation's fields (and halo catalogue) atomically to ``root/<id>.h5``.

    fields: name -> float32 array (C, N, N, N) matching the manifest; compression: None, "gzip", "lzf"
    or "blosc" (Blosc/zstd via hdf5plugin); extra_attrs: name -> dataset attributes (e.g. empty_fraction);
    halos: the catalogue, required exactly when the manifest declares ``halos``.
    """
    root = Path(root)
    n = manifest["grid"]
    path = root / sim["file"]
    if bool(manifest.get("halos")) != (halos is not None):
        raise StoreError(
            f"{path}: the manifest {'declares' if manifest.get('halos') else 'does not declare'} a halo "
            f"catalogue but {'none' if halos is None else 'one'} was produced"
        )
    for name, spec in manifest["fields"].items():
        if name not in fields:
            raise StoreError(f"{path}: field {name!r} listed in the manifest was not produced")
        arr = fields[name]
        if tuple(arr.shape) != (spec["channels"], n, n, n):
            raise StoreError(
                f"{path}: field {name!r} shaped {tuple(arr.shape)}, manifest says {(spec['channels'], n, n, n)}"
            )
        if not np.isfinite(arr).all():
            raise StoreError(f"{path}: field {name!r} holds NaN or inf; refusing to write it")
    require_space(root, sum(np.asarray(fields[n]).nbytes for n in manifest["fields"]), sim["id"])
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs.update(
            schema_version=SCHEMA_VERSION,
            sim_id=sim["id"],
            box_size=manifest["box_size"],
            grid=n,
            redshift=manifest["redshift"],
            seed=int(sim.get("seed", -1)),
            los_axis=manifest["los_axis"],
            source=manifest["source"],
        )
        cosmo = Cosmology.from_mapping(sim["params"]).to_dict()
        f.attrs.update({k: cosmo[k] for k in PARAMETER_NAMES})
        group = f.create_group("fields")
        c = min(chunk, n)
        for name, spec in manifest["fields"].items():
            data = np.ascontiguousarray(fields[name], dtype=np.float32)
            ds = group.create_dataset(
                name, data=data, chunks=(spec["channels"], c, c, c), **_compression_kwargs(compression)
            )
            ds.attrs[checksums.ATTR] = checksums.chunk_checksums(data, (c, c, c))
            ds.attrs.update({k: spec[k] for k in ("kind", "units", "space", "los_axis", "mas")})
            ds.attrs["axes"] = spec.get("axes", "x,y,z")
            ds.attrs.update((extra_attrs or {}).get(name, {}))
        if halos is not None:
            _write_halos(f, halos, path)
        f.attrs["complete"] = 1
    return path


def _write_halos(f: h5py.File, halos: HaloCatalogue, path: Path) -> None:
    group = f.create_group(HALO_GROUP)
    for name, (attr, dtype, _) in HALO_DATASETS.items():
        values = np.asarray(getattr(halos, attr), dtype=dtype)
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            raise StoreError(f"{path}: halo {name} holds NaN or inf; refusing to write it")
        group.create_dataset(name, data=values)
    group.attrs.update({k: getattr(halos, k) for k in HALO_ATTRS})


def _compression_kwargs(compression: str | None) -> dict:
    if compression in (None, "none"):
        return {}
    if compression in ("gzip", "lzf"):
        return {"compression": compression}
    if compression == "blosc":
        return dict(hdf5plugin.Blosc(cname="zstd", clevel=3, shuffle=hdf5plugin.Blosc.SHUFFLE))
    raise ValueError(f"unknown compression {compression!r}; use none, gzip, lzf or blosc")


class FieldStore:
    """Validating reader of a field store directory."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()
        manifest_path = self.root / MANIFEST
        if not manifest_path.exists():
            raise StoreError(
                f"{manifest_path} not found: {self.root} is not a field store. Build one with "
                f"`python -m lss_lightning.mocks store={self.root}` or convert Quijote with "
                f"`python -m lss_lightning.data.quijote store={self.root}`"
            )
        try:
            self.manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as e:
            raise StoreError(
                f"{manifest_path} is not valid JSON ({e}); delete the store and regenerate it"
            ) from e
        self._check_manifest(manifest_path)
        self.fields = {name: FieldSpec(**spec) for name, spec in self.manifest["fields"].items()}
        self._sims = {s["id"]: s for s in self.manifest["simulations"]}
        self.halos = self.manifest.get("halos") or None  # the halo finder's settings, or None

    def _check_manifest(self, path: Path) -> None:
        m = self.manifest
        version = m.get("schema_version")
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"{path}: schema_version {version!r}, this lss-lightning reads {SCHEMA_VERSION}; "
                "regenerate the store with this version"
            )
        missing = [
            k for k in ("box_size", "grid", "redshift", "los_axis", "fields", "simulations") if k not in m
        ]
        if missing:
            raise StoreError(f"{path}: missing keys {missing}; the manifest is damaged, regenerate the store")

    # -- manifest-level facts -----------------------------------------------------------------
    @property
    def box_size(self) -> float:
        return float(self.manifest["box_size"])

    @property
    def grid(self) -> int:
        return int(self.manifest["grid"])

    @property
    def redshift(self) -> float:
        return float(self.manifest["redshift"])

    @property
    def los_axis(self) -> int:
        return int(self.manifest["los_axis"])

    @property
    def simulation_ids(self) -> list[str]:
        return list(self._sims)

    def simulation(self, sim_id: str) -> Mapping:
        try:
            return self._sims[sim_id]
        except KeyError:
            raise StoreError(f"{self.root}: no simulation {sim_id!r} in the manifest") from None

    def cosmology(self, sim_id: str) -> Cosmology:
        return Cosmology.from_mapping(self.simulation(sim_id)["params"])

    def path(self, sim_id: str) -> Path:
        return self.root / self.simulation(sim_id)["file"]

    def is_complete(self, sim_id: str) -> bool:
        """True if the simulation file exists and its header validates (cheap; no data read)."""
        try:
            with self.open(sim_id):
                return True
        except StoreError:
            return False

    def missing(self) -> list[str]:
        return [s for s in self._sims if not self.is_complete(s)]

    def require_fields(self, names: Iterable[str]) -> None:
        absent = [n for n in names if n not in self.fields]
        if absent:
            raise StoreError(
                f"{self.root / MANIFEST}: fields {absent} are not in this store (it has {sorted(self.fields)}); "
                "regenerate it with those fields (mocks: `fields=[...]`) or ask for fields it has"
            )

    # -- files ----------------------------------------------------------------------------------
    def open(self, sim_id: str) -> h5py.File:
        """Open one simulation read-only after validating its header against the manifest."""
        path = self.path(sim_id)
        fix = f"delete {path} and rerun the generator or converter for {self.root}; it redoes only missing simulations"
        if not path.exists():
            raise StoreError(f"{path} is missing: {fix}")
        try:
            f = h5py.File(path, "r")
        except OSError as e:
            raise StoreError(f"{path} cannot be read as HDF5, it is corrupt or truncated ({e}): {fix}") from e
        try:
            self._check_header(f, path, sim_id, fix)
        except Exception:
            f.close()
            raise
        return f

    def _check_header(self, f: h5py.File, path: Path, sim_id: str, fix: str) -> None:
        absent = [a for a in _FILE_ATTRS if a not in f.attrs]
        if absent:
            raise StoreError(f"{path} lacks attributes {absent} (incomplete write?): {fix}")
        if int(f.attrs["schema_version"]) != SCHEMA_VERSION:
            raise StoreError(
                f"{path} has schema_version {f.attrs['schema_version']}, expected {SCHEMA_VERSION}: {fix}"
            )
        if int(f.attrs["complete"]) != 1:
            raise StoreError(f"{path} was not completely written: {fix}")
        if str(f.attrs["sim_id"]) != sim_id:
            raise StoreError(
                f"{path} holds simulation {f.attrs['sim_id']!r}, the manifest expects {sim_id!r}: {fix}"
            )
        n = self.grid
        for name, spec in self.fields.items():
            key = f"fields/{name}"
            if key not in f:
                raise StoreError(f"{path} lacks field {name!r}: {fix}")
            shape = f[key].shape
            if shape != (spec.channels, n, n, n):
                raise StoreError(
                    f"{path}: field {name!r} shaped {shape}, expected {(spec.channels, n, n, n)}: {fix}"
                )
        if self.halos:
            self._check_halos(f, path, fix)

    def _check_halos(self, f: h5py.File, path: Path, fix: str) -> None:
        group = f.get(HALO_GROUP)
        if not isinstance(group, h5py.Group):
            raise StoreError(
                f"{path} lacks the halo catalogue group '{HALO_GROUP}/' the manifest declares: {fix}"
            )
        absent = [d for d in HALO_DATASETS if d not in group] + [
            a for a in HALO_ATTRS if a not in group.attrs
        ]
        if absent:
            raise StoreError(f"{path}: '{HALO_GROUP}/' lacks {absent}: {fix}")
        count = group["mass"].shape[0] if group["mass"].ndim == 1 else -1
        for name, (_, _, tail) in HALO_DATASETS.items():
            if group[name].shape != (count, *tail):
                raise StoreError(
                    f"{path}: '{HALO_GROUP}/{name}' shaped {group[name].shape}, expected {(count, *tail)} "
                    f"(one row per halo): {fix}"
                )

    def read_halos(self, sim_id: str) -> HaloCatalogue:
        """The halo catalogue of one simulation (the store must declare ``halos``)."""
        if not self.halos:
            raise StoreError(
                f"{self.root / MANIFEST}: this store holds no halo catalogues; build it with the particle-mesh "
                "solver (mocks: `solver=pm`) or convert Quijote with `halo_catalogue=true`"
            )
        path = self.path(sim_id)
        with self.open(sim_id) as f:
            group = f[HALO_GROUP]
            values = {attr: group[name][...] for name, (attr, _, _) in HALO_DATASETS.items()}
            meta = {k: group.attrs[k] for k in HALO_ATTRS}
        for name, (attr, _, _) in HALO_DATASETS.items():
            if values[attr].dtype.kind == "f" and not np.isfinite(values[attr]).all():
                raise StoreError(f"{path}: halo {name} holds NaN or inf; delete the file and regenerate it")
        return HaloCatalogue(
            **values,
            particle_mass=float(meta["particle_mass"]),
            linking_length=float(meta["linking_length"]),
            min_particles=int(meta["min_particles"]),
            finder=str(meta["finder"]),
            source=str(path),
        )

    def read(self, sim_id: str, name: str) -> np.ndarray:
        """A whole field (C, N, N, N) float32, checked for NaN/inf."""
        self.require_fields([name])
        with self.open(sim_id) as f:
            try:
                data = f[f"fields/{name}"][...]
            except OSError as e:
                raise StoreError(
                    f"{self.path(sim_id)}: field {name!r} cannot be read ({e}); the file is damaged: "
                    f"delete it and regenerate"
                ) from e
            expected = f[f"fields/{name}"].attrs.get(checksums.ATTR)
            chunk = f[f"fields/{name}"].chunks[1:]
        fix = "delete the file and rerun the generator or converter, which rewrites only what is missing"
        if expected is not None and (bad := checksums.damaged_chunks(data, chunk, expected)):
            raise StoreError(
                f"{self.path(sim_id)}: field {name!r} of simulation {sim_id} fails its checksum in "
                f"{len(bad)} chunk(s) (first at chunk {bad[0]}): the file was damaged or overwritten; {fix}"
            )
        if not np.isfinite(data).all():
            raise StoreError(
                f"{self.path(sim_id)}: field {name!r} holds NaN or inf (simulation {sim_id}); {fix}"
            )
        return data

    def validate(self, deep: bool = False) -> None:
        """Check every simulation's header; with deep=True also read every field and check its chunk
        checksums (``data.checksums``) and for NaN/inf."""
        for sim_id in self._sims:
            if deep:
                for name in self.fields:
                    self.read(sim_id, name)
            else:
                with self.open(sim_id):
                    pass

    # -- splits ---------------------------------------------------------------------------------
    def load_splits(self) -> dict[str, list[str]] | None:
        path = self.root / SPLITS
        if not path.exists():
            return None
        splits = json.loads(path.read_text())
        unknown = [
            s for part in ("train", "val", "test") for s in splits.get(part, []) if s not in self._sims
        ]
        if unknown:
            raise StoreError(
                f"{path} names simulations {unknown[:5]} that are not in the manifest; delete {path}"
            )
        return splits

    def save_splits(self, splits: Mapping[str, list[str]]) -> None:
        write_json_atomic(self.root / SPLITS, dict(splits))


# -- resumable writing ------------------------------------------------------------------------------
class SimulationProducts(NamedTuple):
    """What a producer makes for one simulation: fields (name -> (C, N, N, N) float32), their dataset
    attributes (name -> dict) and, for stores that declare one, the halo catalogue."""

    fields: Mapping[str, np.ndarray]
    attrs: Mapping[str, Mapping]
    halos: HaloCatalogue | None = None


StepReporter = Callable[[int, int, str], None]  # (done, total, label): progress inside one simulation
Producer = Callable[[Mapping, StepReporter], SimulationProducts]


def reconcile_manifest(root: Path, manifest: Mapping, keys: Iterable[str]) -> None:
    """Refuse to mix different setups in one store; allow growing a store whose simulations are a prefix.

    keys: the manifest entries that must agree (e.g. box_size, grid, fields, generator).
    """
    old = FieldStore(root).manifest
    for key in keys:
        if old.get(key) != manifest.get(key):
            raise StoreError(
                f"{root / MANIFEST} was made with a different {key} ({old.get(key)!r} vs {manifest.get(key)!r}); "
                f"choose another store=PATH or delete {root} to rebuild it"
            )
    old_sims, new_sims = old["simulations"], manifest["simulations"]
    n = min(len(old_sims), len(new_sims))
    if old_sims[:n] != new_sims[:n]:
        raise StoreError(
            f"{root / MANIFEST} lists different simulations (seeds, sources or parameters) than this run; "
            f"choose another store=PATH or delete {root} to rebuild it"
        )


def fill_store(
    root: str | os.PathLike,
    manifest: Mapping,
    produce: Producer,
    *,
    reconcile_keys: Iterable[str] = (
        "source",
        "box_size",
        "grid",
        "redshift",
        "los_axis",
        "fields",
        "generator",
        "halos",
    ),
    only: Iterable[str] | None = None,
    chunk: int = 32,
    compression: str | None = None,
    progress: bool = True,
    description: str = "simulations",
) -> FieldStore:
    """Write the manifest, then every simulation whose file does not validate yet, one atomic file each.

    produce(sim, report) -> SimulationProducts; it may call report(done, total, label) to show its own
    steps (e.g. particle-mesh steps) on a second progress bar.
    only: restrict to these simulation ids (one shard of a parallel run); the manifest always lists all.
    Safe to rerun after a crash or a kill; several processes may fill disjoint shards of one store.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    root = Path(root).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    if (root / MANIFEST).exists():
        reconcile_manifest(root, manifest, reconcile_keys)
    write_json_atomic(root / MANIFEST, manifest)
    store = FieldStore(root)
    wanted = set(store.simulation_ids if only is None else only)
    unknown = wanted - set(store.simulation_ids)
    if unknown:
        raise StoreError(
            f"{root}: asked to write simulations {sorted(unknown)[:5]} that the manifest does not list"
        )
    sims = [s for s in manifest["simulations"] if s["id"] in wanted]
    todo = [s for s in sims if not store.is_complete(s["id"])]
    if not todo:
        log.info("store %s: all %d simulations present", root, len(sims))
        return store
    log.info("store %s: writing %d of %d simulations", root, len(todo), len(sims))
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task(description, total=len(sims), completed=len(sims) - len(todo))
        steps = bar.add_task("", total=None, visible=False)

        def report(done: int, total: int, label: str) -> None:
            bar.update(steps, completed=done, total=total, description=f"  {label}", visible=True)

        def make(sim: Mapping, wait: bool) -> bool:
            """Write one simulation under its lock, unless another writer finished it; False (nothing done)
            when another writer holds the lock and ``wait`` is false."""
            with simulation_lock(root, sim["id"], wait=wait) as mine:
                if not mine:
                    return False
                if not store.is_complete(sim["id"]):  # a writer that held the lock may have finished it
                    if remove_partial_files(root, sim["file"]):  # ours to remove: we hold the lock
                        log.info(
                            "store %s: removed the partial file of %s left by an interrupted run",
                            root,
                            sim["id"],
                        )
                    start = time.perf_counter()
                    products = produce(sim, report)
                    bar.update(steps, description="  writing", visible=True)
                    write_simulation(
                        root,
                        manifest,
                        sim,
                        products.fields,
                        chunk=chunk,
                        compression=compression,
                        extra_attrs=products.attrs,
                        halos=products.halos,
                    )
                    log.debug("%s written in %.2f s", sim["id"], time.perf_counter() - start)
            bar.advance(task)
            bar.update(steps, visible=False)
            return True

        # simulations another writer is making are left to it, then awaited (made here only if it died)
        held_elsewhere = [sim for sim in todo if not make(sim, wait=False)]
        for sim in held_elsewhere:
            log.info("store %s: %s is being written by another process; waiting for it", root, sim["id"])
            make(sim, wait=True)
    return store
