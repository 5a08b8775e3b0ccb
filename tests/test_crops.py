"""Periodic crops, tiling/stitching, and the cube symmetry group acting on (density, velocity) pairs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from lss_lightning.data.crops import (
    Symmetry,
    apply_symmetry,
    cube_symmetries,
    read_periodic,
    stitch,
    tile_corners,
)
from lss_lightning.fields.velocity import curl, linear_velocity

N, BOX = 16, 64.0


@pytest.fixture(scope="module")
def box() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(3, N, N, N)).astype(np.float32)


def direct_periodic_slice(box: np.ndarray, corner, size: int) -> np.ndarray:
    idx = [(np.arange(size) + c) % N for c in corner]
    return box[np.ix_(range(box.shape[0]), *idx)]


@pytest.mark.parametrize(
    "corner",
    [(0, 0, 0), (-6, -6, -6), (10, 12, 14), (N - 1, 0, N - 3), (-1, N - 2, 5), (3, -16, 30)],
)
def test_crop_equals_direct_periodic_slice_with_wrap_at_every_edge(box, corner):
    size = 20  # larger than the box: wraps more than once along an axis
    np.testing.assert_array_equal(read_periodic(box, corner, size), direct_periodic_slice(box, corner, size))


def test_crop_reads_from_h5py_datasets(tmp_path, box):
    import h5py

    with h5py.File(tmp_path / "f.h5", "w") as f:
        f.create_dataset("v", data=box, chunks=(3, 4, 4, 4))
    with h5py.File(tmp_path / "f.h5") as f:
        np.testing.assert_array_equal(
            read_periodic(f["v"], (-3, 13, 7), 12), direct_periodic_slice(box, (-3, 13, 7), 12)
        )


@pytest.mark.parametrize("crop", [4, 5, 7, 16])
def test_stitching_identity_tiles_gives_back_the_box(box, crop):
    corners = tile_corners(N, crop)
    pad = 3
    # an "identity model": the centre of each padded input crop
    tiles = [
        read_periodic(box, np.array(c) - pad, crop + 2 * pad)[:, pad:-pad, pad:-pad, pad:-pad]
        for c in corners
    ]
    np.testing.assert_allclose(stitch(tiles, corners, N), box, atol=1e-6)


def test_stitch_refuses_incomplete_cover(box):
    with pytest.raises(ValueError, match="do not cover"):
        stitch([box[:, :4, :4, :4]], [(0, 0, 0)], N)


def test_group_sizes_and_determinants():
    group = cube_symmetries()
    assert len(group) == 48 and len(set(group)) == 48
    assert sum(s.determinant for s in group) == 0  # 24 proper rotations, 24 improper
    for s in group:
        assert np.isclose(np.linalg.det(s.matrix()), s.determinant)
    for los in range(3):
        kept = cube_symmetries(los_axis=los)
        assert len(kept) == 16
        for s in kept:
            assert abs(s.matrix()[los, los]) == 1  # the line of sight maps onto itself


def test_vector_transformation_matches_rotation_matrix(box):
    """Transforming a vector crop equals R v(R^-1 x) computed with the explicit matrix."""
    coords = np.stack(np.meshgrid(*[np.arange(N)] * 3, indexing="ij"), 0).reshape(3, -1)
    centre = (N - 1) / 2
    for sym in cube_symmetries():
        r = sym.matrix()
        out = apply_symmetry(box, "vector", sym)
        src = np.rint(r.T @ (coords - centre) + centre).astype(int)  # R^-1 = R^T, about the crop centre
        expected = r @ box[:, src[0], src[1], src[2]]
        np.testing.assert_allclose(out.reshape(3, -1), expected, atol=1e-6)


def test_augmented_pair_equals_pair_recomputed_from_augmented_density():
    """For every symmetry g: v_lin(g delta) = g v_lin(delta), and curl transforms as a pseudovector."""
    rng = np.random.default_rng(1)
    delta = rng.normal(size=(1, N, N, N)).astype(np.float32)
    v = linear_velocity(torch.from_numpy(delta), BOX, 50.0).numpy()
    w = curl(torch.from_numpy(v + rng.normal(size=v.shape).astype(np.float32)), BOX)
    for sym in cube_symmetries():
        d_aug = np.ascontiguousarray(apply_symmetry(delta, "scalar", sym))
        v_of_aug = linear_velocity(torch.from_numpy(d_aug), BOX, 50.0).numpy()
        np.testing.assert_allclose(v_of_aug, apply_symmetry(v, "vector", sym), atol=2e-4)
    v2 = v + rng.normal(size=v.shape).astype(np.float32)
    for sym in itertools.islice(cube_symmetries(), 0, 48, 5):
        w_of_aug = curl(
            torch.from_numpy(np.ascontiguousarray(apply_symmetry(v2, "vector", sym))), BOX
        ).numpy()
        np.testing.assert_allclose(
            w_of_aug, apply_symmetry(curl(torch.from_numpy(v2), BOX).numpy(), "pseudovector", sym), atol=2e-3
        )
    assert w.shape == (3, N, N, N)


def test_flip_negates_only_the_flipped_component():
    v = np.ones((3, 2, 2, 2), np.float32)
    out = apply_symmetry(v, "vector", Symmetry((0, 1, 2), (False, True, False)))
    assert out[0].min() == 1 and out[1].max() == -1 and out[2].min() == 1
    with pytest.raises(ValueError, match="kind"):
        apply_symmetry(v, "tensor", Symmetry())
