"""FieldStore: the validating reader of a field store (format in ``store.schema``). It only reads: a missing,
partial or damaged file is reported with the command that remakes it, never repaired here."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import h5py
import numpy as np

from lss_lightning.cosmology import PARAMETER_NAMES, Cosmology
from lss_lightning.store import checksums
from lss_lightning.store.schema import (
    _FILE_ATTRS,
    GALAXY_DATASETS,
    GALAXY_GROUP,
    GALAXY_SEED_ATTR,
    HALO_ATTRS,
    HALO_DATASETS,
    HALO_GROUP,
    MANIFEST,
    SCHEMA_VERSION,
    SPLITS,
    FieldSpec,
    GalaxyCatalogue,
    HaloCatalogue,
    StoreError,
)


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
        self.galaxies = self.manifest.get("galaxies") or None  # the galaxy model's settings, or None

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
    box_size = property(lambda self: float(self.manifest["box_size"]), doc="box side, Mpc/h")
    grid = property(lambda self: int(self.manifest["grid"]), doc="grid cells per side")
    redshift = property(lambda self: float(self.manifest["redshift"]), doc="the fields' redshift")
    los_axis = property(lambda self: int(self.manifest["los_axis"]), doc="line-of-sight axis of _rsd fields")

    @property
    def simulation_ids(self) -> list[str]:
        return list(self._sims)

    def simulation(self, sim_id: str) -> Mapping:
        try:
            return self._sims[sim_id]
        except KeyError:
            raise StoreError(f"{self.root}: no simulation {sim_id!r} in the manifest") from None

    def varying_parameters(self) -> list[str]:
        """The cosmological parameters that take more than one value over the store's simulations."""
        values = [self.cosmology(s).to_dict() for s in self.simulation_ids]
        return [p for p in PARAMETER_NAMES if len({round(float(v[p]), 12) for v in values}) > 1]

    def cosmology(self, sim_id: str) -> Cosmology:
        return Cosmology.from_mapping(self.simulation(sim_id)["params"])

    def hod(self, sim_id: str) -> dict[str, float] | None:
        """The HOD parameters of one simulation's galaxies (name -> value), or None without galaxies."""
        hod = self.simulation(sim_id).get("hod")
        return None if hod is None else {k: float(v) for k, v in hod.items()}

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
        if self.galaxies:
            self._check_galaxies(f, path, fix)

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

    def _check_galaxies(self, f: h5py.File, path: Path, fix: str) -> None:
        """The galaxies/ group the manifest declares: its datasets, one row per galaxy (no data read)."""
        group = f.get(GALAXY_GROUP)
        if not isinstance(group, h5py.Group) or HALO_GROUP not in f:
            raise StoreError(
                f"{path} lacks the galaxy catalogue group '{GALAXY_GROUP}/' (or the '{HALO_GROUP}/' of its "
                f"hosts) the manifest declares: {fix}"
            )
        absent = [d for d in GALAXY_DATASETS if d not in group]
        if absent:
            raise StoreError(f"{path}: '{GALAXY_GROUP}/' lacks {absent}: {fix}")
        count = group["host"].shape[0] if group["host"].ndim == 1 else -1
        for name, (_, _, tail) in GALAXY_DATASETS.items():
            if group[name].shape != (count, *tail):
                raise StoreError(
                    f"{path}: '{GALAXY_GROUP}/{name}' shaped {group[name].shape}, expected {(count, *tail)} "
                    f"(one row per galaxy): {fix}"
                )

    def read_galaxies(self, sim_id: str) -> GalaxyCatalogue:
        """The galaxy catalogue of one simulation (the store must declare ``galaxies``), checked: finite
        positions and velocities, hosts rows of the simulation's halo catalogue."""
        if not self.galaxies:
            raise StoreError(
                f"{self.root / MANIFEST}: this store holds no galaxy catalogues; build it with an hod block "
                "(mocks: `solver=pm hod={}`)"
            )
        path = self.path(sim_id)
        fix = "delete the file and rerun the generator or converter, which rewrites only what is missing"
        with self.open(sim_id) as f:
            group = f[GALAXY_GROUP]
            values = {attr: group[name][...] for name, (attr, _, _) in GALAXY_DATASETS.items()}
            meta = dict(group.attrs)
            n_halos = f[HALO_GROUP]["mass"].shape[0]
        for name in ("positions", "velocities"):
            if not np.isfinite(values[name]).all():
                raise StoreError(f"{path}: galaxy {name} hold NaN or inf: {fix}")
        host = values["host"]
        if len(host) and (host.min() < 0 or host.max() >= n_halos):
            raise StoreError(
                f"{path}: '{GALAXY_GROUP}/host' spans {host.min()}..{host.max()}, outside the {n_halos} haloes of "
                f"'{HALO_GROUP}/': the file is damaged; {fix}"
            )
        seed = int(meta.pop(GALAXY_SEED_ATTR, -1))
        hod = {k: float(v) for k, v in meta.items()}
        return GalaxyCatalogue(**values, hod=hod, seed=seed, source=str(path))

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
        checksums (``data.checksums``) and for NaN/inf, and read the catalogues (their checks)."""
        for sim_id in self._sims:
            if deep:
                for name in self.fields:
                    self.read(sim_id, name)
                if self.halos:
                    self.read_halos(sim_id)
                if self.galaxies:
                    self.read_galaxies(sim_id)
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
