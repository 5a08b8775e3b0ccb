"""Chunk-level reading of stored fields: crops assembled from whole HDF5 chunks held in an LRU cache.

h5py's slicing costs ~100 us of Python per call whatever the size, which dominated crop loading; so
each worker reads whole chunks once (``read_direct_chunk`` for uncompressed data, a plain chunk read
otherwise), keeps the most recent ones up to a byte budget, and cuts crops from them with numpy.
Only the chunks crops touch are ever read: boxes are never loaded whole (unless the budget holds them).
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Hashable

import h5py
import numpy as np

from lss_lightning.store import checksums
from lss_lightning.store.schema import StoreError

DAMAGED = (
    "the simulation file is damaged: delete it and rerun the generator or converter for this store, which "
    "rewrites only what is missing (check the rest with FieldStore(root).validate(deep=True))"
)


class ChunkCache:
    """Least-recently-used store of decoded chunks, bounded in bytes."""

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = 0

    def get(self, key: Hashable, load) -> np.ndarray:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
            self.hits += 1
            return item
        self.misses += 1
        item = load()
        self._items[key] = item
        self.bytes += item.nbytes
        while self.bytes > self.max_bytes and len(self._items) > 1:
            _, old = self._items.popitem(last=False)
            self.bytes -= old.nbytes
        return item


class ChunkedField:
    """A (C, N, N, N) chunked h5py dataset seen through a ChunkCache, read by ``read_periodic``."""

    def __init__(self, dataset: h5py.Dataset, cache: ChunkCache, key: Hashable):
        if dataset.chunks is None or dataset.chunks[0] != dataset.shape[0]:
            raise ValueError(
                f"{dataset.file.filename}:{dataset.name} must be chunked with all channels per chunk"
            )
        self.dataset, self.cache, self.key = dataset, cache, key
        self.shape = dataset.shape
        self.chunk = dataset.chunks[1:]
        self.dtype = dataset.dtype
        self._raw = dataset.compression is None and not dataset._filters  # chunk bytes are the array itself
        self.checksums = dataset.attrs.get(checksums.ATTR)  # None in stores written before checksums
        self.where = f"{dataset.file.filename}: field {dataset.name.rsplit('/', 1)[-1]!r}"

    def _load(self, index: tuple[int, int, int]) -> np.ndarray:
        offset = (0, *(i * c for i, c in zip(index, self.chunk, strict=True)))
        valid = tuple(min(c, n - o) for c, n, o in zip(self.chunk, self.shape[1:], offset[1:], strict=True))
        try:
            if self._raw:
                _, data = self.dataset.id.read_direct_chunk(offset)
                full = np.frombuffer(data, dtype=self.dtype).reshape(self.shape[0], *self.chunk)
                block = full[:, : valid[0], : valid[1], : valid[2]]
            else:
                region = tuple(slice(o, o + v) for o, v in zip(offset[1:], valid, strict=True))
                block = self.dataset[(slice(None), *region)]
        except (OSError, ValueError) as e:
            raise StoreError(f"{self.where}: chunk {index} cannot be read ({e}); {DAMAGED}") from e
        self._check(index, block)
        return block

    def _check(self, index: tuple[int, int, int], block: np.ndarray) -> None:
        """Checksum (when the store has them) and finite values of one chunk, read once per cache entry."""
        if self.checksums is not None and checksums.crc32(block) != int(self.checksums[index]):
            raise StoreError(
                f"{self.where}: chunk {index} fails its checksum: the file was damaged or overwritten; {DAMAGED}"
            )
        if not np.isfinite(block).all():
            cells = np.argwhere(~np.isfinite(block))[0][1:] + np.asarray(index) * np.asarray(self.chunk)
            raise StoreError(
                f"{self.where} holds NaN or inf (first at cell {tuple(int(c) for c in cells)}); {DAMAGED}"
            )

    def chunk_array(self, index: tuple[int, int, int]) -> np.ndarray:
        return self.cache.get((self.key, index), lambda: self._load(index))

    def read_periodic(self, corner, size: int) -> np.ndarray:
        """A (C, size, size, size) block from ``corner`` (any integers) with periodic wrap, chunk by chunk."""
        out = np.empty((self.shape[0], size, size, size), dtype=self.dtype)
        pieces = [
            _axis_pieces(int(c), size, n, ch)
            for c, n, ch in zip(corner, self.shape[1:], self.chunk, strict=True)
        ]
        for (ix, sx, dx, lx), (iy, sy, dy, ly), (iz, sz, dz, lz) in itertools.product(*pieces):
            src = self.chunk_array((ix, iy, iz))
            out[:, dx : dx + lx, dy : dy + ly, dz : dz + lz] = src[
                :, sx : sx + lx, sy : sy + ly, sz : sz + lz
            ]
        return out


def _axis_pieces(start: int, size: int, n: int, chunk: int) -> list[tuple[int, int, int, int]]:
    """Split the periodic run [start, start + size) mod n along one axis into pieces that each lie in
    one chunk: (chunk index, offset in the chunk, offset in the output, length)."""
    pieces, done, pos = [], 0, start % n
    while done < size:
        index, within = divmod(pos, chunk)
        length = min(size - done, chunk - within, n - pos)
        pieces.append((index, within, done, length))
        done += length
        pos = (pos + length) % n
    return pieces
