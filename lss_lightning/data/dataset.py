"""The crop dataset: a crop of a simulation's input fields (``pad`` cells wider than the target on every
side, periodic wrap) with its target crop or its box's parameters, read through the chunk cache, with one
of the cube's (or the sky's) symmetries applied. HDF5 files are opened lazily in each worker process."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from lss_lightning.data.chunks import ChunkCache, ChunkedField
from lss_lightning.data.crops import (
    apply_symmetry,
    read_periodic,
    tile_corners,
)
from lss_lightning.data.normalisation import FieldLayout
from lss_lightning.store.reader import FieldStore
from lss_lightning.store.schema import StoreError


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
