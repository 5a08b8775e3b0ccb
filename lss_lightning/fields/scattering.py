"""3D solid-harmonic wavelet scattering transform of cubes (Eickenberg et al. 2017; kymatio's
``HarmonicScattering3D`` design), batched in torch, CPU or GPU.

Written here because kymatio 0.3.0 imports ``scipy.special.sph_harm``, which scipy 1.17 removed.

Wavelets, defined in Fourier space on the cube's FFT grid (k in radians per cell, numpy convention):

    psi_{j,l,m}(k) = (sigma_j |k|)^l Y_l^m(k / |k|) exp(-sigma_j^2 |k|^2 / 2),   sigma_j = sigma 2^j cells,

i.e. (Hecke-Bochner) the real-space solid harmonics times a Gaussian,
psi_{j,l,m}(r) = i^l (2 pi)^{-3/2} sigma_j^{-l-3} |r|^l Y_l^m(r / |r|) exp(-|r|^2 / (2 sigma_j^2)),
with Y_l^m scipy's orthonormal complex spherical harmonics. Convolutions are periodic (FFT), so the cube
is treated as a periodic box. Rotation-covariant moduli, summed over m (rotation invariant):

    U1[j, l] = sqrt(sum_m |x * psi_{j,l,m}|^2),    U2[j1, j2, l] = sqrt(sum_m |U1[j1, l] * psi_{j2,l,m}|^2)  (j2 > j1),

and the coefficients are spatial means of powers q: S0[q] = <|x|^q>, S1[j, l, q] = <U1^q>,
S2[j1, j2, l, q] = <U2^q>, in that order: 1 + J (L + 1) + J (J - 1) / 2 (L + 1) numbers per power.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
from scipy.special import sph_harm_y


def scattering_size(J: int, L: int, powers: Sequence[float]) -> int:
    """Number of coefficients per cube: (1 + J (L + 1) + J (J - 1) / 2 (L + 1)) per integral power."""
    return (1 + J * (L + 1) + J * (J - 1) // 2 * (L + 1)) * len(powers)


def _check(n: int, J: int, L: int, sigma: float) -> None:
    if J < 1 or L < 0 or sigma <= 0:
        raise ValueError(f"scattering needs J >= 1, L >= 0, sigma > 0; got J={J}, L={L}, sigma={sigma}")
    widest = sigma * 2 ** (J - 1)
    if 2 * widest > n / 2:
        raise ValueError(
            f"the widest wavelet (sigma 2^(J-1) = {widest:g} cells) does not fit in a {n}^3 cube: "
            f"use J <= {max(1, int(np.log2(n / (4 * sigma))) + 1)} or a smaller sigma"
        )


@lru_cache(maxsize=8)
def solid_harmonic_filters(
    n: int, J: int, L: int, sigma: float, device: str = "cpu"
) -> tuple[torch.Tensor, ...]:
    """Fourier-space wavelets, one complex64 tensor (J, 2l + 1, n, n, n) per l = 0..L (m = -l..l)."""
    _check(n, J, L, sigma)
    k1 = 2 * np.pi * np.fft.fftfreq(n)
    kx, ky, kz = np.meshgrid(k1, k1, k1, indexing="ij")
    k = np.sqrt(kx**2 + ky**2 + kz**2)
    polar = np.arccos(np.clip(np.divide(kz, k, out=np.ones_like(k), where=k > 0), -1.0, 1.0))
    azimuth = np.mod(np.arctan2(ky, kx), 2 * np.pi)
    filters = []
    for ell in range(L + 1):
        harmonics = np.stack([sph_harm_y(ell, m, polar, azimuth) for m in range(-ell, ell + 1)])
        scales = sigma * 2.0 ** np.arange(J)
        radial = np.stack([(s * k) ** ell * np.exp(-0.5 * (s * k) ** 2) for s in scales])
        filters.append(torch.from_numpy((radial[:, None] * harmonics[None]).astype(np.complex64)).to(device))
    return tuple(filters)


def _modulus(fx: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
    """sqrt(sum_m |ifftn(fx psi_m)|^2): fx (B, n, n, n) complex, psi (M, n, n, n) -> (B, n, n, n)."""
    u = torch.fft.ifftn(fx[:, None] * psi[None], dim=(-3, -2, -1))
    return (u.real.square() + u.imag.square()).sum(1).sqrt()


def solid_harmonic_scattering(
    x: torch.Tensor, J: int = 3, L: int = 2, sigma: float = 1.0, powers: Sequence[float] = (0.5, 1.0, 2.0)
) -> torch.Tensor:
    """(B, n, n, n) real cubes -> (B, scattering_size(J, L, powers)) coefficients; see the module docstring."""
    if x.ndim != 4 or not x.shape[-1] == x.shape[-2] == x.shape[-3]:
        raise ValueError(f"expected cubes shaped (B, n, n, n), got {tuple(x.shape)}")
    n = x.shape[-1]
    filters = solid_harmonic_filters(n, int(J), int(L), float(sigma), str(x.device))
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.float()
        fx = torch.fft.fftn(x, dim=(-3, -2, -1))
        dims = (-3, -2, -1)
        first = {(j, ell): _modulus(fx, filters[ell][j]) for ell in range(L + 1) for j in range(J)}
        second = {
            (j1, j2, ell): _modulus(torch.fft.fftn(first[j1, ell], dim=dims), filters[ell][j2])
            for ell in range(L + 1)
            for j1 in range(J)
            for j2 in range(j1 + 1, J)
        }
        fields = [x.abs(), *(first[j, ell] for j in range(J) for ell in range(L + 1))]
        fields += [second[j1, j2, ell] for j1 in range(J) for j2 in range(j1 + 1, J) for ell in range(L + 1)]
        return torch.cat([torch.stack([f.pow(q).mean(dims) for q in powers], 1) for f in fields], 1)
