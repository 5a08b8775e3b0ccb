"""Summary statistics against independent computations: xi(r) by brute force and, for a Gaussian field,
the Hankel transform of its P(k); scattering against real-space convolution and under rotations."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy import integrate
from scipy.special import sph_harm_y, spherical_jn

from lss_lightning.fields.scattering import scattering_size, solid_harmonic_filters, solid_harmonic_scattering
from lss_lightning.fields.spectra import (
    batch_correlation_function,
    correlation_function,
    separation_counts,
    separations,
)
from lss_lightning.tasks.summaries import SummaryStatistics, xi_edges

# -- xi(r) ------------------------------------------------------------------------------------------


def test_xi_matches_a_brute_force_sum_over_shifts():
    """xi(r) = <x(s) x(s + r)>_s with the cube's mean removed, every shift done by hand (np.roll)."""
    n = 8
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 1, n, n, n))
    edges = np.array([0.0, 0.5, 1.5, 2.5, 3.5, 4.5])
    ours = batch_correlation_function(torch.from_numpy(x).float(), edges).numpy()
    sep = separations(n).numpy()
    for b in range(2):
        d = x[b, 0] - x[b, 0].mean()
        sums, counts = np.zeros(len(edges) - 1), np.zeros(len(edges) - 1)
        for i, j, k in np.ndindex(n, n, n):
            r = sep[i, j, k]
            bin_ = np.searchsorted(edges, r, side="right") - 1
            if 0 <= bin_ < len(edges) - 1:
                sums[bin_] += np.mean(d * np.roll(d, (-i, -j, -k), axis=(0, 1, 2)))
                counts[bin_] += 1
        np.testing.assert_allclose(ours[b], sums / counts, rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(separation_counts(n, edges), counts)
    assert counts[:2].tolist() == [1, 6 + 12]  # r = 0; then |r| = 1 (6 vectors) and sqrt(2) (12)


def test_batched_xi_agrees_with_the_box_estimator():
    g = torch.Generator().manual_seed(1)
    field = torch.randn(16, 16, 16, generator=g)
    field = field - field.mean()
    reference = correlation_function(field, box_size=16.0)  # cell = 1: separations in cells
    ours = batch_correlation_function(field[None, None], np.r_[0.0, np.arange(8) + 0.5])[0]
    np.testing.assert_allclose(ours.numpy(), reference.power, rtol=1e-4, atol=1e-6)


def gaussian_field(power, n: int, seeds: range) -> np.ndarray:
    """Realisations of a Gaussian field on n^3 unit cells with power spectrum power(k) (cell^3)."""
    k1 = 2 * np.pi * np.fft.fftfreq(n)
    kz = 2 * np.pi * np.fft.rfftfreq(n)
    k = np.sqrt(k1[:, None, None] ** 2 + k1[None, :, None] ** 2 + kz[None, None, :] ** 2)
    fields = []
    for seed in seeds:
        white = np.fft.rfftn(np.random.default_rng(seed).standard_normal((n, n, n)))
        fields.append(np.fft.irfftn(white * np.sqrt(power(k)), s=(n, n, n)))
    return np.stack(fields)[:, None]


def test_xi_of_a_gaussian_field_is_the_hankel_transform_of_its_power():
    """xi(r) = 1/(2 pi^2) int k^2 P(k) j0(k r) dk, by quadrature, averaged over each bin's separations."""
    n, scale = 48, 2.5  # cells; P(k) = (k s)^2 exp(-(k s)^2) s^3: smooth, tiny beyond the Nyquist mode
    power = lambda k: (k * scale) ** 2 * np.exp(-((k * scale) ** 2)) * scale**3  # noqa: E731
    fields = torch.from_numpy(gaussian_field(power, n, range(4))).float()
    edges = xi_edges(n, 12, (0.0, 0.25))
    measured = batch_correlation_function(fields, edges).numpy()

    def hankel(r: float) -> float:
        integrand = lambda k: k**2 * power(k) * spherical_jn(0, k * r) / (2 * np.pi**2)  # noqa: E731
        return integrate.quad(integrand, 0, 12 / scale, limit=200)[0]

    radii = np.linspace(0, edges[-1], 400)
    table = np.array([hankel(r) for r in radii])
    sep = separations(n).numpy().ravel()
    expected = []
    for lo, hi in itertools.pairwise(edges):
        inside = sep[(sep >= lo) & (sep < hi)]
        expected.append(np.interp(inside, radii, table).mean())
    expected = np.array(expected)
    mean = measured.mean(0)
    error = measured.std(0, ddof=1) / np.sqrt(len(measured))
    assert expected[0] == pytest.approx(table[0])  # the first bin holds r = 0 only: the variance
    assert np.all(np.abs(mean - expected) < 4 * error + 0.01 * expected[0]), (mean, expected, error)
    assert expected.min() < -0.02 * expected[0]  # the transform crosses zero: the test sees shape, not scale


# -- scattering --------------------------------------------------------------------------------------


def real_space_kernel(n: int, sigma: float, ell: int, m: int) -> np.ndarray:
    """(2 pi)^-3/2 sigma^(-l-3) |r|^l Y_l^m(r/|r|) exp(-r^2 / 2 sigma^2) at every offset of a periodic
    n^3 grid, summed over the 27 nearest periodic images."""
    c = np.fft.fftfreq(n, 1.0 / n)
    kernel = np.zeros((n, n, n), dtype=complex)
    for image in np.ndindex(3, 3, 3):
        x, y, z = np.meshgrid(*(c + n * (i - 1) for i in image), indexing="ij")
        r = np.sqrt(x**2 + y**2 + z**2)
        polar = np.arccos(np.clip(np.divide(z, r, out=np.ones_like(r), where=r > 0), -1, 1))
        azimuth = np.mod(np.arctan2(y, x), 2 * np.pi)
        radial = (2 * np.pi) ** -1.5 * sigma ** (-ell - 3) * r**ell * np.exp(-0.5 * r**2 / sigma**2)
        kernel += radial * sph_harm_y(ell, m, polar, azimuth)
    return kernel


def direct_convolution(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """(x * kernel)(s) = sum_t kernel(t) x(s - t) over every periodic offset t, one shifted copy each."""
    out = np.zeros(x.shape, dtype=complex)
    for t in zip(*np.nonzero(np.abs(kernel) > 1e-9 * np.abs(kernel).max()), strict=True):
        out += kernel[t] * np.roll(x, t, axis=(0, 1, 2))
    return out


@pytest.mark.parametrize(("j", "ell"), [(0, 0), (0, 2), (1, 1)])
def test_first_order_scattering_equals_real_space_convolution(j, ell):
    """U1 from the Fourier-space wavelets equals sqrt(sum_m |x conv psi_m|^2) with the real-space
    solid-harmonic Gaussian (Hecke-Bochner), convolved by direct summation over offsets."""
    n, sigma = 16, 1.5
    x = np.random.default_rng(2).standard_normal((n, n, n))
    direct = np.sqrt(
        sum(
            np.abs(direct_convolution(x, real_space_kernel(n, sigma * 2**j, ell, m))) ** 2
            for m in range(-ell, ell + 1)
        )
    )
    psi = solid_harmonic_filters(n, 2, 2, sigma)[ell][j]
    u = torch.fft.ifftn(torch.fft.fftn(torch.from_numpy(x).to(torch.complex64))[None] * psi, dim=(-3, -2, -1))
    ours = u.abs().square().sum(0).sqrt().numpy()
    np.testing.assert_allclose(ours, direct, rtol=1e-3, atol=1e-3 * direct.max())
    coefficients = solid_harmonic_scattering(
        torch.from_numpy(x)[None].float(), J=2, L=2, sigma=sigma, powers=(1.0,)
    )
    assert coefficients.shape == (1, scattering_size(2, 2, [1.0])) == (1, 1 + 6 + 3)
    assert coefficients[0, 1 + 3 * j + ell].item() == pytest.approx(direct.mean(), rel=1e-3)


def test_scattering_is_invariant_under_cube_rotations_and_flips():
    """The sum over m makes |.| rotation invariant: axis permutations and flips leave S unchanged."""
    x = torch.randn(2, 16, 16, 16, generator=torch.Generator().manual_seed(3))
    s = solid_harmonic_scattering(x, J=2, L=2)
    for moved in (x.permute(0, 2, 3, 1), torch.flip(x, dims=(1,)), x.transpose(1, 3).flip(2)):
        torch.testing.assert_close(
            solid_harmonic_scattering(moved.contiguous(), J=2, L=2), s, rtol=2e-4, atol=1e-6
        )
    assert not torch.allclose(solid_harmonic_scattering(2 * x, J=2, L=2), s)


def test_scattering_rejects_wavelets_wider_than_the_cube():
    with pytest.raises(ValueError, match="does not fit"):
        solid_harmonic_scattering(torch.randn(1, 8, 8, 8), J=3, sigma=1.0)


# -- standardisation from training crops -------------------------------------------------------------


def test_summaries_are_standardised_with_training_statistics():
    summaries = SummaryStatistics(
        ["power_spectrum", "correlation_function", "scattering"], pk_bins=4, xi_bins=4, scattering_J=2
    )
    assert summaries.size == 4 + 4 + scattering_size(2, 2, [0.5, 1.0, 2.0])
    g = torch.Generator().manual_seed(4)
    crops = [torch.randn(8, 1, 16, 16, 16, generator=g) * (1 + i) for i in range(4)]
    summaries.fit(crops)
    out = torch.cat([summaries(c) for c in crops])
    torch.testing.assert_close(out.mean(0), torch.zeros(summaries.size), atol=1e-4, rtol=0)
    torch.testing.assert_close(out.std(0, unbiased=False), torch.ones(summaries.size), atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="xi_range"):
        SummaryStatistics(["correlation_function"], xi_range=(0.1, 0.8))
    with pytest.raises(ValueError, match="fewer xi_bins"):
        SummaryStatistics(["correlation_function"], xi_bins=40).check(16, 1)
    with pytest.raises(ValueError, match="unknown summaries"):
        SummaryStatistics(["bispectrum"])


def test_slice_means_are_the_counts_per_redshift_slice_of_a_light_cone():
    g = torch.Generator().manual_seed(3)
    counts = torch.poisson(torch.full((2, 1, 8, 8, 16), 0.5), generator=g)  # (RA, DEC, z) histograms
    summaries = SummaryStatistics(["slice_means"], slice_bins=4)
    expected = counts.sum((1, 2, 3)).reshape(2, 4, 4).sum(-1) / (8 * 8 * 4)  # haloes per cell in each slice
    assert torch.allclose(summaries.raw(counts), expected)
    # a slice of twice the haloes doubles its feature and no other
    more = counts.clone()
    more[..., 4:8] *= 2
    change = summaries.raw(more) - summaries.raw(counts)
    assert torch.allclose(change[:, 1], expected[:, 1]) and change[:, [0, 2, 3]].abs().max() == 0
    with pytest.raises(ValueError, match="slice_bins=5 must divide the crop side 16"):
        SummaryStatistics(["slice_means"], slice_bins=5).check(16, 1)
