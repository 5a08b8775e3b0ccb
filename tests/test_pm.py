"""Particle-mesh gravity as physics: linear growth, momentum conservation, the force of a point mass."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lss_lightning.cosmology import Cosmology
from lss_lightning.fields.mesh import cic_stencil, lattice_positions
from lss_lightning.mocks.ics import gaussian_field_k
from lss_lightning.mocks.lpt import lpt_particles
from lss_lightning.mocks.pm import ForceMesh, GrowthTable, PMSettings, evolve


def _plane_wave_run(cosmo: Cosmology, steps: int, stepping: str = "linear"):
    """A Zel'dovich plane wave (displacement 0.01 Mpc/h along x, k = k_F) on 32^3 particles, z = 9 -> 0."""
    n, box = 32, 128.0
    settings = PMSettings(steps=steps, mesh_factor=2, a_start=0.1, stepping=stepping)
    q = lattice_positions(n, box).double()
    wave = torch.sin(2 * math.pi / box * q[:, 0])
    amplitude = 0.01
    psi = torch.zeros_like(q)
    psi[:, 0] = amplitude * wave
    z0 = 1 / settings.a_start - 1
    velocity = psi * cosmo.a_h_f(z0)
    state = evolve((q + psi).float(), velocity.float(), cosmo, box, n, 1.0, settings)
    displacement = torch.remainder(state.positions.double() - q + box / 2, box) - box / 2
    growth = GrowthTable(cosmo)
    expected = amplitude * growth.d(1.0) / growth.d(settings.a_start)
    measured_x = 2 * float((displacement[:, 0] * wave).mean())
    measured_v = 2 * float((state.velocities()[:, 0].double() * wave).mean())
    transverse = float(displacement[:, 1:].abs().max())
    return measured_x / expected, measured_v / (expected * cosmo.a_h_f(0.0)), transverse


@pytest.mark.parametrize("steps", [5, 20])
def test_plane_wave_grows_as_the_linear_growth_factor(steps):
    """FastPM's factors make linear growth exact whatever the step count (the force itself is exact to
    ~0.5% for the box's longest wave on a lattice at mesh factor 2: CIC window and lattice discreteness)."""
    cosmo = Cosmology()
    x_ratio, v_ratio, transverse = _plane_wave_run(cosmo, steps)
    assert x_ratio == pytest.approx(1.0, abs=0.01)
    assert v_ratio == pytest.approx(1.0, abs=0.01)
    assert transverse < 1e-6


def test_growth_does_not_depend_on_the_number_or_spacing_of_steps():
    cosmo = Cosmology(w0=-0.9, wa=0.2)  # a w0-wa background as well
    runs = [
        _plane_wave_run(cosmo, s, stepping) for s, stepping in ((5, "linear"), (20, "linear"), (7, "log"))
    ]
    for x_ratio, v_ratio, _ in runs[1:]:
        assert x_ratio == pytest.approx(runs[0][0], abs=2e-3)
        assert v_ratio == pytest.approx(runs[0][1], abs=2e-3)


def test_total_momentum_stays_zero():
    """Same CIC for paint and readout and an antisymmetric gradient: pairwise forces cancel exactly."""
    cosmo, n, box = Cosmology(), 32, 64.0
    settings = PMSettings(steps=5, a_start=0.1)
    z0 = 1 / settings.a_start - 1
    growth = float(cosmo.growth_factor(z0))
    delta_k = gaussian_field_k(lambda k: cosmo.linear_power(k, method="eh") * growth**2, n, box, seed=3)
    particles = lpt_particles(delta_k, box, cosmo, z0, order=2)
    state = evolve(particles.positions, particles.velocities, cosmo, box, n, 1.0, settings)
    p = state.momenta.double()
    assert float(p.abs().mean()) > 0.5  # Mpc/h: the particles did move (p = a^3 E dx/da)
    assert float(p.sum(0).norm() / p.norm(dim=1).sum()) < 1e-6
    assert torch.isfinite(state.positions).all() and float(state.positions.max()) < box


def test_point_mass_force_falls_as_inverse_square_beyond_three_cells():
    """Source of weight V (laplacian phi = delta): F = -V r_hat / (4 pi r^2) + r / 3, the last term from
    the mean density subtracted in a periodic box; images add < 0.3% for r <= L/4."""
    n = box = 64  # 1 Mpc/h cells
    mesh = ForceMesh(n, float(box))
    gen = torch.Generator().manual_seed(0)
    radii, ratios = [], []
    for _ in range(10):
        source = (box / 2 + torch.rand(1, 3, generator=gen)).float()  # anywhere inside a cell
        phi_k = mesh.potential_k(source)
        direction = torch.randn(400, 3, generator=gen)
        direction /= direction.norm(dim=1, keepdim=True)
        r = 3.0 + 13.0 * torch.rand(400, 1, generator=gen)
        force = mesh.forces_at(phi_k, (source + direction * r).float()).double()
        r = r[:, 0].double()
        radial = (force * direction.double()).sum(1)
        tangential = (force - radial[:, None] * direction.double()).norm(dim=1)
        expected = -(box**3) / (4 * math.pi * r**2) + r / 3
        radii.append(r)
        ratios.append(torch.stack([radial / expected, tangential / expected.abs()], 1))
    r, ratio = torch.cat(radii), torch.cat(ratios)
    for lo, hi in ((3, 4), (4, 6), (6, 10), (10, 16)):
        shell = (r >= lo) & (r < hi)
        radial, tangential = ratio[shell, 0], ratio[shell, 1]
        assert float(radial.mean()) == pytest.approx(1.0, abs=0.01), (lo, hi)
        assert float(radial.std()) < 0.05 and float(tangential.square().mean().sqrt()) < 0.05, (lo, hi)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_real_space_force_equals_the_fourier_path(dtype):
    """The CPU force (one inverse FFT, the 4-point gradient as a compiled real-space stencil, readout on the
    row-sorted particles) equals the GPU path (3 inverse FFTs of the Fourier kernel, torch stencil) to float rounding,
    for clustered particles on an odd and an even mesh, and through ForceMesh.forces."""
    gen = torch.Generator().manual_seed(3)
    for n in (24, 25):
        mesh = ForceMesh(n, 50.0)
        centres = torch.rand(5, 3, generator=gen) * 50.0
        pos = (centres.repeat_interleave(400, 0) + 2.0 * torch.randn(2000, 3, generator=gen)).remainder(50.0)
        pos = pos.to(dtype)
        fast_stencil, slow_stencil = (cic_stencil(pos, n, 50.0, compiled=c) for c in (True, False))
        phi_k = mesh.potential_k(slow_stencil)
        fast, slow = mesh.forces_at(phi_k, fast_stencil), mesh.forces_at(phi_k, slow_stencil)
        assert fast.shape == slow.shape == (2000, 3) and fast.dtype == slow.dtype
        scale = float(slow.pow(2).mean().sqrt())
        tol = 1e-5 if dtype == torch.float32 else 1e-6  # the Fourier kernels are float32 in both dtypes
        assert float((fast - slow).abs().max()) < tol * scale
        assert (
            float((mesh.forces(pos) - slow).abs().max()) < tol * scale
        )  # the default path is the compiled one


def test_bad_settings_name_the_fix():
    with pytest.raises(ValueError, match=r"pm.a_start.*\(0, 1\)"):
        PMSettings(a_start=1.5)
    with pytest.raises(ValueError, match=r"pm\.steps"):
        PMSettings(steps=0)
    with pytest.raises(ValueError, match=r"earlier than the output.*lower pm\.a_start"):
        PMSettings(a_start=0.6).scale_factors(0.5)
    assert np.allclose(PMSettings(steps=4, a_start=0.2).scale_factors(1.0), [0.2, 0.4, 0.6, 0.8, 1.0])


def test_outputs_on_the_way_grow_as_the_linear_growth_factor():
    """Outputs are extra step boundaries with their own half kicks: each still follows D(a)."""
    cosmo, n, box = Cosmology(), 32, 128.0
    settings = PMSettings(steps=5, a_start=0.1)
    q = lattice_positions(n, box).double()
    wave = torch.sin(2 * math.pi / box * q[:, 0])
    psi = torch.zeros_like(q)
    psi[:, 0] = 0.01 * wave
    seen = {}

    def keep(state):
        seen[round(state.a, 6)] = state

    final = evolve(
        (q + psi).float(),
        (psi * cosmo.a_h_f(9.0)).float(),
        cosmo,
        box,
        n,
        1.0,
        settings,
        outputs=[0.33, 0.5, 1.0],
        on_output=keep,
    )
    assert sorted(seen) == [0.33, 0.5, 1.0] and seen[1.0] is final
    growth = GrowthTable(cosmo)
    for a, state in seen.items():
        displacement = torch.remainder(state.positions.double() - q + box / 2, box) - box / 2
        amplitude = 2 * float((displacement[:, 0] * wave).mean())
        velocity = 2 * float((state.velocities()[:, 0].double() * wave).mean())
        expected = 0.01 * growth.d(a) / growth.d(0.1)
        assert amplitude / expected == pytest.approx(1.0, abs=0.01)
        assert velocity / (expected * cosmo.a_h_f(1 / a - 1)) == pytest.approx(1.0, abs=0.01)
