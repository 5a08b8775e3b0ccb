"""The LightningDataModule over a field store: crops of input fields with field or parameter targets.

``FieldCropDataModule`` streams crops for both tasks. Input fields are cut ``pad`` cells wider on every
side than the target crop, with periodic wrap. Targets are either stored fields (velocity reconstruction:
the target crop) or cosmological parameters of the crop's simulation (parameter estimation, usually with
pad = 0). Training crops sit at random corners each epoch and get a random cube symmetry (48, or 16 when
any field is in redshift space); crop i of epoch e is drawn from the seed (seed, e, i), so it is the same
whichever DDP rank or worker process reads it. Validation crops tile each box without augmentation.
Each epoch every training crop and every validation tile is read exactly once across all ranks
(``data.sampling``). Simulations are split into train/val/test once, by simulation, and the split is
saved beside the store's manifest. HDF5 files are opened lazily in each worker process.
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
from lss_lightning.data.crops import (
    apply_symmetry,
    cube_symmetries,
    read_periodic,
    sky_symmetries,
    tile_corners,
)
from lss_lightning.data.normalisation import FieldLayout, field_statistics
from lss_lightning.data.sampling import BlockSampler, ResumableLoader, ShardedBatchSampler
from lss_lightning.data.store import FieldStore, StoreError

log = logging.getLogger(__name__)


# -- splits ----------------------------------------------------------------------------------------
def split_simulations(
    ids: Sequence[str],
    fractions: Mapping[str, float],
    seed: int,
    groups: Sequence | None = None,
) -> dict[str, list[str]]:
    """Shuffle simulation ids with ``seed`` and cut them into train/val/test by ``fractions``.

    Every part with a positive fraction gets at least one simulation. With ``groups`` (one key per id,
    e.g. the ``box`` of light cones cut from one particle-mesh run) the groups, in order of first
    appearance, are shuffled and cut instead, and every id goes where its group went: correlated entries
    never straddle train and test. Without groups the split is exactly the ungrouped one.
    """
    if groups is not None:
        if len(groups) != len(ids):
            raise ValueError(f"{len(groups)} group keys for {len(ids)} simulations")
        keys = list(dict.fromkeys(groups))
        try:
            by_group = split_simulations(list(range(len(keys))), fractions, seed)
        except ValueError as err:
            raise ValueError(f"{err} (counting groups: {len(keys)} boxes)") from None
        part_of = {keys[g]: part for part, members in by_group.items() for g in members}
        return {p: [i for i, g in zip(ids, groups, strict=True) if part_of[g] == p] for p in by_group}
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
    """The saved split for (fractions, seed) if the store has one, else a new one saved beside the manifest.

    Simulations whose manifest entries carry a ``box`` (several light cones of one particle-mesh run) are
    split by box, so all cones of a box land in one part; other stores split by simulation.
    """
    key = "train{train}-val{val}-test{test}-seed{seed}".format(
        seed=seed, **{p: float(fractions.get(p, 0.0)) for p in ("train", "val", "test")}
    )
    boxes = [store.simulation(s).get("box") for s in store.simulation_ids]
    groups = None
    if any(b is not None for b in boxes):
        if any(b is None for b in boxes):
            raise StoreError(f"{store.root}: some manifest entries name their box and others do not")
        groups, key = boxes, key + "-by-box"
    saved = store.load_splits() or {}
    if key in saved and sorted(s for part in saved[key].values() for s in part) == sorted(
        store.simulation_ids
    ):
        return saved[key]
    splits = split_simulations(store.simulation_ids, fractions, seed, groups)
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


def lightcone_geometry_problem(axes: set[str], grid: int, geometry: CropGeometry, where) -> str | None:
    """Why crops of fields with these ``axes`` cannot be cut as ``geometry`` asks, or None. A light-cone
    histogram is not periodic: the network sees all of it, at its own place (checked by preflight from the
    settings, before a store is built, and by the data module on the store it opens)."""
    if "ra,dec,z" not in axes or (geometry.pad == 0 and geometry.crop == grid):
        return None
    return (
        f"{where} holds light-cone histograms (axes RA, DEC, z), which are not periodic: the network takes "
        f"the whole {grid}^3 histogram (data.crop={geometry.crop}, data.pad={geometry.pad} asked for "
        f"another cut); set data.crop={grid} data.pad=0"
    )


class FieldCropDataset(Dataset):
    """(input, target) crop pairs from a store; see the module docstring.

    Items are dicts: input (C_in, crop + 2 pad, ...) float32 and target, both in physical units, sim
    (index into ``sim_ids``), corner (3,) int64 of the target crop, index (the item's index). The target
    is the (C_out, crop, ...) crop of the ``targets`` fields, or, when ``parameters`` (n_sims, n_params)
    is given instead, the row of the crop's simulation. With ``random_crops``, item (epoch, i) has its
    corner and symmetry drawn from numpy's generator seeded with (seed, epoch, i); a plain index i draws
    them from torch's generator.
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
        seed: int = 0,
        weights: FieldLayout | None = None,
    ):
        self.root = Path(store_root)
        self.weights = weights  # a scalar field cut like the target: per-cell loss weights
        self.seed = int(seed)
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

    def draw(self, key: int | tuple[int, int]) -> tuple[int, int, np.ndarray, tuple | None]:
        """(index, simulation, corner, symmetry or None) of item ``key``: an index or (epoch, index)."""
        if isinstance(key, tuple | list):
            epoch, index = (int(k) for k in key)
            rng = np.random.default_rng([self.seed, epoch, index])
        else:
            index, rng = int(key), None
        if self.random_crops:
            sim = index // self.random_crops
            corner = _integers(rng, self.grid, 3)
        else:
            sim, tile = divmod(index, len(self._tiles))
            corner = np.array(self._tiles[tile])
        sym = self.symmetries[int(_integers(rng, len(self.symmetries), 1)[0])] if self.symmetries else None
        return index, sim, corner, sym

    def _read(
        self, sim: int, layouts: Sequence[FieldLayout], corner: np.ndarray, pad: int, sym
    ) -> np.ndarray:
        size = self.geometry.crop + 2 * pad
        blocks = []
        for lay in layouts:
            block = read_periodic(self.field(sim, lay.name), corner - pad, size)
            blocks.append(apply_symmetry(block, lay.kind, sym) if sym is not None else block)
        return np.ascontiguousarray(np.concatenate(blocks, axis=0))

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        index, sim, corner, sym = self.draw(key)
        if self.parameters is not None:
            target = torch.from_numpy(self.parameters[sim])
        else:
            target = torch.from_numpy(self._read(sim, self.targets, corner, 0, sym))
        item = {
            "input": torch.from_numpy(self._read(sim, self.inputs, corner, self.geometry.pad, sym)),
            "target": target,
            "sim": torch.tensor(sim),
            "corner": torch.from_numpy(corner.astype(np.int64)),
            "index": torch.tensor(index),
        }
        if self.weights is not None:
            item["weight"] = torch.from_numpy(self._read(sim, [self.weights], corner, 0, sym))
        return item


def _integers(rng: np.random.Generator | None, high: int, size: int) -> np.ndarray:
    """``size`` integers in [0, high) from ``rng``, or from torch's generator (reseeded per worker) if None."""
    if rng is None:
        return torch.randint(0, high, (size,)).numpy()
    return rng.integers(0, high, size)


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
    chunk_cache_mb: per-process budget of decoded HDF5 chunks (see ``data.chunks``); seed: of the
    epoch order and the crop draws (must be the same on every rank; None: 0); convert: the Quijote
    converter settings that build this store (only quoted in the error when the store is absent);
    loss_weight: a stored scalar field cut like the target and given to the task as per-cell loss
    weights (batch key ``weight``), e.g. ``halo_mass_rsd`` for a loss that sees the haloes.
    Under DDP each rank reads its own share of every epoch (``data.sampling``), so the trainer needs
    ``use_distributed_sampler=False``.
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
        seed: int | None = 0,
        convert: Mapping | None = None,
        loss_weight: str | None = None,
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
        self.seed = int(seed or 0)
        self.convert = dict(convert) if convert else None
        self.loss_weight = str(loss_weight) if loss_weight else None
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

    def prepare_data(self) -> None:
        """Build the mock store when it is absent, or finish it when a run was killed while building it."""
        if self.generate is None:
            return
        from lss_lightning.mocks.generate import MockConfig, generate_store, generator_settings

        cfg = MockConfig(**{**self.generate, "store": str(self.store_root)})
        if (self.store_root / "manifest.json").exists():
            store = FieldStore(self.store_root)
            built = store.manifest.get("generator", {})
            differ = sorted(k for k, v in generator_settings(cfg).items() if built.get(k) != v)
            missing = store.missing()
            if missing and differ:
                raise StoreError(
                    f"{self.store_root}: simulations {missing[:5]} are missing or damaged, and the store was built "
                    f"with other mock settings than data.generate ({', '.join(differ)}), so this run cannot remake "
                    "them: rerun `python -m lss_lightning.mocks` with the store's own settings (its manifest's "
                    "'generator' block), or delete the store to rebuild it from data.generate"
                )
            if not missing:
                if differ:
                    log.warning(
                        "%s was built with other mock settings than data.generate (%s); it is used as it is. "
                        "Delete it to rebuild it, or give data.store another path",
                        self.store_root,
                        ", ".join(differ),
                    )
                return
            log.info(
                "field store %s: %d simulations missing or damaged, regenerating them",
                self.store_root,
                len(missing),
            )
        else:
            log.info("field store %s is absent: generating it", self.store_root)
        generate_store(cfg)

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
            store.require_fields(self.input_names + self.target_field_names + self.weight_names)
            for name in self.weight_names:
                if store.fields[name].kind != "scalar":
                    raise StoreError(
                        f"data.loss_weight={name!r} is a {store.fields[name].kind} field of {store.root}; "
                        "loss weights are one scalar per cell (e.g. halo_mass_rsd)"
                    )
            self._check_lightcone_geometry(store)
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

    def _sample_axes(self, store: FieldStore) -> set[str]:
        return {store.fields[n].axes for n in self.input_names + self.target_field_names}

    def _check_lightcone_geometry(self, store: FieldStore) -> None:
        problem = lightcone_geometry_problem(self._sample_axes(store), store.grid, self.geometry, store.root)
        if problem:
            raise StoreError(problem)

    @property
    def lightcone(self) -> bool:
        """True when the samples are light-cone histograms (one whole histogram per simulation)."""
        return "ra,dec,z" in self._sample_axes(self.open_store())

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

    @property
    def weight_names(self) -> list[str]:
        """The loss-weight field, if any (field targets only)."""
        return [self.loss_weight] if self.loss_weight and not self.parameter_names else []

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
        """48 cube symmetries; 16 keeping the line of sight in redshift space; 4 sky mirrors for light cones."""
        store = self.open_store()
        axes = self._sample_axes(store)
        if len(axes) > 1:
            raise StoreError(
                f"{store.root}: cannot mix box fields and light-cone fields ({sorted(axes)}) in one sample"
            )
        if axes == {"ra,dec,z"}:
            return sky_symmetries()
        return cube_symmetries(store.los_axis if self.redshift_space else None)

    def setup(self, stage: str | None = None) -> None:
        store = self.open_store()
        crops = self.train_crops_per_sim or len(tile_corners(store.grid, self.geometry.crop))
        common = {
            "inputs": self.input_layouts,
            "targets": self.target_layouts,
            "geometry": self.geometry,
            "chunk_cache_mb": self.chunk_cache_mb,
            "seed": self.seed,
            "weights": self.layouts(self.weight_names)[0] if self.weight_names else None,
        }
        val_sims = self.splits["val"] or self.splits["train"][:1]
        params = self.target_kind == "parameters"
        self.train_set = FieldCropDataset(
            store.root,
            self.splits["train"],
            parameters=self.parameter_table(self.splits["train"]) if params else None,
            random_crops=None if self.lightcone else crops,  # light cones: the whole histogram, mirrored
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

    def rank_and_world(self) -> tuple[int, int]:
        """This process's global rank and the number of processes (0, 1 outside a trainer)."""
        trainer = getattr(self, "trainer", None)
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_dataloader(self) -> DataLoader:
        rank, world = self.rank_and_world()
        batches = ShardedBatchSampler(len(self.train_set), self.batch_size, rank, world, seed=self.seed)
        return ResumableLoader(
            self.train_set,
            batch_sampler=batches,
            progress=self._epoch_progress,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
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

    def _epoch_progress(self) -> tuple[int, int]:
        """(training batches completed in the current epoch, batches per epoch); (0, 0) outside a trainer."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 0
        length = trainer.num_training_batches
        completed = trainer.fit_loop.epoch_loop.batch_progress.current.completed
        return completed, int(length) if length != float("inf") else 0

    def val_dataloader(self) -> DataLoader:
        rank, world = self.rank_and_world()
        return DataLoader(
            self.val_set,
            batch_size=self.batch_size,
            sampler=BlockSampler(len(self.val_set), rank, world),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
        )


def _slabs(store: FieldStore, sims: Sequence[str], name: str, slab: int = 32):
    """Yield a field in x-slabs of ``slab`` cells (bounded memory for 512^3 boxes)."""
    for sim in sims:
        with store.open(sim) as f:
            ds = f["fields/" + name]
            for start in range(0, ds.shape[1], slab):
                block = ds[:, start : start + slab]
                if not np.isfinite(block).all():
                    raise StoreError(
                        f"{store.path(sim)}: field {name!r} of simulation {sim} holds NaN or inf (found while "
                        "computing the normalisation statistics); the file is damaged: delete it and rerun the "
                        "generator or converter, which rewrites only what is missing"
                    )
                yield block
