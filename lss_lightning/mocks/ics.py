"""Gaussian initial conditions whose large-scale modes do not depend on the grid size.

Each Fourier mode m = (m_x, m_y, m_z) (integers, k = k_F m) draws its complex white noise from a
counter-based hash of (seed, m) rather than from a sequential generator, so a 64^3 and a 256^3
realisation with the same seed share every mode they both resolve. numpy's Generator is sequential
and cannot do this, hence the small hand-written SplitMix64 hash below. Nyquist modes (|m_i| = N/2)
and the k = 0 mode are set to zero; Hermitian symmetry of the k_z = 0 plane is imposed by drawing
the noise of -m as the conjugate of that of m.

Normalisation (torch/numpy FFT convention): delta_k = N^3 sqrt(P(k) / L^3) g with <|g|^2> = 1, so
the estimator |delta_k|^2 L^3 / N^6 averages to P(k).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from lss_lightning.fields.mesh import mode_indices, wavenumber

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    x = x + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * _MIX1
    x = (x ^ (x >> np.uint64(27))) * _MIX2
    return x ^ (x >> np.uint64(31))


def _mode_key(seed: int, mx: np.ndarray, my: np.ndarray, mz: np.ndarray, stream: int) -> np.ndarray:
    offset = np.int64(1 << 20)  # keeps negative integers distinct after the cast to uint64
    with np.errstate(over="ignore"):
        h = _splitmix64(np.full(mx.shape, np.uint64(seed & 0xFFFFFFFFFFFFFFFF) ^ np.uint64(stream)))
        for m in (mx, my, mz):
            h = _splitmix64(h ^ (m.astype(np.int64) + offset).astype(np.uint64))
    return h


def _uniform(h: np.ndarray) -> np.ndarray:
    """uint64 -> float64 uniform in (0, 1] from the top 53 bits."""
    return ((h >> np.uint64(11)).astype(np.float64) + 1.0) * (1.0 / 9007199254740992.0)


def mode_noise(seed: int, n: int, *, fixed_amplitude: bool = False) -> np.ndarray:
    """Complex white noise (N, N, N//2+1) on the rfft grid, <|g|^2> = 1, keyed on (seed, m)."""
    mx, my, mz = (m.numpy() for m in mode_indices(n))
    mx, my, mz = np.broadcast_arrays(mx, my, mz)
    # canonical representative of the pair (m, -m): m_z > 0, or m_z = 0 and (m_y > 0 or (m_y = 0, m_x > 0))
    flip = (mz == 0) & ((my < 0) | ((my == 0) & (mx < 0)))
    cx, cy, cz = np.where(flip, -mx, mx), np.where(flip, -my, my), mz
    u1 = _uniform(_mode_key(seed, cx, cy, cz, 0))
    u2 = _uniform(_mode_key(seed, cx, cy, cz, 1))
    radius = np.ones_like(u1) if fixed_amplitude else np.sqrt(-np.log(u1))  # |g| Rayleigh, <|g|^2> = 1
    phase = 2.0 * np.pi * u2
    noise = radius * np.exp(1j * phase)
    noise = np.where(flip, np.conj(noise), noise)
    nyquist = (np.abs(mx) == n // 2) | (np.abs(my) == n // 2) | (mz == n // 2) if n % 2 == 0 else False
    noise = np.where(nyquist | ((mx == 0) & (my == 0) & (mz == 0)), 0.0, noise)
    return noise.astype(np.complex64)


def gaussian_field_k(
    power: Callable[[np.ndarray], np.ndarray],
    n: int,
    box_size: float,
    seed: int,
    *,
    fixed_amplitude: bool = False,
    paired: bool = False,
    device=None,
) -> torch.Tensor:
    """rfft (N, N, N//2+1) of a Gaussian random field with power spectrum ``power(k)`` ((Mpc/h)^3, k in h/Mpc).

    fixed_amplitude: |delta_k| set to its rms (Angulo & Pontzen 2016); paired: phases shifted by pi.
    """
    noise = torch.from_numpy(mode_noise(seed, n, fixed_amplitude=fixed_amplitude)).to(device)
    k = wavenumber(n, box_size, dtype=torch.float64)
    amplitude = np.zeros(k.shape)
    positive = k.numpy() > 0
    amplitude[positive] = np.sqrt(power(k.numpy()[positive]) / box_size**3) * n**3
    delta_k = noise * torch.from_numpy(amplitude).float().to(device)
    return -delta_k if paired else delta_k


def gaussian_field(power, n: int, box_size: float, seed: int, **kwargs) -> torch.Tensor:
    """Real-space Gaussian field (N, N, N), see :func:`gaussian_field_k`."""
    return torch.fft.irfftn(gaussian_field_k(power, n, box_size, seed, **kwargs), s=(n, n, n))
