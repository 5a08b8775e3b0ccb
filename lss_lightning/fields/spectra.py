"""Power spectra and their relatives on periodic grids.

P(k) in (Mpc/h)^3 with k in h/Mpc: for a contrast delta on N^3 cells of a box L,
P(k) = <|delta_k|^2> L^3 / N^6 with delta_k = rfftn(delta), averaged over the Fourier modes of a
spherical shell. Vector fields (C = 3) give the trace sum_i P_ii; cross spectra take the real part
of sum_i a_i b_i^* (so phase errors show up in r(k) rather than hide in |a b^*|). Shot noise is not
subtracted. Bins default to shells of width k_F centred on k_F, 2 k_F, ... up to k_Nyq; the k of a bin
is the mean |k| of its modes and ``modes`` counts the full-FFT modes (k and -k both counted).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from lss_lightning.fields.kernels import legendre
from lss_lightning.fields.mesh import (
    deconvolve_window,
    fundamental_mode,
    mode_indices,
    nyquist_mode,
    rfft_mode_weights,
    wavenumber,
    wavevectors,
)


@dataclass(frozen=True)
class Spectrum:
    """A binned spectrum: k (h/Mpc), power ((Mpc/h)^3), modes per bin."""

    k: np.ndarray
    power: np.ndarray
    modes: np.ndarray

    @property
    def cosmic_variance(self) -> np.ndarray:
        """1-sigma error of an auto spectrum of a Gaussian field: P sqrt(2 / modes)."""
        return np.abs(self.power) * np.sqrt(2.0 / np.maximum(self.modes, 1))


def default_k_edges(n: int, box_size: float, kmax: float | None = None) -> np.ndarray:
    """Shell edges (j + 1/2) k_F, so bin j is centred on (j + 1) k_F, up to kmax (default k_Nyq)."""
    kf = fundamental_mode(box_size)
    kmax = nyquist_mode(n, box_size) if kmax is None else kmax
    n_bins = max(1, int(np.floor(kmax / kf + 0.5)))
    return kf * (np.arange(n_bins + 1) + 0.5)


@lru_cache(maxsize=4)
def _shells(n: int, box_size: float, edges: tuple[float, ...] | None, device: str):
    """Binning of an rfft grid into shells, in two steps: every cell -> its integer |m|^2 (k = k_F m),
    then every |m|^2 value -> its shell. Sums over cells are one bincount over |m|^2 (no per-cell search),
    and modes, mean k and the shell of each |m|^2 come from the short |m|^2 histogram.

    edges=None means the default shells (j + 1/2) k_F. Returns (|m|^2 per cell, rfft weight per cell,
    shell of each |m|^2 value (overflow = n_bins), mean k per shell, modes per shell).
    """
    kf = fundamental_mode(box_size)
    mx, my, mz = mode_indices(n, device)
    m2 = (mx * mx + my * my + mz * mz).reshape(-1).contiguous()
    weight = rfft_mode_weights(n, device=device).expand(n, n, n // 2 + 1).reshape(-1).contiguous()
    n_values = 3 * (n // 2) ** 2 + 1
    counts = torch.bincount(m2, weights=weight, minlength=n_values).double()  # modes per |m|^2 value
    m = torch.arange(len(counts), device=device, dtype=torch.float64).sqrt()
    if edges is None:
        n_bins = len(default_k_edges(n, box_size)) - 1
        shell = torch.floor(m - 0.5).long()
    else:  # compare integer |m|^2 with (edge / k_F)^2, snapped to the integer it is within rounding of:
        # edges at multiples of k_F (Pylians' binning) computed as j * 2 pi / L land 1e-15 off j
        n_bins = len(edges) - 1
        e2 = (torch.tensor(edges, device=device, dtype=torch.float64) / kf).square()
        e2 = torch.where((e2 - e2.round()).abs() <= 1e-9 * e2.clamp(min=1.0), e2.round(), e2)
        m2_values = torch.arange(len(counts), device=device, dtype=torch.float64)
        shell = torch.bucketize(m2_values, e2, right=True) - 1
    shell = torch.where((shell < 0) | (shell >= n_bins), n_bins, shell)
    modes = torch.bincount(shell, weights=counts, minlength=n_bins + 1)[:n_bins]
    ksum = torch.bincount(shell, weights=counts * m, minlength=n_bins + 1)[:n_bins] * kf
    kmean = torch.where(modes > 0, ksum / modes.clamp(min=1), torch.nan)
    return m2, weight, shell, kmean.cpu().numpy(), modes.cpu().numpy()


def _as_channels(field: torch.Tensor) -> torch.Tensor:
    if field.ndim == 3:
        return field.unsqueeze(0)
    if field.ndim != 4 or not (field.shape[-1] == field.shape[-2] == field.shape[-3]):
        raise ValueError(f"a field must be shaped (N, N, N) or (C, N, N, N), got {tuple(field.shape)}")
    return field


def fourier(field: torch.Tensor, box_size: float, mas: str | None = None) -> torch.Tensor:
    """rfft of a (C, N, N, N) field, window-deconvolved, scaled so that |f_k|^2 is P(k) per mode."""
    field = _as_channels(field)
    n = field.shape[-1]
    fk = torch.fft.rfftn(field.float(), dim=(-3, -2, -1))
    fk = deconvolve_window(fk, mas)
    return fk * (box_size**1.5 / n**3)


def bin_power(power_k: torch.Tensor, n: int, box_size: float, k_edges: np.ndarray | None = None) -> Spectrum:
    """Average a per-mode power (N, N, N//2+1) over spherical shells."""
    edges = None if k_edges is None else tuple(np.asarray(k_edges, dtype=float).tolist())
    m2, weight, shell, kmean, modes = _shells(n, float(box_size), edges, str(power_k.device))
    per_value = torch.bincount(m2, weights=power_k.reshape(-1).float() * weight, minlength=len(shell))
    sums = torch.bincount(shell, weights=per_value.double(), minlength=len(modes) + 1)[: len(modes)]
    power = sums.double().cpu().numpy() / np.maximum(modes, 1)
    return Spectrum(k=kmean, power=np.where(modes > 0, power, np.nan), modes=modes)


def shell_modes(n: int, edges_m: np.ndarray) -> np.ndarray:
    """Full-FFT modes per shell for shells given in units of the fundamental mode (|m| = |k| / k_F)."""
    return _shells(n, 2.0 * np.pi, tuple(np.asarray(edges_m, dtype=float).tolist()), "cpu")[4]


def batch_power_spectrum(x: torch.Tensor, edges_m: np.ndarray) -> torch.Tensor:
    """Shell means of sum_c |rfftn(x_c)|^2 / n^3 for each item of a (B, C, n, n, n) batch -> (B, n_bins).

    Grid units (unit-variance white noise gives 1; multiply by dx^3 for (Mpc/h)^3); shells in units of
    the fundamental mode, k = 0 excluded. Differentiable, float32 on x's device, for spectra inside models.
    """
    n = x.shape[-1]
    edges = tuple(np.asarray(edges_m, dtype=float).tolist())
    m2, weight, shell, _, modes = _shells(n, 2.0 * np.pi, edges, str(x.device))  # box 2 pi: k_F = 1
    with torch.autocast(device_type=x.device.type, enabled=False):
        f = torch.fft.rfftn(x.float(), dim=(-3, -2, -1))
        power = (f.real.square() + f.imag.square()).sum(dim=1).reshape(len(x), -1) / n**3
        per_value = torch.zeros(len(x), len(shell), device=x.device).index_add_(1, m2, power * weight)
        sums = torch.zeros(len(x), len(modes) + 1, device=x.device).index_add_(1, shell, per_value)
        return sums[:, : len(modes)] / torch.as_tensor(modes, dtype=torch.float32, device=x.device)


def cross_power_per_mode(a_k: torch.Tensor, b_k: torch.Tensor) -> torch.Tensor:
    """Re sum_c a_c b_c^* per Fourier cell (the auto power when a_k is b_k)."""
    return (a_k.real * b_k.real + a_k.imag * b_k.imag).sum(0)


def power_spectrum(
    field: torch.Tensor,
    box_size: float,
    *,
    other: torch.Tensor | None = None,
    mas: str | None = None,
    k_edges: np.ndarray | None = None,
) -> Spectrum:
    """Auto (other=None) or cross power spectrum of (C, N, N, N) fields; see the module docstring.

    mas: the mass-assignment scheme the fields were painted with ("cic", ...) to divide out, or None.
    """
    a_k = fourier(field, box_size, mas)
    b_k = a_k if other is None else fourier(other, box_size, mas)
    if a_k.shape != b_k.shape:
        raise ValueError(f"cross spectrum of fields shaped {tuple(field.shape)} and {tuple(other.shape)}")
    return bin_power(cross_power_per_mode(a_k, b_k), a_k.shape[-3], box_size, k_edges)


@dataclass(frozen=True)
class CrossStatistics:
    """Spectra of a prediction against the truth with T(k) = sqrt(P_pred / P_true), r(k) = P_x / sqrt(P_pred P_true)."""

    k: np.ndarray
    modes: np.ndarray
    power_pred: np.ndarray
    power_true: np.ndarray
    power_cross: np.ndarray

    @property
    def transfer(self) -> np.ndarray:
        return np.sqrt(self.power_pred / self.power_true)

    @property
    def correlation(self) -> np.ndarray:
        return self.power_cross / np.sqrt(self.power_pred * self.power_true)

    @property
    def error_power_ratio(self) -> np.ndarray:
        """P_err / P_true = T^2 + 1 - 2 T r (the power of pred - true relative to the truth)."""
        t, r = self.transfer, self.correlation
        return t**2 + 1.0 - 2.0 * t * r

    def as_dict(self) -> dict[str, list[float]]:
        return {
            "k": self.k.tolist(),
            "modes": self.modes.tolist(),
            "power_pred": self.power_pred.tolist(),
            "power_true": self.power_true.tolist(),
            "power_cross": self.power_cross.tolist(),
            "transfer": self.transfer.tolist(),
            "correlation": self.correlation.tolist(),
        }


def cross_statistics(
    pred: torch.Tensor,
    true: torch.Tensor,
    box_size: float,
    *,
    mas: str | None = None,
    k_edges: np.ndarray | None = None,
) -> CrossStatistics:
    """P_pred, P_true, P_cross (one FFT per field) and hence T(k) and r(k)."""
    p_k, t_k = fourier(pred, box_size, mas), fourier(true, box_size, mas)
    n = p_k.shape[-3]
    spectra = [
        bin_power(cross_power_per_mode(a, b), n, box_size, k_edges)
        for a, b in ((p_k, p_k), (t_k, t_k), (p_k, t_k))
    ]
    return CrossStatistics(
        k=spectra[0].k,
        modes=spectra[0].modes,
        power_pred=spectra[0].power,
        power_true=spectra[1].power,
        power_cross=spectra[2].power,
    )


def multipoles(
    field: torch.Tensor,
    box_size: float,
    *,
    los_axis: int = 2,
    ells: tuple[int, ...] = (0, 2, 4),
    mas: str | None = None,
    k_edges: np.ndarray | None = None,
) -> dict[int, Spectrum]:
    """Legendre multipoles P_l(k) = (2l + 1) <P(k, mu) L_l(mu)>, mu = k_los / |k| along ``los_axis``."""
    f_k = fourier(field, box_size, mas)
    n = f_k.shape[-3]
    power_k = cross_power_per_mode(f_k, f_k)
    k_vec = wavevectors(n, box_size, device=f_k.device)
    k = wavenumber(n, box_size, device=f_k.device)
    mu = torch.where(k > 0, k_vec[los_axis] / k.clamp(min=1e-30), 0.0)
    return {ell: bin_power((2 * ell + 1) * power_k * legendre(ell, mu), n, box_size, k_edges) for ell in ells}


def correlation_function(
    field: torch.Tensor, box_size: float, *, r_edges: np.ndarray | None = None, mas: str | None = None
) -> Spectrum:
    """Two-point correlation xi(r) by FFT: xi(x) = irfftn(|delta_k|^2) / N^3, binned in |r| (Mpc/h).

    Returned as a Spectrum whose ``k`` holds the mean separation r of each bin and ``modes`` the number
    of separation vectors per bin. Default bins: r = 0 alone, then width dx centred on dx, 2 dx, ... L/2.
    """
    field = _as_channels(field)
    n = field.shape[-1]
    f_k = deconvolve_window(torch.fft.rfftn(field.float(), dim=(-3, -2, -1)), mas)
    xi = torch.fft.irfftn(cross_power_per_mode(f_k, f_k), s=(n, n, n), dim=(-3, -2, -1)) / n**3
    dx = box_size / n
    r = separations(n, field.device) * dx
    edges = dx * np.r_[0.0, np.arange(n // 2) + 0.5] if r_edges is None else np.asarray(r_edges, float)
    idx = torch.bucketize(r.reshape(-1).double(), torch.as_tensor(edges, device=field.device), right=True) - 1
    valid = (idx >= 0) & (idx < len(edges) - 1)
    idx, rv, xv = idx[valid], r.reshape(-1)[valid].double(), xi.reshape(-1)[valid].double()
    counts = torch.bincount(idx, minlength=len(edges) - 1).double()
    rsum = torch.bincount(idx, weights=rv, minlength=len(edges) - 1)
    xsum = torch.bincount(idx, weights=xv, minlength=len(edges) - 1)
    c = counts.cpu().numpy()
    return Spectrum(
        k=np.where(c > 0, rsum.cpu().numpy() / np.maximum(c, 1), np.nan),
        power=np.where(c > 0, xsum.cpu().numpy() / np.maximum(c, 1), np.nan),
        modes=c,
    )


def separations(n: int, device=None) -> torch.Tensor:
    """|r| in cells of the minimum-image separation vector held by each cell of an n^3 correlation grid."""
    sep = torch.fft.fftfreq(n, 1.0 / n, device=device, dtype=torch.float64)
    return (sep.view(n, 1, 1).square() + sep.view(1, n, 1).square() + sep.view(1, 1, n).square()).sqrt()


@lru_cache(maxsize=8)
def _separation_bins(n: int, edges: tuple[float, ...], device: str) -> tuple[torch.Tensor, np.ndarray]:
    """Bin of each cell of an n^3 correlation grid for edges in cells (overflow = n_bins), and counts."""
    r = separations(n, device).reshape(-1)
    n_bins = len(edges) - 1
    idx = torch.bucketize(r, torch.tensor(edges, device=device, dtype=torch.float64), right=True) - 1
    idx = torch.where((idx < 0) | (idx >= n_bins), n_bins, idx)
    return idx, torch.bincount(idx, minlength=n_bins + 1)[:n_bins].cpu().numpy()


def separation_counts(n: int, edges_cells: np.ndarray) -> np.ndarray:
    """Separation vectors per bin of |r| (edges in cells, left-closed) on an n^3 periodic grid."""
    return _separation_bins(n, tuple(np.asarray(edges_cells, dtype=float).tolist()), "cpu")[1]


def batch_correlation_function(x: torch.Tensor, edges_cells: np.ndarray) -> torch.Tensor:
    """xi(r) of each item of a (B, C, n, n, n) batch, each cube treated as periodic -> (B, n_bins).

    xi(r) = sum_c <x_c(s) x_c(s + r)>_s after subtracting each cube's mean per channel (the estimator of
    ``correlation_function`` with the cube's own mean as the reference), averaged over the separation
    vectors r (minimum image, in cells) with edges[j] <= |r| < edges[j + 1]. Differentiable, float32.
    """
    if x.ndim != 5 or not x.shape[-1] == x.shape[-2] == x.shape[-3]:
        raise ValueError(f"expected cubic crops shaped (B, C, n, n, n), got {tuple(x.shape)}")
    n = x.shape[-1]
    idx, counts = _separation_bins(n, tuple(np.asarray(edges_cells, dtype=float).tolist()), str(x.device))
    if (counts == 0).any():
        raise ValueError(
            f"xi(r) bins {np.flatnonzero(counts == 0).tolist()} hold no separation on a {n}^3 grid"
        )
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.float()
        x = x - x.mean(dim=(-3, -2, -1), keepdim=True)
        f = torch.fft.rfftn(x, dim=(-3, -2, -1))
        power = (f.real.square() + f.imag.square()).sum(1)
        xi = torch.fft.irfftn(power, s=(n, n, n), dim=(-3, -2, -1)).reshape(len(x), -1) / n**3
        sums = torch.zeros(len(x), len(counts) + 1, device=x.device).index_add_(1, idx, xi)
        return sums[:, : len(counts)] / torch.as_tensor(counts, dtype=torch.float32, device=x.device)
