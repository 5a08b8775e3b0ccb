"""Spectral vector calculus, linear-theory velocities and their symmetries."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from lss_lightning.fields.velocity import (
    curl,
    divergence,
    gradient,
    linear_velocity,
    redshift_space_positions,
)

N, BOX = 32, 128.0


def _coords():
    x = torch.arange(N, dtype=torch.float64) * BOX / N
    return torch.meshgrid(x, x, x, indexing="ij")


def test_plane_wave_density_gives_inflow_with_linear_amplitude():
    """delta = A cos(k x) gives v_x = -(a H f A / k) sin(k x), v_y = v_z = 0 (REFERENCES.md check)."""
    x, _, _ = _coords()
    amp, a_h_f, k = 0.1, 51.3, 2 * np.pi * 3 / BOX
    delta = (amp * torch.cos(k * x)).float()
    v = linear_velocity(delta, BOX, a_h_f)
    expected = -(a_h_f * amp / k) * torch.sin(k * x)
    np.testing.assert_allclose(v[0].numpy(), expected.numpy(), atol=1e-4 * a_h_f * amp / k)
    assert float(v[1:].abs().max()) < 1e-4
    # sign: just left of the crest (x slightly below 0) matter moves in +x, towards the overdensity
    assert float(v[0, -1, 0, 0]) > 0


def test_linear_velocity_has_theta_equal_minus_ahf_delta_and_no_curl():
    gen = torch.Generator().manual_seed(0)
    delta = torch.randn(N, N, N, generator=gen)
    delta = torch.fft.irfftn(torch.fft.rfftn(delta) * _no_nyquist(), s=(N, N, N))
    delta -= delta.mean()  # the k = 0 mode carries no velocity
    v = linear_velocity(delta, BOX, 50.0)
    np.testing.assert_allclose(divergence(v, BOX)[0].numpy(), (-50.0 * delta).numpy(), atol=1e-3)
    assert float(curl(v, BOX).abs().max()) < 1e-3


def _no_nyquist():
    m = torch.fft.fftfreq(N, 1 / N).abs()
    mz = torch.fft.rfftfreq(N, 1 / N)
    keep = (m.view(-1, 1, 1) < N // 2) & (m.view(1, -1, 1) < N // 2) & (mz.view(1, 1, -1) < N // 2)
    return keep.float()


def test_curl_of_a_shear_flow_and_gradient_of_a_wave():
    """v = (sin(k y), 0, 0) has curl = (0, 0, -k cos(k y)); grad cos(k z) = -k sin(k z) e_z."""
    _, y, z = _coords()
    k = 2 * np.pi * 2 / BOX
    v = torch.stack([torch.sin(k * y), torch.zeros_like(y), torch.zeros_like(y)]).float()
    w = curl(v, BOX)
    np.testing.assert_allclose(w[2].numpy(), (-k * torch.cos(k * y)).numpy(), atol=1e-5)
    assert float(w[:2].abs().max()) < 1e-5
    g = gradient(torch.cos(k * z).float(), BOX)
    np.testing.assert_allclose(g[2].numpy(), (-k * torch.sin(k * z)).numpy(), atol=1e-5)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_flipping_density_flips_velocity_and_negates_that_component(axis):
    gen = torch.Generator().manual_seed(axis)
    delta = torch.randn(N, N, N, generator=gen)
    v = linear_velocity(delta, BOX, 50.0, smoothing=3.0)
    v_of_flipped = linear_velocity(torch.flip(delta, dims=(axis,)), BOX, 50.0, smoothing=3.0)
    flipped_v = torch.flip(v, dims=(axis + 1,))
    flipped_v[axis] = -flipped_v[axis]
    np.testing.assert_allclose(v_of_flipped.numpy(), flipped_v.numpy(), atol=1e-4)


def test_permuting_axes_permutes_velocity_components():
    gen = torch.Generator().manual_seed(7)
    delta = torch.randn(N, N, N, generator=gen)
    v = linear_velocity(delta, BOX, 50.0)
    for perm in itertools.permutations(range(3)):
        v_perm = linear_velocity(delta.permute(*perm), BOX, 50.0)
        expected = v.permute(0, *(p + 1 for p in perm))[list(perm)]
        np.testing.assert_allclose(v_perm.numpy(), expected.numpy(), atol=1e-4)


def test_bias_and_smoothing_scale_the_linear_velocity():
    gen = torch.Generator().manual_seed(8)
    delta = torch.randn(N, N, N, generator=gen)
    v = linear_velocity(delta, BOX, 50.0)
    np.testing.assert_allclose(linear_velocity(delta, BOX, 50.0, bias=2.0).numpy(), v.numpy() / 2, atol=1e-4)
    assert float(linear_velocity(delta, BOX, 50.0, smoothing=10.0).std()) < float(v.std())
    with pytest.raises(ValueError, match="bias"):
        linear_velocity(delta, BOX, 50.0, bias=0.0)


def test_redshift_space_shift_and_wrap():
    pos = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 99.0]])
    vel = torch.tensor([[0.0, 0.0, 100.0], [500.0, 0.0, 200.0]])
    s = redshift_space_positions(pos, vel, a_h=100.0, box_size=100.0, los_axis=2)
    np.testing.assert_allclose(s.numpy(), [[1.0, 2.0, 4.0], [1.0, 2.0, 1.0]], atol=1e-5)
    with pytest.raises(ValueError, match="los_axis"):
        redshift_space_positions(pos, vel, 100.0, 100.0, los_axis=3)
