"""Periodic meshes: wavevectors, cloud-in-cell paint/readout and mass-assignment windows.

Conventions (see README, "Conventions"):
- fields are float32 tensors shaped (C, N, N, N) (or (N, N, N) for a bare scalar), axes x, y, z;
- grid point i sits at x = i * dx, dx = L / N; a particle at x = 0.25 dx gives 0.75 to point 0
  and 0.25 to point 1 (as in Pylians and nbodykit);
- Fourier transforms are torch's (forward e^{-ikx}) over the last three axes, rfft layout
  (the last axis keeps N//2 + 1 non-negative frequencies);
- lengths in Mpc/h, wavenumbers in h/Mpc.
"""

from __future__ import annotations

import math

import torch

MAS_ORDER = {"ngp": 1, "cic": 2, "tsc": 3, "pcs": 4}


def fundamental_mode(box_size: float) -> float:
    """k_F = 2 pi / L in h/Mpc."""
    return 2.0 * math.pi / box_size


def nyquist_mode(n: int, box_size: float) -> float:
    """k_Nyq = pi N / L in h/Mpc."""
    return math.pi * n / box_size


def mode_indices(n: int, device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Integer wavevector components (m_x, m_y, m_z) of an rfft grid, broadcastable to (N, N, N//2+1)."""
    full = torch.fft.fftfreq(n, 1.0 / n, device=device).round().long()
    half = torch.fft.rfftfreq(n, 1.0 / n, device=device).round().long()
    return full.view(n, 1, 1), full.view(1, n, 1), half.view(1, 1, -1)


def wavevectors(
    n: int, box_size: float, *, device=None, dtype=torch.float32, zero_nyquist: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Wavevector components (k_x, k_y, k_z) in h/Mpc of an rfft grid, broadcastable to (N, N, N//2+1).

    ``zero_nyquist=True`` sets the Nyquist frequency of each axis to 0: use it for odd (first-derivative)
    operators, whose Nyquist term has no real-valued counterpart and would break the flip symmetry.
    """
    kf = fundamental_mode(box_size)
    comps = []
    for m in mode_indices(n, device):
        k = m.to(dtype) * kf
        if zero_nyquist and n % 2 == 0:
            k = torch.where(m.abs() == n // 2, torch.zeros_like(k), k)
        comps.append(k)
    return tuple(comps)


def wavenumber(n: int, box_size: float, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """|k| in h/Mpc on an rfft grid, shape (N, N, N//2+1)."""
    kx, ky, kz = wavevectors(n, box_size, device=device, dtype=dtype)
    return (kx.square() + ky.square() + kz.square()).sqrt()


def rfft_mode_weights(n: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """How many full-FFT modes each rfft cell stands for (2 except the k_z = 0 and Nyquist planes).

    Summed over the grid this gives N^3, so binned counts are counts of Fourier modes.
    """
    w = torch.full((n // 2 + 1,), 2.0, device=device, dtype=dtype)
    w[0] = 1.0
    if n % 2 == 0:
        w[-1] = 1.0
    return w.view(1, 1, -1)


def mas_window(n: int, mas: str = "cic", *, device=None, dtype=torch.float32) -> torch.Tensor:
    """Fourier window of a mass-assignment scheme on an rfft grid, shape (N, N, N//2+1).

    W(k) = prod_i sinc(pi k_i / (2 k_Nyq))^p with p = 1, 2, 3, 4 for NGP, CIC, TSC, PCS;
    pi k_i / (2 k_Nyq) = pi m_i / N for integer mode m_i, so W does not depend on the box size.
    """
    try:
        p = MAS_ORDER[mas.lower()]
    except KeyError:
        raise ValueError(f"unknown mass-assignment scheme {mas!r}; use one of {sorted(MAS_ORDER)}") from None
    w = torch.ones((), device=device, dtype=dtype)
    for m in mode_indices(n, device):
        w = w * torch.sinc(m.to(dtype) / n).pow(p)  # torch.sinc(x) = sin(pi x) / (pi x)
    return w


def deconvolve_window(field_k: torch.Tensor, mas: str | None) -> torch.Tensor:
    """Divide an rfft field (..., N, N, N//2+1) by its mass-assignment window (no-op for mas=None)."""
    if mas is None or mas.lower() == "none":
        return field_k
    n = field_k.shape[-3]
    return field_k / mas_window(n, mas, device=field_k.device, dtype=field_k.real.dtype)


def _cic_stencil(positions: torch.Tensor, n: int, box_size: float):
    """CIC neighbours of particles, a chunk at a time: yields (start, stop, flat index, weight) 8 times
    per chunk. Chunks of ~1e5 particles keep the index and weight arrays in the CPU cache (2x faster)."""
    chunk = (1 << 22) if positions.is_cuda else (1 << 17)
    cell = box_size / n
    for start in range(0, len(positions), chunk):
        stop = min(start + chunk, len(positions))
        u = positions[start:stop].T / cell  # (3, p) in cells
        lower = torch.floor(u)
        frac = u - lower
        i0 = lower.long().remainder_(n)
        i1 = i0 + 1
        i1[i1 == n] = 0
        w0 = 1.0 - frac
        ix, iy, iz = (i0[0] * (n * n), i1[0] * (n * n)), (i0[1] * n, i1[1] * n), (i0[2], i1[2])
        wx, wy, wz = (w0[0], frac[0]), (w0[1], frac[1]), (w0[2], frac[2])
        for a in (0, 1):
            for b in (0, 1):
                ixy, wxy = ix[a] + iy[b], wx[a] * wy[b]
                for c in (0, 1):
                    yield start, stop, ixy + iz[c], wxy * wz[c]


def _check_positions(positions: torch.Tensor) -> None:
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must be shaped (P, 3), got {tuple(positions.shape)}")


def cic_paint(
    positions: torch.Tensor, n: int, box_size: float, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Cloud-in-cell assignment of particles to a periodic N^3 grid.

    positions: (P, 3) in Mpc/h (any real value; wrapped periodically).
    weights: None (unit mass), (P,) or (P, C).
    Returns the summed weights per cell: (N, N, N) for None or (P,), (C, N, N, N) for (P, C).
    Torch's index_add_ does the scatter (multi-threaded, on any device), so no custom kernel is needed.
    """
    _check_positions(positions)
    dtype = positions.dtype if positions.is_floating_point() else torch.float32
    positions = positions.to(dtype)
    vector = weights is not None and weights.ndim == 2
    channels = weights.shape[1] if vector else 1
    out = torch.zeros(channels, n**3, device=positions.device, dtype=dtype)
    source = None if weights is None else weights.to(dtype).reshape(len(positions), channels).T
    for start, stop, index, w in _cic_stencil(positions, n, box_size):
        out.index_add_(1, index, w.unsqueeze(0) if source is None else source[:, start:stop] * w)
    return out.view(channels, n, n, n) if vector else out.view(n, n, n)


def cic_readout(field: torch.Tensor, positions: torch.Tensor, box_size: float) -> torch.Tensor:
    """Interpolate a periodic grid to positions with CIC weights (the adjoint of :func:`cic_paint`).

    field: (N, N, N) or (C, N, N, N); positions (P, 3) in Mpc/h. Returns (P,) or (P, C).
    """
    _check_positions(positions)
    vector = field.ndim == 4
    grid = field if vector else field.unsqueeze(0)
    n = grid.shape[-1]
    flat = grid.reshape(grid.shape[0], -1)
    out = torch.zeros(grid.shape[0], len(positions), device=field.device, dtype=field.dtype)
    for start, stop, index, w in _cic_stencil(positions.to(field.dtype), n, box_size):
        out[:, start:stop] += flat[:, index] * w
    return out.T if vector else out[0]


def lattice_positions(n: int, box_size: float, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """Positions (N^3, 3) in Mpc/h of the grid points i * dx, in C order (x slowest)."""
    q = torch.arange(n, device=device, dtype=dtype) * (box_size / n)
    return torch.stack(torch.meshgrid(q, q, q, indexing="ij"), dim=-1).reshape(-1, 3)
