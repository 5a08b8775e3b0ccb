"""Writing a field store: atomic files, free-space checks, per-simulation locks, and the resumable fill.

Every file is written under a temporary name in the same directory and renamed when complete, so an
interrupted writer never leaves a file that reads as valid; ``complete = 1`` is the last attribute set.
``fill_store`` writes the manifest, then each simulation whose file does not validate, under a lock, so a
rerun after a crash writes only what is missing and several processes can fill disjoint shards."""

from __future__ import annotations

import fcntl
import functools
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import h5py
import hdf5plugin
import numpy as np

from lss_lightning.cosmology import PARAMETER_NAMES, Cosmology
from lss_lightning.store import checksums
from lss_lightning.store.reader import FieldStore
from lss_lightning.store.schema import (
    GALAXY_DATASETS,
    GALAXY_GROUP,
    GALAXY_SEED_ATTR,
    HALO_ATTRS,
    HALO_DATASETS,
    HALO_GROUP,
    HOD_ATTR_PREFIX,
    MANIFEST,
    SCHEMA_VERSION,
    GalaxyCatalogue,
    HaloCatalogue,
    StoreError,
)

log = logging.getLogger(__name__)
_UMASK = os.umask(0)
os.umask(_UMASK)


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
    galaxies: GalaxyCatalogue | None = None,
) -> Path:
    """Write one simulation's fields (and halo and galaxy catalogues) atomically to ``root/<id>.h5``.

    fields: name -> float32 array (C, N, N, N) matching the manifest; compression: None, "gzip", "lzf"
    or "blosc" (Blosc/zstd via hdf5plugin); extra_attrs: name -> dataset attributes (e.g. empty_fraction);
    halos, galaxies: the catalogues, each required exactly when the manifest declares it. A simulation entry's
    ``hod`` (its galaxy model) is written as the file attributes hod_<name>, beside its cosmology.
    """
    root = Path(root)
    n = manifest["grid"]
    path = root / sim["file"]
    _check_products(path, manifest, fields, halos)
    _check_galaxies(path, manifest, sim, halos, galaxies)
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
        f.attrs.update({HOD_ATTR_PREFIX + k: float(v) for k, v in (sim.get("hod") or {}).items()})
        _write_fields(f, manifest, fields, chunk, compression, extra_attrs or {})
        if halos is not None:
            _write_halos(f, halos, path)
        if galaxies is not None:
            _write_galaxies(f, galaxies)
        f.attrs["complete"] = 1
    return path


def _check_products(
    path: Path, manifest: Mapping, fields: Mapping[str, np.ndarray], halos: HaloCatalogue | None
) -> None:
    """Every field of the manifest produced, shaped as it says and finite; a catalogue exactly when declared."""
    n = manifest["grid"]
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


def _check_galaxies(
    path: Path, manifest: Mapping, sim: Mapping, halos: HaloCatalogue | None, galaxies: GalaxyCatalogue | None
) -> None:
    """A galaxy catalogue exactly when the manifest declares one: finite, its hosts rows of ``halos``, drawn
    with the simulation's own HOD (when its entry names one)."""
    if bool(manifest.get("galaxies")) != (galaxies is not None):
        raise StoreError(
            f"{path}: the manifest {'declares' if manifest.get('galaxies') else 'does not declare'} a galaxy "
            f"catalogue but {'none' if galaxies is None else 'one'} was produced"
        )
    if galaxies is None:
        return
    n_halos = -1 if halos is None else len(halos)
    host = np.asarray(galaxies.host)
    if len(host) and (host.min() < 0 or host.max() >= n_halos):
        raise StoreError(
            f"{path}: galaxy hosts span {host.min()}..{host.max()}, outside the {max(n_halos, 0)} haloes "
            "of the catalogue written with them; populate the haloes that are stored"
        )
    for name in ("positions", "velocities"):
        if not np.isfinite(np.asarray(getattr(galaxies, name))).all():
            raise StoreError(f"{path}: galaxy {name} hold NaN or inf; refusing to write them")
    wanted = {k: float(v) for k, v in (sim.get("hod") or {}).items()}
    if wanted and {k: float(v) for k, v in galaxies.hod.items()} != wanted:
        raise StoreError(
            f"{path}: the galaxies were drawn with HOD {dict(galaxies.hod)}, the manifest gives "
            f"{sim['id']} {wanted}; populate with the simulation's entry"
        )


def _write_fields(
    f: h5py.File,
    manifest: Mapping,
    fields: Mapping,
    chunk: int,
    compression: str | None,
    extra_attrs: Mapping,
) -> None:
    """The ``fields/`` group: chunked float32 datasets with their spec attributes and chunk checksums."""
    n = manifest["grid"]
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
        ds.attrs.update(extra_attrs.get(name, {}))


def _write_halos(f: h5py.File, halos: HaloCatalogue, path: Path) -> None:
    group = f.create_group(HALO_GROUP)
    for name, (attr, dtype, _) in HALO_DATASETS.items():
        values = np.asarray(getattr(halos, attr), dtype=dtype)
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            raise StoreError(f"{path}: halo {name} holds NaN or inf; refusing to write it")
        group.create_dataset(name, data=values)
    group.attrs.update({k: getattr(halos, k) for k in HALO_ATTRS})


def _write_galaxies(f: h5py.File, galaxies: GalaxyCatalogue) -> None:
    """The ``galaxies/`` group (checked by ``_check_galaxies``): its datasets, the HOD and seed as attributes."""
    group = f.create_group(GALAXY_GROUP)
    for name, (attr, dtype, _) in GALAXY_DATASETS.items():
        group.create_dataset(name, data=np.asarray(getattr(galaxies, attr), dtype=dtype))
    group.attrs.update({k: float(v) for k, v in galaxies.hod.items()})
    group.attrs[GALAXY_SEED_ATTR] = int(galaxies.seed)


def _compression_kwargs(compression: str | None) -> dict:
    if compression in (None, "none"):
        return {}
    if compression in ("gzip", "lzf"):
        return {"compression": compression}
    if compression == "blosc":
        return dict(hdf5plugin.Blosc(cname="zstd", clevel=3, shuffle=hdf5plugin.Blosc.SHUFFLE))
    raise ValueError(f"unknown compression {compression!r}; use none, gzip, lzf or blosc")


# -- resumable writing ------------------------------------------------------------------------------
class SimulationProducts(NamedTuple):
    """What a producer makes for one simulation: fields (name -> (C, N, N, N) float32), their dataset
    attributes (name -> dict) and, for stores that declare them, the halo and galaxy catalogues."""

    fields: Mapping[str, np.ndarray]
    attrs: Mapping[str, Mapping]
    halos: HaloCatalogue | None = None
    galaxies: GalaxyCatalogue | None = None


StepReporter = Callable[[int, int, str], None]  # (done, total, label): progress inside one simulation


Producer = Callable[[Mapping, StepReporter], SimulationProducts]


# the manifest entries that must agree for a store to be filled further
RECONCILE_KEYS = (
    "source",
    "box_size",
    "grid",
    "redshift",
    "los_axis",
    "fields",
    "generator",
    "halos",
    "galaxies",
)


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
    reconcile_keys: Iterable[str] = RECONCILE_KEYS,
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
    root = Path(root).expanduser().resolve()
    store, sims = _open_for_filling(root, manifest, reconcile_keys, only)
    todo = [s for s in sims if not store.is_complete(s["id"])]
    if not todo:
        log.info("store %s: all %d simulations present", root, len(sims))
        return store
    log.info("store %s: writing %d of %d simulations", root, len(todo), len(sims))
    write = functools.partial(write_simulation, root, manifest, chunk=chunk, compression=compression)
    with _progress(progress) as bar:
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
                    products = _produce(root, sim, produce, report)
                    bar.update(steps, description="  writing", visible=True)
                    write(
                        sim,
                        products.fields,
                        extra_attrs=products.attrs,
                        halos=products.halos,
                        galaxies=products.galaxies,
                    )
            bar.advance(task)
            bar.update(steps, visible=False)
            return True

        # simulations another writer is making are left to it, then awaited (made here only if it died)
        held_elsewhere = [sim for sim in todo if not make(sim, wait=False)]
        for sim in held_elsewhere:
            log.info("store %s: %s is being written by another process; waiting for it", root, sim["id"])
            make(sim, wait=True)
    return store


def _open_for_filling(
    root: Path, manifest: Mapping, reconcile_keys: Iterable[str], only: Iterable[str] | None
) -> tuple[FieldStore, list[Mapping]]:
    """Write (or check against the old one) the manifest; the store and the simulations to fill."""
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
    return store, [s for s in manifest["simulations"] if s["id"] in wanted]


def _produce(root: Path, sim: Mapping, produce: Producer, report: StepReporter) -> SimulationProducts:
    """The products of one simulation, after removing the partial file an interrupted run left (ours to
    remove: the caller holds the simulation's lock)."""
    if remove_partial_files(root, sim["file"]):
        log.info("store %s: removed the partial file of %s left by an interrupted run", root, sim["id"])
    start = time.perf_counter()
    products = produce(sim, report)
    log.debug("%s produced in %.2f s", sim["id"], time.perf_counter() - start)
    return products


def _progress(enabled: bool):
    """A rich progress display: simulations done, and a second bar for the steps inside one."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    return Progress(*columns, disable=not enabled)
