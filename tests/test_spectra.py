"""Power spectra against an independent numpy estimator, and spectra of known fields."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lss_lightning.fields.spectra import (
    correlation_function,
    cross_statistics,
    default_k_edges,
    multipoles,
    power_spectrum,
)


def numpy_power_spectrum(delta: np.ndarray, box: float, edges: np.ndarray):
    """Plain full-FFT estimator: P = |delta_k|^2 L^3 / N^6 averaged over modes in each shell."""
    n = delta.shape[0]
    dk = np.fft.fftn(delta)
    m = np.fft.fftfreq(n, 1.0 / n)
    kk = 2 * np.pi / box * np.sqrt(m[:, None, None] ** 2 + m[None, :, None] ** 2 + m[None, None, :] ** 2)
    p = np.abs(dk) ** 2 * box**3 / n**6
    idx = np.digitize(kk.ravel(), edges) - 1
    ok = (idx >= 0) & (idx < len(edges) - 1)
    counts = np.bincount(idx[ok], minlength=len(edges) - 1)
    power = np.bincount(idx[ok], weights=p.ravel()[ok], minlength=len(edges) - 1) / counts
    kmean = np.bincount(idx[ok], weights=kk.ravel()[ok], minlength=len(edges) - 1) / counts
    return kmean, power, counts


def test_power_spectrum_matches_numpy_full_fft_estimator():
    rng = np.random.default_rng(3)
    n, box = 24, 100.0
    delta = rng.standard_normal((n, n, n)).astype(np.float32)
    edges = default_k_edges(n, box)
    spec = power_spectrum(torch.from_numpy(delta), box)
    k_ref, p_ref, counts = numpy_power_spectrum(delta.astype(np.float64), box, edges)
    np.testing.assert_array_equal(spec.modes, counts)
    np.testing.assert_allclose(spec.k, k_ref, rtol=1e-6)
    np.testing.assert_allclose(spec.power, p_ref, rtol=2e-5)


def test_white_noise_has_flat_spectrum_of_cell_volume():
    """Unit-variance white noise on cells of volume dx^3 has P = dx^3 at every k."""
    n, box = 32, 64.0
    gen = torch.Generator().manual_seed(0)
    spec = power_spectrum(torch.randn(n, n, n, generator=gen), box)
    expected = (box / n) ** 3
    good = spec.modes > 200
    pulls = (spec.power[good] - expected) / (expected * np.sqrt(2.0 / spec.modes[good]))
    assert np.all(np.abs(pulls) < 5)
    assert abs(np.mean(pulls)) < 1.0


def test_vector_spectrum_is_trace_and_cross_of_identical_fields_is_auto():
    gen = torch.Generator().manual_seed(1)
    v = torch.randn(3, 16, 16, 16, generator=gen)
    total = power_spectrum(v, 50.0).power
    parts = sum(power_spectrum(v[i], 50.0).power for i in range(3))
    np.testing.assert_allclose(total, parts, rtol=1e-5)
    stats = cross_statistics(v, v, 50.0)
    np.testing.assert_allclose(stats.correlation, 1.0, rtol=1e-5)
    np.testing.assert_allclose(stats.transfer, 1.0, rtol=1e-5)


def test_cross_statistics_of_scaled_and_negated_fields():
    """pred = 2 * true gives T = 2, r = 1; pred = -true gives r = -1 (the real part keeps the sign)."""
    gen = torch.Generator().manual_seed(2)
    truth = torch.randn(16, 16, 16, generator=gen)
    stats = cross_statistics(2 * truth, truth, 40.0)
    np.testing.assert_allclose(stats.transfer, 2.0, rtol=1e-5)
    np.testing.assert_allclose(stats.correlation, 1.0, rtol=1e-5)
    np.testing.assert_allclose(stats.error_power_ratio, 1.0, rtol=1e-4)
    np.testing.assert_allclose(cross_statistics(-truth, truth, 40.0).correlation, -1.0, rtol=1e-5)


def test_plane_wave_lands_in_its_bin_with_the_right_power():
    n, box, m, amp = 32, 100.0, 3, 0.5
    x = torch.arange(n) * box / n
    k = 2 * np.pi * m / box
    delta = (amp * torch.cos(k * x)).view(n, 1, 1).expand(n, n, n)
    spec = power_spectrum(delta, box)
    j = int(np.nanargmax(spec.power))
    assert spec.k[j] == pytest.approx(k, rel=0.05)
    # two modes (+k, -k) each with |delta_k|^2 = (amp N^3 / 2)^2: bin power = 2 (amp/2)^2 L^3 / modes
    assert spec.power[j] * spec.modes[j] == pytest.approx(2 * (amp / 2) ** 2 * box**3, rel=1e-5)


def test_multipoles_of_a_wave_along_the_line_of_sight():
    """A wave along z has mu = 1: P_2 = 5 P_0 and P_4 = 9 P_0; along x (mu = 0) P_2 = -5/2 P_0."""
    n, box = 16, 64.0
    z = torch.arange(n) * box / n
    wave = torch.cos(2 * np.pi * 2 * z / box)
    along_z = multipoles(wave.view(1, 1, n).expand(n, n, n), box, los_axis=2)
    j = int(np.nanargmax(along_z[0].power))
    assert along_z[2].power[j] == pytest.approx(5 * along_z[0].power[j], rel=1e-5)
    assert along_z[4].power[j] == pytest.approx(9 * along_z[0].power[j], rel=1e-5)
    along_x = multipoles(wave.view(n, 1, 1).expand(n, n, n), box, los_axis=2)
    assert along_x[2].power[j] == pytest.approx(-2.5 * along_x[0].power[j], rel=1e-5)


def test_correlation_function_of_white_noise_is_a_spike_at_zero():
    gen = torch.Generator().manual_seed(4)
    xi = correlation_function(torch.randn(16, 16, 16, generator=gen), 32.0)
    assert xi.k[0] == pytest.approx(0.0)
    assert xi.power[0] == pytest.approx(1.0, rel=0.05)  # the variance
    assert np.all(np.abs(xi.power[1:]) < 0.05)


@pytest.mark.parametrize(
    ("box", "edges_of"),
    [
        (256.0, lambda kf, box: kf * np.arange(1, 55)),
        (1000.0, lambda kf, box: 2 * np.pi * np.arange(1, 55) / box),
    ],
)
def test_edges_at_integer_multiples_of_k_f_bin_every_mode_in_its_shell(box, edges_of):
    """Pylians-style edges j k_F: the modes with |m| = 13, 26, 52 sit exactly on an edge and belong to the
    shell above it ([lo, hi)); j * 2 pi / L computed in floating point lands a rounding error off j."""
    rng = np.random.default_rng(5)
    n = 108  # |m| up to 54; these edges / k_F come out 13.000000000000002 (also 26, 52), which put those modes a shell low
    delta = rng.standard_normal((n, n, n)).astype(np.float32)
    kf = 2 * np.pi / box
    edges = edges_of(kf, box)
    spec = power_spectrum(torch.from_numpy(delta), box, k_edges=edges)
    # reference in exact integer arithmetic: shell j holds j + 1 <= |m| < j + 2, i.e. (j+1)^2 <= m^2 < (j+2)^2
    dk = np.fft.fftn(delta.astype(np.float64))
    m = np.rint(np.fft.fftfreq(n, 1.0 / n)).astype(np.int64)
    m2 = (m[:, None, None] ** 2 + m[None, :, None] ** 2 + m[None, None, :] ** 2).ravel()
    idx = np.searchsorted(np.arange(1, 55) ** 2, m2, side="right") - 1
    ok = (idx >= 0) & (idx < len(edges) - 1)
    counts = np.bincount(idx[ok], minlength=len(edges) - 1)
    p = (np.abs(dk) ** 2).ravel() * box**3 / n**6
    power = np.bincount(idx[ok], weights=p[ok], minlength=len(edges) - 1) / counts
    np.testing.assert_array_equal(spec.modes, counts)
    np.testing.assert_allclose(spec.power, power, rtol=1e-5)
