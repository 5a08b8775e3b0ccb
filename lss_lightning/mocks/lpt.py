"""Lagrangian perturbation theory: Zel'dovich (1LPT) and 2LPT particle positions and velocities.

Given the linear density delta_L(q) at the output redshift (rfft, see ``ics``):
    x = q + Psi1 + Psi2,   Psi1 = -grad phi1,  laplacian phi1 = delta_L   (so div Psi1 = -delta_L),
    Psi2 = (D2 / D1^2) grad phi2,  laplacian phi2 = sum_{i<j} [phi1_ii phi1_jj - phi1_ij^2],
    D2 / D1^2 = -3/7 Omega_m(z)^(-1/143)  (Bouchet et al. 1995),
    v = a H (f1 Psi1 + f2 Psi2),  f1 = f(z),  f2 = 2 Omega_m(z)^(6/11),
with q on the lattice i * L / N_p, positions in Mpc/h and peculiar velocities in km/s.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lss_lightning.cosmology import Cosmology
from lss_lightning.fields.kernels import inverse_laplacian
from lss_lightning.fields.mesh import lattice_positions, wavevectors


@dataclass
class Particles:
    """Positions (P, 3) in Mpc/h wrapped into [0, L) and peculiar velocities (P, 3) in km/s."""

    positions: torch.Tensor
    velocities: torch.Tensor


def _irfft(field_k: torch.Tensor, n: int) -> torch.Tensor:
    return torch.fft.irfftn(field_k, s=(n, n, n), dim=(-3, -2, -1))


def zeldovich_displacement(delta_k: torch.Tensor, box_size: float) -> torch.Tensor:
    """Psi1 = -grad phi1 (3, N, N, N) in Mpc/h for a linear density delta_k (rfft, N x N x N//2+1)."""
    n = delta_k.shape[0]
    phi_k = inverse_laplacian(n, box_size, delta_k.device) * delta_k
    return torch.stack(
        [
            _irfft(-1j * ki * phi_k, n)
            for ki in wavevectors(n, box_size, device=delta_k.device, zero_nyquist=True)
        ]
    )


def second_order_potential_gradient(delta_k: torch.Tensor, box_size: float) -> torch.Tensor:
    """grad phi2 (3, N, N, N) in Mpc/h, with laplacian phi2 = sum_{i<j} phi1_ii phi1_jj - phi1_ij^2."""
    n = delta_k.shape[0]
    k = wavevectors(n, box_size, device=delta_k.device, zero_nyquist=True)
    phi_k = inverse_laplacian(n, box_size, delta_k.device) * delta_k

    def hessian(i: int, j: int) -> torch.Tensor:  # phi1_ij = -k_i k_j phi1(k)
        return _irfft(-k[i] * k[j] * phi_k, n)

    d = [hessian(i, i) for i in range(3)]
    source = d[0] * d[1] + d[0] * d[2] + d[1] * d[2]
    for i, j in ((0, 1), (0, 2), (1, 2)):
        source -= hessian(i, j).square()
    phi2_k = inverse_laplacian(n, box_size, delta_k.device) * torch.fft.rfftn(source)
    return torch.stack([_irfft(1j * ki * phi2_k, n) for ki in k])


def lpt_particles(
    delta_k: torch.Tensor, box_size: float, cosmology: Cosmology, redshift: float, order: int = 2
) -> Particles:
    """Particles displaced from the lattice by 1LPT (order=1) or 2LPT (order=2); see the module docstring."""
    if order not in (1, 2):
        raise ValueError(f"LPT order must be 1 or 2, got {order}")
    n = delta_k.shape[0]
    a_h = cosmology.a_h(redshift)
    f1 = float(cosmology.growth_rate(redshift))
    displacement = zeldovich_displacement(delta_k, box_size)
    velocity = (a_h * f1) * displacement
    if order == 2:
        om = float(cosmology.omega_m_z(redshift))
        d2_over_d1sq = -3.0 / 7.0 * om ** (-1.0 / 143.0)
        f2 = 2.0 * om ** (6.0 / 11.0)
        psi2 = d2_over_d1sq * second_order_potential_gradient(delta_k, box_size)
        displacement += psi2
        velocity += (a_h * f2) * psi2
    q = lattice_positions(n, box_size, device=delta_k.device)
    positions = torch.remainder(q + displacement.reshape(3, -1).T, box_size)
    return Particles(positions=positions, velocities=velocity.reshape(3, -1).T.contiguous())
