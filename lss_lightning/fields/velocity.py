"""Spectral vector calculus and linear-theory velocities on periodic grids.

Gradients are multiplication by i k in torch's Fourier convention (forward e^{-ikx}); the Nyquist
frequency of each differentiated axis is dropped (see ``wavevectors(zero_nyquist=True)``).
Velocities are peculiar, in km/s; lengths in Mpc/h; a H(z) in (km/s)/(Mpc/h), so divergence
and curl of a velocity come out in (km/s)/(Mpc/h).

Linear theory: v(k) = i a H f delta(k) k / k^2, so theta = div v = -a H f delta and matter flows
into overdensities.
"""

from __future__ import annotations

import torch

from lss_lightning.fields.kernels import gaussian_window, inverse_laplacian
from lss_lightning.fields.mesh import wavenumber, wavevectors


def _rfft(field: torch.Tensor) -> torch.Tensor:
    return torch.fft.rfftn(field.float(), dim=(-3, -2, -1))


def _irfft(field_k: torch.Tensor, n: int) -> torch.Tensor:
    return torch.fft.irfftn(field_k, s=(n, n, n), dim=(-3, -2, -1))


def _check_vector(v: torch.Tensor) -> int:
    if v.ndim != 4 or v.shape[0] != 3:
        raise ValueError(f"a vector field must be shaped (3, N, N, N), got {tuple(v.shape)}")
    return v.shape[-1]


def _scalar(field: torch.Tensor) -> torch.Tensor:
    if field.ndim == 4 and field.shape[0] == 1:
        return field[0]
    if field.ndim != 3:
        raise ValueError(f"a scalar field must be shaped (N, N, N) or (1, N, N, N), got {tuple(field.shape)}")
    return field


def gradient(field: torch.Tensor, box_size: float) -> torch.Tensor:
    """Gradient (3, N, N, N) of a scalar field, in field units per Mpc/h."""
    field = _scalar(field)
    n = field.shape[-1]
    f_k = _rfft(field)
    k = wavevectors(n, box_size, device=field.device, zero_nyquist=True)
    return torch.stack([_irfft(1j * ki * f_k, n) for ki in k])


def divergence(v: torch.Tensor, box_size: float) -> torch.Tensor:
    """div v, shaped (1, N, N, N), in (km/s)/(Mpc/h) for v in km/s."""
    n = _check_vector(v)
    v_k = _rfft(v)
    k = wavevectors(n, box_size, device=v.device, zero_nyquist=True)
    return _irfft(1j * (k[0] * v_k[0] + k[1] * v_k[1] + k[2] * v_k[2]), n).unsqueeze(0)


def curl(v: torch.Tensor, box_size: float) -> torch.Tensor:
    """curl v (vorticity), shaped (3, N, N, N), a pseudovector in (km/s)/(Mpc/h)."""
    n = _check_vector(v)
    v_k = _rfft(v)
    kx, ky, kz = wavevectors(n, box_size, device=v.device, zero_nyquist=True)
    w_k = torch.stack([ky * v_k[2] - kz * v_k[1], kz * v_k[0] - kx * v_k[2], kx * v_k[1] - ky * v_k[0]])
    return _irfft(1j * w_k, n)


def gaussian_smooth(field: torch.Tensor, box_size: float, radius: float) -> torch.Tensor:
    """Convolve a (C, N, N, N) or (N, N, N) field with a Gaussian of rms ``radius`` (Mpc/h; 0: no-op).

    The kernel is sampled in real space at the periodic (nearest-image) cell separations and normalised
    to sum 1, so every weight is positive: a ratio of two smoothed sums stays a weighted mean (the
    analytic exp(-k^2 R^2 / 2), cut at the Nyquist frequency, has negative real-space lobes of 4e-4 of its
    peak at R = dx, enough to turn empty cells near a massive halo into wild ratios).
    """
    if radius <= 0:
        return field
    n = field.shape[-1]
    offsets = torch.arange(n, device=field.device, dtype=torch.float64)
    separation = torch.minimum(offsets, n - offsets) * (box_size / n)
    weights = torch.exp(-0.5 * (separation / radius) ** 2)
    weights = weights / weights.sum()
    full, half = torch.fft.fft(weights).real.float(), torch.fft.rfft(weights).real.float()
    kernel = full[:, None, None] * full[None, :, None] * half[None, None, :]
    return _irfft(_rfft(field) * kernel, n)


def linear_velocity(
    delta: torch.Tensor,
    box_size: float,
    a_h_f: float,
    *,
    smoothing: float = 0.0,
    bias: float = 1.0,
) -> torch.Tensor:
    """Linear-theory peculiar velocity (3, N, N, N) in km/s from a density contrast.

    v(k) = i (a H f / b) delta(k) k / k^2 * exp(-k^2 R^2 / 2), with a_h_f = a H(z) f(z) in
    (km/s)/(Mpc/h), b a linear bias of the tracer and R = ``smoothing`` in Mpc/h; the k = 0 mode is 0.
    """
    if bias <= 0:
        raise ValueError(f"linear bias must be positive, got {bias}")
    delta = _scalar(delta)
    n = delta.shape[-1]
    d_k = _rfft(delta)
    k_vec = wavevectors(n, box_size, device=delta.device, zero_nyquist=True)
    kernel = (
        -(a_h_f / bias) * d_k * inverse_laplacian(n, box_size, delta.device)
    )  # delta k / k^2 (times a H f / b)
    if smoothing > 0:
        kernel = kernel * gaussian_window(wavenumber(n, box_size, device=delta.device).square(), smoothing)
    return torch.stack([_irfft(1j * ki * kernel, n) for ki in k_vec])


def redshift_space_positions(
    positions: torch.Tensor, velocities: torch.Tensor, a_h: float, box_size: float, los_axis: int = 2
) -> torch.Tensor:
    """Shift positions (P, 3) in Mpc/h along ``los_axis`` by v_los / (a H), wrapped into [0, L).

    velocities (P, 3) are peculiar, in km/s; a_h = a H(z) in (km/s)/(Mpc/h) (plane-parallel approximation).
    """
    if los_axis not in (0, 1, 2):
        raise ValueError(f"los_axis must be 0, 1 or 2 (x, y, z), got {los_axis}")
    shifted = positions.clone()
    shifted[:, los_axis] = torch.remainder(positions[:, los_axis] + velocities[:, los_axis] / a_h, box_size)
    return shifted
