"""The LightningDataModule over a field store: crops of input fields with field or parameter targets.

``FieldCropDataModule`` streams crops for both tasks. Input fields are cut ``pad`` cells wider on every
side than the target crop, with periodic wrap. Targets are either stored fields (velocity reconstruction:
the target crop) or cosmological parameters of the crop's simulation (parameter estimation, usually with
pad = 0). Training crops sit at random corners each epoch and get a random cube symmetry (48, or 16 when
any field is in redshift space); validation crops tile each box without augmentation. Simulations are
split into train/val/test once, by simulation, and the split is saved beside the store's manifest.
HDF5 files are opened lazily in each worker process.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lss_lightning.cosmology import PARAMETER_ALIASES, PARAMETER_NAMES
from lss_lightning.data.chunks import ChunkCache, ChunkedField
from lss_lightning.data.crops import apply_symmetry, cube_symmetries, read_periodic, tile_corners
from lss_lightning.data.normalisation import FieldLayout, field_statistics
from lss_lightning.data.store import FieldStore, StoreError

log = logging.getLogger(__name__)


# -- splits ----------------------------------------------------------------------------------------
def split_simulations(ids: Sequence[str], fractions: Mapping[str, float], seed: int) -> dict[str, list[str]]:
    """Shuffle simulation ids with ``seed`` and cut them into train/val/test by ``fractions``.

    Every part with a positive fraction gets at least one simulation.
    """
    parts = ("train", "val", "test")
    frac = np.array([float(fractions.get(p, 0.0)) for p in parts])
    if (frac < 0).any() or frac.sum() <= 0:
        raise ValueError(f"split fractions must be non-negative and not all zero, got {dict(fractions)}")
    wanted = int((frac > 0).sum())
    if len(ids) < wanted:
        raise ValueError(
            f"{len(ids)} simulations cannot fill {wanted} non-empty splits; generate more simulations"
        )
    order = np.random.default_rng(seed).permutation(len(ids))
    counts = np.floor(frac / frac.sum() * len(ids)).astype(int)
    counts = np.where((frac > 0) & (counts == 0), 1, counts)
    while counts.sum() > len(ids):
        counts[int(np.argmax(counts))] -= 1
    counts[0] += len(ids) - counts.sum()
    bounds = np.cumsum(np.r_[0, counts])
    return {p: [ids[i] for i in sorted(order[bounds[j] : bounds[j + 1]])] for j, p in enumerate(parts)}


def load_or_make_splits(store: FieldStore, fractions: Mapping[str, float], seed: int) -> dict[str, list[str]]:
    """The saved split for (fractions, seed) if the store has one, else a new one saved beside the manifest."""
    key = "train{train}-val{val}-test{test}-seed{seed}".format(
        seed=seed, **{p: float(fractions.get(p, 0.0)) for p in ("train", "val", "test")}
    )
    saved = store.load_splits() or {}
    if key in saved and sorted(s for part in saved[key].values() for s in part) == sorted(
        store.simulation_ids
    ):
        return saved[key]
    splits = split_simulations(store.simulation_ids, fractions, seed)
    saved[key] = splits
    store.save_splits(saved)
    return splits


# -- dataset ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CropGeometry:
    crop: int  # target crop side, cells
    pad: int  # extra input cells on each side

    @property
    def input_size(self) -> int:
        return self.crop + 2 * self.pad


class FieldCropDataset(Dataset):
    """(input, target) crop pairs from a store; see the module docstring.

    Items are dicts: input (C_in, crop + 2 pad, ...) float32 and target, both in physical units, sim
    (index into ``sim_ids``), corner (3,) int64 of the target crop. The target is the (C_out, crop, ...)
    crop of the ``targets`` fields, or, when ``parameters`` (n_sims, n_params) is given instead, the row of
    the crop's simulation.
    """

    def __init__(
        self,
        store_root: str | os.PathLike,
        sim_ids: Sequence[str],
        inputs: Sequence[FieldLayout],
        targets: Sequence[FieldLayout],
        geometry: CropGeometry,
        *,
        parameters: np.ndarray | None = None,
        random_crops: int | None = None,
        symmetries: Sequence | None = None,
        chunk_cache_mb: float = 256.0,
    ):
        self.root = Path(store_root)
        self.sim_ids = list(sim_ids)
        self.inputs, self.targets = list(inputs), list(targets)
        self.parameters = None if parameters is None else np.asarray(parameters, dtype=np.float32)
        if self.parameters is not None and len(self.parameters) != len(self.sim_ids):
            raise ValueError(
                f"parameters has {len(self.parameters)} rows for {len(self.sim_ids)} simulations"
            )
        self.geometry = geometry
        self.random_crops = random_crops
        self.symmetries = list(symmetries) if symmetries else None
        self.chunk_cache_bytes = int(chunk_cache_mb * 2**20)
        store = FieldStore(self.root)
        self.grid = store.grid
        self._paths = [store.path(s) for s in self.sim_ids]
        self._tiles = tile_corners(self.grid, geometry.crop)
        self._reset_handles()

    def _reset_handles(self) -> None:
        self._handles: dict[int, h5py.File] = {}
        self._fields: dict[tuple[int, str], ChunkedField] = {}
        self._cache = ChunkCache(self.chunk_cache_bytes)
        self._pid = os.getpid()

    def __len__(self) -> int:
        per_sim = self.random_crops if self.random_crops else len(self._tiles)
        return len(self.sim_ids) * per_sim

    def __getstate__(self):  # h5py handles do not cross process boundaries: workers reopen lazily
        state = self.__dict__.copy()
        state.update(_handles={}, _fields={}, _cache=None, _pid=None)
        return state

    def field(self, sim: int, name: str):
        """The stored field ``name`` of simulation ``sim`` as a sliceable (C, N, N, N) view."""
        if self._pid != os.getpid():  # first use in this process (a fresh worker)
            self._reset_handles()
        key = (sim, name)
        if key not in self._fields:
            if sim not in self._handles:
                path = self._paths[sim]
                try:
                    self._handles[sim] = h5py.File(path, "r")
                except OSError as e:
                    raise StoreError(
                        f"{path} cannot be opened ({e}); validate the store with FieldStore(...).validate()"
                    ) from e
            self._fields[key] = ChunkedField(self._handles[sim]["fields/" + name], self._cache, key)
        return self._fields[key]

    def corner(self, index: int) -> tuple[int, np.ndarray]:
        if self.random_crops:
            sim = index // self.random_crops
            corner = torch.randint(0, self.grid, (3,)).numpy()  # torch RNG: reseeded per worker and epoch
        else:
            sim, tile = divmod(index, len(self._tiles))
            corner = np.array(self._tiles[tile])
        return sim, corner

    def _read(
        self, sim: int, layouts: Sequence[FieldLayout], corner: np.ndarray, pad: int, sym
    ) -> np.ndarray:
        size = self.geometry.crop + 2 * pad
        blocks = []
        for lay in layouts:
            block = read_periodic(self.field(sim, lay.name), corner - pad, size)
            blocks.append(apply_symmetry(block, lay.kind, sym) if sym is not None else block)
        return np.ascontiguousarray(np.concatenate(blocks, axis=0))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sim, corner = self.corner(index)
        sym = None
        if self.symmetries:
            sym = self.symmetries[int(torch.randint(len(self.symmetries), ()))]
        if self.parameters is not None:
            target = torch.from_numpy(self.parameters[sim])
        else:
            target = torch.from_numpy(self._read(sim, self.targets, corner, 0, sym))
        return {
            "input": torch.from_numpy(self._read(sim, self.inputs, corner, self.geometry.pad, sym)),
            "target": target,
            "sim": torch.tensor(sim),
            "corner": torch.from_numpy(corner.astype(np.int64)),
        }


# -- data module -----------------------------------------------------------------------------------
def parameter_name(name: str) -> str | None:
    """The canonical cosmological parameter a target name stands for (aliases such as ``w``), or None."""
    canonical = PARAMETER_ALIASES.get(name, name)
    return canonical if canonical in PARAMETER_NAMES else None


class FieldCropDataModule(L.LightningDataModule):
    """Crops of input fields -> crops of target fields, or -> the cosmological parameters of their box.

    store: the store directory; generate: optional mock-generator settings (conf/mock/) used to build
    the store when it is absent; inputs: stored field names; targets: stored field names, or parameter
    names (Omega_m, Omega_b, h, n_s, sigma_8, M_nu, w0, wa), not both; crop/pad in cells; transforms:
    field -> "none" | "log" for scalar inputs; split: train/val/test fractions and seed;
    train_crops_per_sim: random crops per simulation per epoch (default: the number of tiles of a box);
    stats_sims: how many training simulations the normalisation statistics are computed from;
    chunk_cache_mb: per-process budget of decoded HDF5 chunks (see ``data.chunks``).
    """

    def __init__(
        self,
        store: str,
        inputs: Sequence[str] = ("density",),
        targets: Sequence[str] = ("velocity",),
        crop: int = 20,
        pad: int = 6,
        batch_size: int = 16,
        num_workers: int = 0,
        augment: bool = True,
        split: Mapping[str, float] | None = None,
        transforms: Mapping[str, str] | None = None,
        train_crops_per_sim: int | None = None,
        stats_sims: int = 8,
        generate: Mapping | None = None,
        pin_memory: bool | None = None,
        persistent_workers: bool = False,
        chunk_cache_mb: float = 256.0,
    ):
        super().__init__()
        if crop < 1 or pad < 0:
            raise ValueError(f"need crop >= 1 and pad >= 0, got crop={crop}, pad={pad}")
        self.store_root = Path(store).expanduser()
        self.input_names, self.target_names = list(inputs), list(targets)
        self.geometry = CropGeometry(int(crop), int(pad))
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.augment = augment
        self.split_cfg = dict(split or {"train": 0.75, "val": 0.125, "test": 0.125, "seed": 0})
        self.transforms = dict(transforms or {})
        self.train_crops_per_sim = train_crops_per_sim
        self.stats_sims = stats_sims
        self.generate = dict(generate) if generate else None
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.chunk_cache_mb = chunk_cache_mb
        self.store: FieldStore | None = None
        self.statistics: dict[str, tuple[float, float]] = {}
        self.parameter_names  # noqa: B018 (raises now, before any data is read, on a mix of fields and parameters)
        if self.generate and "grid" in self.generate:
            self.check_crop_fits(int(self.generate["grid"]))

    def check_crop_fits(self, grid: int) -> None:
        """For parameter targets, the sub-volume (the whole input crop) must fit in the box: a larger one
        would repeat the periodic box inside it. (Field crops may wrap: tiles and stitching are periodic.)"""
        side = self.geometry.input_size
        if self.parameter_names and side > grid:
            raise ValueError(
                f"the sub-volume of {side} cells per side (data.crop={self.geometry.crop} + 2 x data.pad="
                f"{self.geometry.pad}) is larger than the {grid}-cell box of {self.store_root}; use "
                f"data.crop <= {grid - 2 * self.geometry.pad} or a store with a finer grid"
            )

    def check_targets(self, kind: str, model: str = "the model") -> None:
        """Raise, naming the fix, unless the targets are of ``kind`` ("fields" or "parameters"), the kind
        of targets ``model`` predicts; no data is read."""
        if kind == self.target_kind:
            return
        if kind == "parameters":
            raise ValueError(
                f"{model} predicts parameters but data.targets {self.target_names} are not cosmological "
                f"parameters: choose targets among {list(PARAMETER_NAMES)} (aliases {sorted(PARAMETER_ALIASES)})"
            )
        raise ValueError(
            f"{model} predicts {kind} but data.targets {self.target_names} are {self.target_kind}; choose "
            "matching data.targets (e.g. [velocity]) or another model (e.g. model=cnn3d)"
        )

    # the store is built (mocks) on one process per node, then opened everywhere
    def prepare_data(self) -> None:
        if (self.store_root / "manifest.json").exists() or self.generate is None:
            return
        from lss_lightning.mocks.generate import MockConfig, generate_store

        log.info("field store %s is absent: generating it", self.store_root)
        generate_store(MockConfig(**{**self.generate, "store": str(self.store_root)}))

    def store_ready(self) -> bool:
        """True once the store exists and every simulation in it validates (for ranks waiting on rank 0)."""
        try:
            return not FieldStore(self.store_root).missing()
        except StoreError:
            return False

    def open_store(self) -> FieldStore:
        """The validated store (opened once), with the train/val/test split loaded or made."""
        if self.store is None:
            store = FieldStore(self.store_root)
            store.require_fields(self.input_names + self.target_field_names)
            self.check_crop_fits(store.grid)
            self._check_parameters_vary(store)
            missing = store.missing()
            if missing:
                raise StoreError(
                    f"{self.store_root}: simulations {missing[:5]} are missing or damaged; "
                    "rerun the generator/converter for this store, which writes only what is missing"
                )
            fractions = {k: v for k, v in self.split_cfg.items() if k != "seed"}
            self.splits = load_or_make_splits(store, fractions, int(self.split_cfg.get("seed", 0)))
            self.store = store
        return self.store

    @property
    def parameter_names(self) -> list[str]:
        """Canonical names of parameter targets ([] for field targets)."""
        names = [parameter_name(n) for n in self.target_names]
        if all(n is None for n in names):
            return []
        if any(n is None for n in names):
            odd = [t for t, n in zip(self.target_names, names, strict=True) if n is None]
            hints = {t: difflib.get_close_matches(t, PARAMETER_NAMES, n=1) for t in odd}
            hint = "; ".join(f"{t!r} -> {m[0]!r}?" for t, m in hints.items() if m)
            raise ValueError(
                f"data.targets {self.target_names} mixes stored fields and cosmological parameters: {odd} are not "
                f"among {list(PARAMETER_NAMES)}{' (' + hint + ')' if hint else ''}; use fields (e.g. [velocity]) "
                "or parameters (e.g. [Omega_m, sigma_8]), not both"
            )
        return names

    def _check_parameters_vary(self, store: FieldStore) -> None:
        """From the manifest: a parameter target that takes one value in the whole store cannot be learnt."""
        if not self.parameter_names:
            return
        values = {
            p: {round(store.cosmology(s).to_dict()[p], 12) for s in store.simulation_ids}
            for p in self.parameter_names
        }
        constant = [p for p, v in values.items() if len(v) < 2]
        if constant:
            raise ValueError(
                f"{constant} take one value in every simulation of {self.store_root}: there is nothing to infer; "
                "use a store with varying cosmologies (e.g. data=mocks_lh, a latin-hypercube design) or drop "
                "them from data.targets"
            )

    @property
    def target_kind(self) -> str:
        """Either "fields" (crops of target fields) or "parameters" (one vector per simulation)."""
        return "parameters" if self.parameter_names else "fields"

    @property
    def target_field_names(self) -> list[str]:
        return [] if self.parameter_names else self.target_names

    def parameter_table(self, sim_ids: Sequence[str]) -> np.ndarray:
        """(n_sims, n_params) parameter targets of ``sim_ids`` from the manifest."""
        store = self.open_store()
        table = [[store.cosmology(s).to_dict()[p] for p in self.parameter_names] for s in sim_ids]
        return np.asarray(table, dtype=np.float64).reshape(len(sim_ids), len(self.parameter_names))

    def layouts(self, names: Sequence[str]) -> list[FieldLayout]:
        store = self.open_store()
        return [
            FieldLayout(n, store.fields[n].kind, store.fields[n].channels, self.transforms.get(n, "none"))
            for n in names
        ]

    @property
    def input_layouts(self) -> list[FieldLayout]:
        return self.layouts(self.input_names)

    @property
    def target_layouts(self) -> list[FieldLayout]:
        return self.layouts(self.target_field_names)

    @property
    def redshift_space(self) -> bool:
        store = self.open_store()
        return any(store.fields[n].space == "redshift" for n in self.input_names + self.target_field_names)

    def symmetries(self):
        return cube_symmetries(self.open_store().los_axis if self.redshift_space else None)

    def setup(self, stage: str | None = None) -> None:
        store = self.open_store()
        crops = self.train_crops_per_sim or len(tile_corners(store.grid, self.geometry.crop))
        common = {
            "inputs": self.input_layouts,
            "targets": self.target_layouts,
            "geometry": self.geometry,
            "chunk_cache_mb": self.chunk_cache_mb,
        }
        val_sims = self.splits["val"] or self.splits["train"][:1]
        params = self.target_kind == "parameters"
        self.train_set = FieldCropDataset(
            store.root,
            self.splits["train"],
            parameters=self.parameter_table(self.splits["train"]) if params else None,
            random_crops=crops,
            symmetries=self.symmetries() if self.augment else None,
            **common,
        )
        self.val_set = FieldCropDataset(
            store.root, val_sims, parameters=self.parameter_table(val_sims) if params else None, **common
        )
        if not self.statistics:
            self.statistics = self.compute_statistics()
        if params:
            self.parameter_statistics = self.compute_parameter_statistics()

    def compute_parameter_statistics(self) -> dict[str, dict[str, float]]:
        """min, max, mean, std of each parameter target over the training simulations."""
        table = self.parameter_table(self.splits["train"])
        stats = {}
        for j, name in enumerate(self.parameter_names):
            col = table[:, j]
            stats[name] = {
                "min": float(col.min()),
                "max": float(col.max()),
                "mean": float(col.mean()),
                "std": float(col.std()),
            }
        return stats

    def compute_statistics(self) -> dict[str, tuple[float, float]]:
        """(shift, scale) per input and target field from up to ``stats_sims`` training simulations."""
        store = self.open_store()
        sims = self.splits["train"][: self.stats_sims]
        stats = {}
        for lay in self.input_layouts + self.target_layouts:
            stats[lay.name] = field_statistics(_slabs(store, sims, lay.name), lay)
        log.info("normalisation statistics from %d training simulations: %s", len(sims), stats)
        return stats

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            drop_last=False,
        )

    def reference_dataloader(self) -> DataLoader:
        """Tiles of the first ``stats_sims`` training simulations, unshuffled and unaugmented: the same
        crops on every rank, for statistics of crops (e.g. the summaries' standardisation)."""
        store = self.open_store()
        sims = self.splits["train"][: self.stats_sims]
        params = self.parameter_table(sims) if self.target_kind == "parameters" else None
        dataset = FieldCropDataset(
            store.root,
            sims,
            self.input_layouts,
            self.target_layouts,
            self.geometry,
            parameters=params,
            chunk_cache_mb=self.chunk_cache_mb,
        )
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=False, num_workers=0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)


def _slabs(store: FieldStore, sims: Sequence[str], name: str, slab: int = 32):
    """Yield a field in x-slabs of ``slab`` cells (bounded memory for 512^3 boxes)."""
    for sim in sims:
        with store.open(sim) as f:
            ds = f["fields/" + name]
            for start in range(0, ds.shape[1], slab):
                yield ds[:, start : start + slab]
