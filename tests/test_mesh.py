"""CIC paint/readout and mass-assignment windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lss_lightning.fields.mesh import cic_paint, cic_readout, lattice_positions, mas_window


def test_cic_conserves_mass_and_momentum():
    gen = torch.Generator().manual_seed(0)
    pos = torch.rand(5000, 3, generator=gen) * 50.0 - 10.0  # includes positions outside [0, L): wrapped
    mass = torch.rand(5000, generator=gen) + 0.5
    vel = torch.randn(5000, 3, generator=gen) * 300.0
    grid = cic_paint(pos, 16, 30.0, mass)
    assert grid.shape == (16, 16, 16)
    assert float(grid.sum()) == pytest.approx(float(mass.sum()), rel=1e-5)
    mom = cic_paint(pos, 16, 30.0, vel * mass[:, None])
    assert mom.shape == (3, 16, 16, 16)
    np.testing.assert_allclose(mom.sum((1, 2, 3)).numpy(), (vel * mass[:, None]).sum(0).numpy(), rtol=1e-4)


def test_cic_weights_follow_the_grid_convention():
    """A particle at x = 0.25 dx gives 0.75 to point 0 and 0.25 to point 1; at L - 0.5 dx it wraps."""
    n, box = 8, 8.0
    grid = cic_paint(torch.tensor([[0.25, 0.0, 0.0]]), n, box)
    assert grid[0, 0, 0] == pytest.approx(0.75) and grid[1, 0, 0] == pytest.approx(0.25)
    grid = cic_paint(torch.tensor([[7.5, 3.0, 0.0]]), n, box)
    assert grid[7, 3, 0] == pytest.approx(0.5) and grid[0, 3, 0] == pytest.approx(0.5)


def test_uniform_lattice_paints_a_uniform_grid():
    grid = cic_paint(lattice_positions(12, 24.0), 12, 24.0)
    np.testing.assert_allclose(grid.numpy(), 1.0, atol=1e-6)


def test_paint_and_readout_are_adjoint():
    """<paint(w), f> = <w, readout(f)> for any weights w and field f."""
    gen = torch.Generator().manual_seed(1)
    pos = torch.rand(3000, 3, generator=gen, dtype=torch.float64) * 20.0
    w = torch.randn(3000, generator=gen, dtype=torch.float64)
    f = torch.randn(10, 10, 10, generator=gen, dtype=torch.float64)
    lhs = (cic_paint(pos, 10, 20.0, w) * f).sum()
    rhs = (w * cic_readout(f, pos, 20.0)).sum()
    assert float(lhs) == pytest.approx(float(rhs), rel=1e-10)
    fv = torch.randn(3, 10, 10, 10, generator=gen, dtype=torch.float64)
    wv = torch.randn(3000, 3, generator=gen, dtype=torch.float64)
    assert float((cic_paint(pos, 10, 20.0, wv) * fv).sum()) == pytest.approx(
        float((wv * cic_readout(fv, pos, 20.0)).sum()), rel=1e-10
    )


def test_readout_of_a_linear_ramp_is_exact_inside_the_box():
    n, box = 16, 16.0
    x = torch.arange(n, dtype=torch.float64)
    ramp = (2.0 * x).view(n, 1, 1).expand(n, n, n).contiguous()
    pos = torch.tensor([[3.3, 5.0, 7.9], [10.75, 0.1, 2.0]], dtype=torch.float64)
    np.testing.assert_allclose(cic_readout(ramp, pos, box).numpy(), 2.0 * pos[:, 0].numpy(), rtol=1e-12)


def test_cic_window_values_at_zero_and_nyquist():
    w = mas_window(8, "cic")
    assert w[0, 0, 0] == pytest.approx(1.0)
    # sinc(pi/2)^2 = (2/pi)^2 at the Nyquist frequency along one axis
    assert float(w[4, 0, 0]) == pytest.approx((2 / np.pi) ** 2, rel=1e-6)
    assert float(w[4, 4, 4]) == pytest.approx((2 / np.pi) ** 6, rel=1e-5)
    with pytest.raises(ValueError, match="mass-assignment"):
        mas_window(8, "sph")
