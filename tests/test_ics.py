"""Gaussian initial conditions: spectrum, normalisation and resolution independence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lss_lightning.cosmology import sigma_from_power
from lss_lightning.fields.mesh import mode_indices, rfft_mode_weights, wavenumber
from lss_lightning.fields.spectra import bin_power, power_spectrum
from lss_lightning.mocks.ics import gaussian_field, gaussian_field_k

N, BOX, SEEDS = 32, 200.0, range(10)


def _camb_power(cosmology):
    return lambda k: cosmology.linear_power(k, 0.0)


def test_measured_power_matches_camb_input_within_cosmic_variance(cosmology):
    power = _camb_power(cosmology)
    spectra = [power_spectrum(gaussian_field(power, N, BOX, seed), BOX) for seed in SEEDS]
    measured = np.mean([s.power for s in spectra], axis=0)
    k = wavenumber(N, BOX, dtype=torch.float64)
    per_mode = torch.from_numpy(power(np.maximum(k.numpy(), 1e-6))) * (k > 0)
    expected = bin_power(per_mode, N, BOX)  # the input averaged over the same modes
    modes = spectra[0].modes
    below_nyquist = spectra[0].k < 0.8 * np.pi * N / BOX  # Nyquist planes are zeroed by design
    sigma = expected.power * np.sqrt(2.0 / (modes * len(SEEDS)))
    pulls = ((measured - expected.power) / sigma)[below_nyquist]
    assert np.all(np.abs(pulls) < 4.5), pulls
    chi2 = float(np.sum(pulls**2))
    assert chi2 < len(pulls) + 4 * np.sqrt(2 * len(pulls)), (chi2, len(pulls))


def test_field_sigma8_is_what_was_asked(cosmology):
    """Top-hat R = 8 Mpc/h variance of the realisations = the input's, and the input's is sigma_8."""
    power = _camb_power(cosmology)
    n, box = 48, 300.0
    k = wavenumber(n, box, dtype=torch.float64)
    x = k * 8.0
    window = torch.where(x > 0, 3 * (torch.sin(x) - x * torch.cos(x)) / x.clamp(min=1e-12) ** 3, 1.0)
    weights = rfft_mode_weights(n, dtype=torch.float64)
    variances = []
    for seed in SEEDS:
        dk = gaussian_field_k(power, n, box, seed).to(torch.complex128)
        variances.append(float((weights * dk.abs().square() * window.square()).sum()) / n**6)
    k_all = np.logspace(-4, 2, 3000)
    expected = sigma_from_power(k_all, power(k_all), 8.0) ** 2
    # the box misses k < k_F and k > k_Nyq: compare with the input summed over the grid's own modes
    kk = np.maximum(k.numpy(), 1e-6)
    nyq = np.zeros(k.shape, bool)
    for m in mode_indices(n):
        nyq |= np.broadcast_to((m.abs() == n // 2).numpy(), k.shape)
    on_grid = (
        float((weights.numpy() * np.where(nyq | (k.numpy() == 0), 0, power(kk)) * window.numpy() ** 2).sum())
        / box**3
    )
    assert np.mean(variances) == pytest.approx(
        on_grid, rel=3 * np.std(variances) / np.mean(variances) / np.sqrt(len(SEEDS)) + 1e-3
    )
    assert np.sqrt(on_grid) == pytest.approx(cosmology.sigma_8, rel=0.1)
    assert np.sqrt(expected) == pytest.approx(cosmology.sigma_8, rel=2e-3)


def test_same_seed_gives_same_large_scale_modes_at_any_resolution():
    power = lambda k: 1e3 * (k / 0.1) ** -1.5  # noqa: E731
    low, high = gaussian_field_k(power, 16, 100.0, seed=11), gaussian_field_k(power, 48, 100.0, seed=11)
    mx, my, mz = (m.numpy() for m in mode_indices(16))
    mx, my, mz = np.broadcast_arrays(mx, my, mz)
    resolved = (np.abs(mx) < 8) & (np.abs(my) < 8) & (mz < 8)
    coarse = low.numpy()[resolved] / 16**3
    fine = high.numpy()[mx[resolved] % 48, my[resolved] % 48, mz[resolved]] / 48**3
    np.testing.assert_allclose(coarse, fine, rtol=1e-5, atol=1e-12)
    other = gaussian_field_k(power, 16, 100.0, seed=12).numpy()[resolved] / 16**3
    assert np.abs(np.vdot(coarse, other)) < 0.2 * np.vdot(coarse, coarse).real  # another seed: another field


def test_fields_are_real_hermitian_and_fixed_amplitude_has_no_scatter():
    power = lambda k: np.full_like(k, 50.0)  # noqa: E731
    dk = gaussian_field_k(power, 16, 64.0, seed=5, fixed_amplitude=True)
    # a Hermitian rfft grid survives irfft -> rfft unchanged
    round_trip = torch.fft.rfftn(torch.fft.irfftn(dk, s=(16, 16, 16)))
    np.testing.assert_allclose(round_trip.numpy(), dk.numpy(), atol=1e-3)
    nonzero = dk.abs() > 0
    expected = 16**3 * np.sqrt(50.0 / 64.0**3)
    np.testing.assert_allclose(dk.abs()[nonzero].numpy(), expected, rtol=1e-5)
    paired = gaussian_field_k(power, 16, 64.0, seed=5, fixed_amplitude=True, paired=True)
    np.testing.assert_allclose(paired.numpy(), -dk.numpy())
