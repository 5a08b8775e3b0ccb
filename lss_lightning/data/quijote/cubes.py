"""Quijote's precomputed real-space density grids ``3D_cubes/<set>/<i>/df_m_<N>_<MAS>_z=<z>.npy``.

The grids are (N, N, N) with axes x, y, z and grid point i at x = i * dx (Pylians' convention, as
here), painted with CIC or PCS; MAS is recorded in the store so the window can be divided out later.
A grid of masses, counts or 1 + delta (non-negative) is turned into delta = rho / mean - 1; a grid
that is already a contrast (mean ~ 0, min >= -1) is kept as it is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lss_lightning.data.quijote.errors import QuijoteError
from lss_lightning.data.quijote.layout import missing_path_error

CUBE_MAS = ("CIC", "PCS")


def read_density_cube(path: str | Path, grid: int) -> tuple[np.ndarray, dict]:
    """delta as (1, N, N, N) float32 and attributes saying how it was normalised."""
    path = Path(path)
    if not path.exists():
        raise missing_path_error(
            path,
            "density cube",
            f"check root, set_name and the index; Quijote ships N = 64, 128, 256, 512 (grid={grid})",
        )
    try:
        cube = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise QuijoteError(f"{path} is not a readable .npy array ({e}); download it again") from e
    if cube.shape != (grid, grid, grid):
        raise QuijoteError(
            f"{path} is shaped {cube.shape}, expected ({grid}, {grid}, {grid}); set grid={cube.shape[0]}"
        )
    cube = np.asarray(cube, dtype=np.float64)
    if not np.isfinite(cube).all():
        raise QuijoteError(f"{path} holds NaN or inf; download it again")
    mean, minimum = float(cube.mean()), float(cube.min())
    if abs(mean) < 1e-3 * max(float(cube.std()), 1e-30) and minimum >= -1.0 - 1e-6:
        return cube[None].astype(np.float32), {"normalised_from": "contrast", "source_file": path.name}
    if mean > 0 and minimum >= 0:
        return (cube / mean - 1.0)[None].astype(np.float32), {
            "normalised_from": "density",
            "source_file": path.name,
        }
    raise QuijoteError(
        f"{path}: neither a non-negative density (mean {mean:.4g}, min {minimum:.4g}) nor a contrast with mean 0 "
        "and min >= -1; it is not a Quijote density cube"
    )
