"""Periodic crops with padding, tiling and stitching, and the symmetry group of the cube.

Crops are cut from periodic boxes (C, N, N, N): an input crop of side ``crop + 2 pad`` centred on a
target crop of side ``crop``, with wrap-around at every box edge (in the spirit of map2map). Reading
goes through ``read_periodic``, which splits each axis into at most two contiguous runs, so an
h5py dataset is read chunk-wise and never whole.

Symmetries act on a field f as f'(x) = R f(R^-1 x): axes are permuted (new axis j = old axis perm[j]),
then flipped; a vector's components follow the same permutation and flip sign on flipped axes; a
pseudovector (curl) additionally takes det(R). Redshift-space data keeps only the 16 elements that
leave the line-of-sight axis in place.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def _runs(start: int, size: int, n: int) -> list[tuple[int, int, int]]:
    """Split [start, start + size) mod n into contiguous (box_start, box_stop, out_start) runs."""
    runs, out = [], 0
    pos = start % n
    while out < size:
        length = min(size - out, n - pos)
        runs.append((pos, pos + length, out))
        out += length
        pos = 0
    return runs


def read_periodic(data, corner: Sequence[int], size: int) -> np.ndarray:
    """Cut a (C, size, size, size) block starting at ``corner`` (may be negative) from a periodic
    (C, N, N, N) array or h5py dataset (or anything with its own ``read_periodic``, such as
    ``data.chunks.ChunkedField``), wrapping at the box edges."""
    if hasattr(data, "read_periodic"):
        return data.read_periodic(corner, size)
    n = data.shape[-1]
    out = np.empty((data.shape[0], size, size, size), dtype=np.float32)
    rx, ry, rz = (_runs(int(c), size, n) for c in corner)
    for (x0, x1, ox), (y0, y1, oy), (z0, z1, oz) in itertools.product(rx, ry, rz):
        out[:, ox : ox + x1 - x0, oy : oy + y1 - y0, oz : oz + z1 - z0] = data[:, x0:x1, y0:y1, z0:z1]
    return out


def tile_corners(n: int, crop: int) -> list[tuple[int, int, int]]:
    """Corners of target tiles covering an N^3 box: ceil(N / crop) per axis, the last tile wrapping."""
    starts = [i * crop for i in range(-(-n // crop))]
    return list(itertools.product(starts, starts, starts))


def tile_batches(inputs: np.ndarray, crop: int, pad: int, batch_size: int):
    """Yield (corners, (B, C, crop + 2 pad, ...) input crops) over the tiles of a periodic box."""
    corners = tile_corners(inputs.shape[-1], crop)
    for start in range(0, len(corners), batch_size):
        chunk = corners[start : start + batch_size]
        yield chunk, np.stack([read_periodic(inputs, np.asarray(c) - pad, crop + 2 * pad) for c in chunk])


def stitch(tiles: Sequence[np.ndarray], corners: Sequence[Sequence[int]], n: int) -> np.ndarray:
    """Assemble (C, c, c, c) tiles at ``corners`` into a periodic (C, N, N, N) box, averaging overlaps."""
    channels, crop = tiles[0].shape[0], tiles[0].shape[-1]
    total = np.zeros((channels, n, n, n), dtype=np.float64)
    count = np.zeros((n, n, n), dtype=np.float64)
    for tile, corner in zip(tiles, corners, strict=True):
        idx = np.ix_(*[(np.arange(crop) + c) % n for c in corner])
        total[(slice(None), *idx)] += tile
        count[idx] += 1
    if (count == 0).any():
        raise ValueError("tiles do not cover the box; use tile_corners(n, crop)")
    return (total / count).astype(np.float32)


# -- symmetry group -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Symmetry:
    """A cube symmetry: axis permutation (new axis j = old axis perm[j]) followed by flips of new axes."""

    perm: tuple[int, int, int] = (0, 1, 2)
    flips: tuple[bool, bool, bool] = (False, False, False)

    @property
    def determinant(self) -> int:
        parity = sum(1 for i, j in itertools.combinations(range(3), 2) if self.perm[i] > self.perm[j]) % 2
        return (-1) ** (parity + sum(self.flips))

    def inverse(self) -> Symmetry:
        """The symmetry that undoes this one: apply_symmetry(apply_symmetry(f, k, s), k, s.inverse()) == f."""
        perm, flips = [0, 0, 0], [False, False, False]
        for j, p in enumerate(self.perm):  # R^-1 = R^T: new axis p comes from old axis j, flipped as j was
            perm[p], flips[p] = j, self.flips[j]
        return Symmetry(tuple(perm), tuple(flips))

    def matrix(self) -> np.ndarray:
        """R with x' = R x (so f'(x') = R f(x))."""
        r = np.zeros((3, 3))
        for j, p in enumerate(self.perm):
            r[j, p] = -1.0 if self.flips[j] else 1.0
        return r


def cube_symmetries(los_axis: int | None = None) -> list[Symmetry]:
    """All 48 symmetries of the cube, or the 16 that keep ``los_axis`` in place (redshift space)."""
    out = []
    for perm in itertools.permutations(range(3)):
        if los_axis is not None and perm[los_axis] != los_axis:
            continue
        for flips in itertools.product((False, True), repeat=3):
            out.append(Symmetry(perm, flips))
    return out


def sky_symmetries() -> list[Symmetry]:
    """The 4 symmetries of a light-cone grid (RA, DEC, z): mirror images of the sky, RA -> -RA and DEC -> -DEC,
    for cones symmetric about the line of sight. The z axis (distance from the observer) never flips, and RA
    and DEC do not swap (azimuth and latitude are different coordinates on the sphere)."""
    return [Symmetry((0, 1, 2), (fx, fy, False)) for fx in (False, True) for fy in (False, True)]


def apply_symmetry(field: np.ndarray, kind: str, sym: Symmetry) -> np.ndarray:
    """Transform a (C, n, n, n) numpy crop of the given kind (scalar, vector, pseudovector); may return a view."""
    out = field.transpose(0, *(p + 1 for p in sym.perm))
    flip_axes = tuple(j + 1 for j, f in enumerate(sym.flips) if f)
    if kind == "scalar":
        return _flip(out, flip_axes)
    if kind not in ("vector", "pseudovector"):
        raise ValueError(f"unknown field kind {kind!r}")
    out = _flip(out[list(sym.perm)], flip_axes)
    signs = np.array([-1.0 if f else 1.0 for f in sym.flips], dtype=np.float32)
    if kind == "pseudovector":
        signs = signs * sym.determinant
    return out * signs.reshape(3, 1, 1, 1)


def _flip(arr: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    return np.flip(arr, axes) if axes else arr
