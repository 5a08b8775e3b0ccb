"""Augmented crops per second from the HDF5 field store vs the same crops cut from in-memory arrays.

Same dataset code, same crops (Wu 2021 geometry: 32^3 density in, 20^3 velocity out, random corners,
random cube symmetry), same DataLoader (batch 16); the baseline reads numpy arrays already in memory
instead of the store's HDF5 files. Target: the store at >= 0.8x of in-memory with 2 workers.
Run: .venv/bin/python bench/bench_crop_throughput.py [--store PATH]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from lss_lightning.data.crops import cube_symmetries
from lss_lightning.data.dataset import CropGeometry, FieldCropDataset
from lss_lightning.data.normalisation import FieldLayout
from lss_lightning.mocks.config import MockConfig
from lss_lightning.mocks.generate import generate_store
from lss_lightning.store.reader import FieldStore

INPUTS = [FieldLayout("density", "scalar", 1)]
TARGETS = [FieldLayout("velocity", "vector", 3)]
GEOMETRY = CropGeometry(crop=20, pad=6)
CROPS_PER_SIM = 512  # enough for warm-up plus the timed batches in one pass


class InMemoryCropDataset(FieldCropDataset):
    """The baseline: identical cropping and augmentation over arrays loaded into memory up front."""

    def __init__(self, store: FieldStore, *args, **kwargs):
        super().__init__(store.root, *args, **kwargs)
        self._arrays = [{n: store.read(s, n) for n in ("density", "velocity")} for s in self.sim_ids]

    def field(self, sim: int, name: str):
        return self._arrays[sim][name]


def throughput(dataset, workers: int, batches: int = 400) -> float:
    loader = DataLoader(
        dataset, batch_size=16, shuffle=True, num_workers=workers, persistent_workers=workers > 0
    )
    it = iter(loader)
    for _ in range(5):  # warm-up: workers started, files opened, chunk caches filled
        next(it)
    start = time.perf_counter()
    count = 0
    for _ in range(batches):
        count += len(next(it)["input"])
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--store", help="an existing store with density and velocity (default: build 16 mocks of 64^3)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.store:
            store = FieldStore(args.store)
        else:
            cfg = MockConfig(
                store=str(Path(tmp) / "store"),
                n_sims=16,
                grid=64,
                box_size=128.0,
                power="eh",
                solver="lpt",  # reading speed does not depend on the physics
                fields=["density", "velocity"],
                device="cpu",
            )
            store = generate_store(cfg, progress=False)
        sims = store.simulation_ids
        common = {"random_crops": CROPS_PER_SIM, "symmetries": cube_symmetries()}
        from_store = FieldCropDataset(store.root, sims, INPUTS, TARGETS, GEOMETRY, **common)
        in_memory = InMemoryCropDataset(store, sims, INPUTS, TARGETS, GEOMETRY, **common)
        print(
            f"\naugmented crop pairs per second ({len(sims)} boxes of {store.grid}^3, "
            f"{GEOMETRY.input_size}^3 density -> {GEOMETRY.crop}^3 velocity, batch 16)"
        )
        print(f"  {'workers':>7}  {'in-memory':>12}  {'HDF5 store':>12}  {'store / in-memory':>18}")
        for workers in (0, 2):
            base = throughput(in_memory, workers)
            ours = throughput(from_store, workers)
            print(f"  {workers:>7}  {base:12.0f}  {ours:12.0f}  {ours / base:17.2f}x")
        print(
            f"  peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB "
            f"(in-memory baseline holds {sum(a.nbytes for d in in_memory._arrays for a in d.values()) / 2**20:.0f} MB)"
        )


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
