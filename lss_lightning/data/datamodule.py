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
from collections.abc import Mapping, Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from lss_lightning.cosmology import PARAMETER_NAMES, parameter_name
from lss_lightning.data.crops import (
    cube_symmetries,
    sky_symmetries,
    tile_corners,
)
from lss_lightning.data.dataset import CropGeometry, FieldCropDataset, lightcone_geometry_problem
from lss_lightning.data.normalisation import FieldLayout, field_statistics
from lss_lightning.data.sampling import BlockSampler, ResumableLoader, ShardedBatchSampler
from lss_lightning.data.splits import load_or_make_splits
from lss_lightning.store.reader import FieldStore
from lss_lightning.store.schema import StoreError

log = logging.getLogger(__name__)


class FieldCropDataModule(L.LightningDataModule):
    """Crops of input fields -> crops of target fields, or -> the cosmological parameters of their box.

    store: the store directory; generate: optional mock-generator settings (conf/mock/) that ``run``
    builds the store from when it is absent (here only its grid is read, to check crops early); inputs: stored field names; targets: stored field names, or parameter
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
        varying = store.varying_parameters()
        constant = [p for p in self.parameter_names if p not in varying]
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
