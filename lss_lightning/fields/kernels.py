"""Fourier kernels on the rfft grid of an N^3 periodic box, each written once (as JaxPM's ``kernels.py``) and
used by linear theory (``fields.velocity``), LPT (``mocks.lpt``) and the particle mesh (``mocks.pm``).

Conventions: k in h/Mpc from ``fields.mesh.wavenumber`` / ``wavevectors`` (numpy/torch sign, forward
e^{-ikx}); the gradient is multiplication by i k (or by i times a finite-difference response).
"""

from __future__ import annotations

import torch

from lss_lightning.fields.mesh import wavenumber


def inverse_laplacian(n: int, box_size: float, device=None) -> torch.Tensor:
    """-1 / k^2 on the rfft grid (phi_k = this * delta_k solves laplacian phi = delta), 0 at k = 0 (a
    zero-mean potential)."""
    k2 = wavenumber(n, box_size, device=device).square()
    kernel = -1.0 / torch.where(k2 > 0, k2, torch.ones_like(k2))
    kernel[0, 0, 0] = 0.0
    return kernel


def finite_difference_gradient(k: torch.Tensor, dx: float) -> torch.Tensor:
    """The 4-point finite-difference derivative's response (8 sin(k dx) - sin(2 k dx)) / (6 dx) (FastPM's
    default; i times it is the gradient), which falls to zero at the mesh Nyquist; k in h/Mpc, dx Mpc/h."""
    return (8.0 * torch.sin(k * dx) - torch.sin(2.0 * k * dx)) / (6.0 * dx)


def gaussian_window(k2: torch.Tensor, radius: float) -> torch.Tensor:
    """exp(-k^2 R^2 / 2): a Gaussian smoothing of radius R (Mpc/h); k2 in (h/Mpc)^2."""
    return torch.exp(-0.5 * k2 * radius**2)


def legendre(ell: int, mu):
    """Legendre polynomial L_ell(mu) by Bonnet's recursion, for a numpy array or a torch tensor."""
    previous, current = mu * 0 + 1, mu
    if ell == 0:
        return previous
    for j in range(1, ell):
        previous, current = current, ((2 * j + 1) * mu * current - j * previous) / (j + 1)
    return current
