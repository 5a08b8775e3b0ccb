"""CIC paint/readout and mass-assignment windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lss_lightning.fields.mesh import cic_paint, cic_readout, cic_stencil, lattice_positions, mas_window


@pytest.mark.parametrize("compiled", [True, False])
def test_cic_conserves_mass_and_momentum(compiled):
    gen = torch.Generator().manual_seed(0)
    pos = torch.rand(5000, 3, generator=gen) * 50.0 - 10.0  # includes positions outside [0, L): wrapped
    mass = torch.rand(5000, generator=gen) + 0.5
    vel = torch.randn(5000, 3, generator=gen) * 300.0
    grid = cic_paint(pos, 16, 30.0, mass, compiled=compiled)
    assert grid.shape == (16, 16, 16)
    assert float(grid.sum()) == pytest.approx(float(mass.sum()), rel=1e-5)
    mom = cic_paint(pos, 16, 30.0, vel * mass[:, None], compiled=compiled)
    assert mom.shape == (3, 16, 16, 16)
    np.testing.assert_allclose(mom.sum((1, 2, 3)).numpy(), (vel * mass[:, None]).sum(0).numpy(), rtol=1e-4)


@pytest.mark.parametrize("compiled", [True, False])
def test_cic_weights_follow_the_grid_convention(compiled):
    """A particle at x = 0.25 dx gives 0.75 to point 0 and 0.25 to point 1; at L - 0.5 dx it wraps."""
    n, box = 8, 8.0
    grid = cic_paint(torch.tensor([[0.25, 0.0, 0.0]]), n, box, compiled=compiled)
    assert grid[0, 0, 0] == pytest.approx(0.75) and grid[1, 0, 0] == pytest.approx(0.25)
    grid = cic_paint(torch.tensor([[7.5, 3.0, 0.0]]), n, box, compiled=compiled)
    assert grid[7, 3, 0] == pytest.approx(0.5) and grid[0, 3, 0] == pytest.approx(0.5)


def test_uniform_lattice_paints_a_uniform_grid():
    grid = cic_paint(lattice_positions(12, 24.0), 12, 24.0)
    np.testing.assert_allclose(grid.numpy(), 1.0, atol=1e-6)


@pytest.mark.parametrize("compiled", [True, False])
def test_paint_and_readout_are_adjoint(compiled):
    """<paint(w), f> = <w, readout(f)> for any weights w and field f."""
    gen = torch.Generator().manual_seed(1)
    pos = torch.rand(3000, 3, generator=gen, dtype=torch.float64) * 20.0
    w = torch.randn(3000, generator=gen, dtype=torch.float64)
    f = torch.randn(10, 10, 10, generator=gen, dtype=torch.float64)
    lhs = (cic_paint(pos, 10, 20.0, w, compiled=compiled) * f).sum()
    rhs = (w * cic_readout(f, pos, 20.0, compiled=compiled)).sum()
    assert float(lhs) == pytest.approx(float(rhs), rel=1e-10)
    fv = torch.randn(3, 10, 10, 10, generator=gen, dtype=torch.float64)
    wv = torch.randn(3000, 3, generator=gen, dtype=torch.float64)
    assert float((cic_paint(pos, 10, 20.0, wv, compiled=compiled) * fv).sum()) == pytest.approx(
        float((wv * cic_readout(fv, pos, 20.0, compiled=compiled)).sum()), rel=1e-10
    )


@pytest.mark.parametrize("compiled", [True, False])
def test_readout_of_a_linear_ramp_is_exact_inside_the_box(compiled):
    n, box = 16, 16.0
    x = torch.arange(n, dtype=torch.float64)
    ramp = (2.0 * x).view(n, 1, 1).expand(n, n, n).contiguous()
    pos = torch.tensor([[3.3, 5.0, 7.9], [10.75, 0.1, 2.0]], dtype=torch.float64)
    np.testing.assert_allclose(
        cic_readout(ramp, pos, box, compiled=compiled).numpy(), 2.0 * pos[:, 0].numpy(), rtol=1e-12
    )


def _particles_up_to_the_box_edge(count: int, box: float, seed: int) -> torch.Tensor:
    """Random float32 positions in [0, L), plus ones at 0, exactly at L and at the last float below L."""
    gen = torch.Generator().manual_seed(seed)
    pos = torch.rand(count, 3, generator=gen) * box
    below = float(torch.nextafter(torch.tensor(box), torch.tensor(0.0)))
    edges = torch.tensor([[0.0, box, below], [box, box, box], [below, below, below], [below, 0.0, box / 2]])
    return torch.cat([pos, edges])


@pytest.mark.parametrize("compiled", [True, False])
def test_one_stencil_reads_three_components_as_three_readouts(compiled):
    n, box = 12, 30.0
    pos = _particles_up_to_the_box_edge(140_000, box, seed=2)  # more than one CPU chunk (2^17)
    gen = torch.Generator().manual_seed(3)
    field = torch.randn(3, n, n, n, generator=gen)
    stencil = cic_stencil(pos, n, box, compiled=compiled)
    vector = stencil.readout(field)
    assert vector.shape == (len(pos), 3)
    expect = torch.stack([cic_readout(field[i], pos, box, compiled=compiled) for i in range(3)], dim=1)
    torch.testing.assert_close(vector, expect)  # float32 tolerances
    torch.testing.assert_close(stencil.readout(field[1]), expect[:, 1])
    # a particle at (L, L, L) sits on grid point 0; one at the last float below L reads (almost) point 0 too
    torch.testing.assert_close(vector[-3], field[:, 0, 0, 0])
    torch.testing.assert_close(vector[-2], field[:, 0, 0, 0], rtol=0.0, atol=1e-4)
    with pytest.raises(ValueError, match="N = 12"):
        stencil.readout(torch.zeros(3, 8, 8, 8))


@pytest.mark.parametrize("compiled", [True, False])
def test_stencil_paints_as_cic_paint(compiled):
    n, box = 10, 20.0
    pos = _particles_up_to_the_box_edge(140_000, box, seed=4)
    gen = torch.Generator().manual_seed(5)
    mass, momentum = torch.rand(len(pos), generator=gen), torch.randn(len(pos), 3, generator=gen)
    stencil = cic_stencil(pos, n, box, compiled=compiled)
    exact = {"rtol": 0.0, "atol": 0.0}  # same corners, same order of the additions
    torch.testing.assert_close(stencil.paint(), cic_paint(pos, n, box, compiled=compiled), **exact)
    torch.testing.assert_close(stencil.paint(mass), cic_paint(pos, n, box, mass, compiled=compiled), **exact)
    torch.testing.assert_close(
        stencil.paint(momentum), cic_paint(pos, n, box, momentum, compiled=compiled), **exact
    )
    assert float(stencil.paint().sum()) == pytest.approx(len(pos), rel=1e-6)  # edge particles stay inside


@pytest.mark.parametrize("compiled", [True, False])
def test_stencil_paint_and_readout_are_adjoint(compiled):
    """sum_p w_p readout(f)_p = sum_cells f paint(w): one stencil, scalar and 3-component fields."""
    gen = torch.Generator().manual_seed(6)
    pos = torch.rand(3000, 3, generator=gen, dtype=torch.float64) * 20.0 - 5.0  # some wrapped
    stencil = cic_stencil(pos, 10, 20.0, compiled=compiled)
    w, wv = (
        torch.randn(3000, generator=gen, dtype=torch.float64),
        torch.randn(3000, 3, generator=gen).double(),
    )
    f, fv = (
        torch.randn(10, 10, 10, generator=gen).double(),
        torch.randn(3, 10, 10, 10, generator=gen).double(),
    )
    assert float((stencil.readout(f) * w).sum()) == pytest.approx(
        float((f * stencil.paint(w)).sum()), rel=1e-10
    )
    assert float((stencil.readout(fv) * wv).sum()) == pytest.approx(
        float((fv * stencil.paint(wv)).sum()), rel=1e-10
    )


def test_cic_window_values_at_zero_and_nyquist():
    w = mas_window(8, "cic")
    assert w[0, 0, 0] == pytest.approx(1.0)
    # sinc(pi/2)^2 = (2/pi)^2 at the Nyquist frequency along one axis
    assert float(w[4, 0, 0]) == pytest.approx((2 / np.pi) ** 2, rel=1e-6)
    assert float(w[4, 4, 4]) == pytest.approx((2 / np.pi) ** 6, rel=1e-5)
    with pytest.raises(ValueError, match="mass-assignment"):
        mas_window(8, "sph")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_cic_equals_the_torch_path(dtype):
    """The compiled CPU kernels (fields.compiled) and the torch stencil give the same paint and readout,
    scalar and vector, for particles wrapped in from outside the box and at its edges."""
    n, box = 12, 30.0
    pos = torch.cat([_particles_up_to_the_box_edge(20_000, box, seed=7), torch.tensor([[-3.1, 31.7, 95.0]])])
    pos = pos.to(dtype)
    gen = torch.Generator().manual_seed(8)
    mass, momentum = (
        torch.rand(len(pos), generator=gen).to(dtype),
        torch.randn(len(pos), 3, generator=gen).to(dtype),
    )
    field = torch.randn(3, n, n, n, generator=gen).to(dtype)
    tol = {"rtol": 1e-5, "atol": 1e-4} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-10}
    for weights in (None, mass, momentum):
        fast, slow = (cic_paint(pos, n, box, weights, compiled=c) for c in (True, False))
        assert fast.dtype == slow.dtype == dtype and fast.shape == slow.shape
        torch.testing.assert_close(fast, slow, **tol)
    for f in (field, field[2]):
        fast, slow = (cic_readout(f, pos, box, compiled=c) for c in (True, False))
        assert fast.shape == slow.shape and fast.dtype == dtype
        torch.testing.assert_close(fast, slow, **tol)
    stencils = [cic_stencil(pos, n, box, compiled=c) for c in (True, False)]
    assert type(stencils[0]).__name__ == "CompiledCICStencil" and type(stencils[1]).__name__ == "CICStencil"
    torch.testing.assert_close(stencils[0].paint(momentum), stencils[1].paint(momentum), **tol)
    torch.testing.assert_close(stencils[0].readout(field), stencils[1].readout(field), **tol)


def test_row_sort_is_a_stable_permutation_by_lower_corner_row():
    """compiled.sort_by_row: order is a permutation, the sorted particles' rows (i_x N + i_y of the lower
    corner, wrapped) never decrease, ties keep their input order, and the sorted copy is positions[order]."""
    from lss_lightning.fields import compiled

    n, box = 16, 40.0
    pos = torch.cat([_particles_up_to_the_box_edge(5_000, box, seed=3), torch.tensor([[-3.1, 41.7, 95.0]])])
    pos = pos.numpy()
    order, sorted_positions = np.empty(len(pos), np.int32), np.empty_like(pos)
    compiled.sort_by_row(pos, np.float32(n / box), n, order, sorted_positions)
    assert np.array_equal(np.sort(order), np.arange(len(pos)))
    np.testing.assert_array_equal(sorted_positions, pos[order])
    cells = np.floor(pos.astype(np.float64) * (n / box)).astype(np.int64) % n
    rows = (cells[:, 0] * n + cells[:, 1])[order]
    assert np.all(np.diff(rows) >= 0)
    same_row = np.diff(rows) == 0
    assert np.all(np.diff(order)[same_row] > 0)  # stable
    assert same_row.sum() > 4_000  # the test has ties to check


def test_compiled_cic_steps_aside_for_gradients():
    """A tensor that needs gradients takes the torch path (the compiled kernels are not differentiable)."""
    pos = torch.rand(50, 3, dtype=torch.float64) * 10.0
    field = torch.randn(8, 8, 8, dtype=torch.float64, requires_grad=True)
    cic_readout(field, pos, 10.0).sum().backward()
    torch.testing.assert_close(field.grad, cic_paint(pos, 8, 10.0).double())  # the adjoint of readout
