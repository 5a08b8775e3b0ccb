"""Periodic meshes: wavevectors, cloud-in-cell paint/readout (once, or reused via a CIC stencil) and
mass-assignment windows.

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
from dataclasses import dataclass
from functools import cached_property

import numpy as np
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


def _chunk_size(tensor: torch.Tensor) -> int:
    """Particles per pass: ~1e5 on a CPU keeps a chunk's indices and weights in cache (2x faster)."""
    return (1 << 22) if tensor.is_cuda else (1 << 17)


def _cic_corners(
    positions: torch.Tensor, n: int, box_size: float, index: torch.Tensor, weight: torch.Tensor
) -> None:
    """Write the CIC neighbours of particles (p, 3) Mpc/h into index (8, p), flat cells (i_x N + i_y) N + i_z,
    and weight (8, p); corner k = 4 a + 2 b + c sits at (i_x + a, i_y + b, i_z + c), wrapped."""
    u = positions.T / (box_size / n)  # (3, p) in cells
    lower = torch.floor(u)
    frac = u - lower
    i0 = lower.long().remainder_(n).to(index.dtype)
    i1 = i0 + 1
    i1[i1 == n] = 0
    w0 = 1.0 - frac
    ix, iy, iz = (i0[0] * (n * n), i1[0] * (n * n)), (i0[1] * n, i1[1] * n), (i0[2], i1[2])
    wx, wy, wz = (w0[0], frac[0]), (w0[1], frac[1]), (w0[2], frac[2])
    for a in (0, 1):
        for b in (0, 1):
            ixy, wxy = ix[a] + iy[b], wx[a] * wy[b]
            for c in (0, 1):
                torch.add(ixy, iz[c], out=index[4 * a + 2 * b + c])
                torch.mul(wxy, wz[c], out=weight[4 * a + 2 * b + c])


def _check_positions(positions: torch.Tensor) -> None:
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must be shaped (P, 3), got {tuple(positions.shape)}")


@dataclass(frozen=True, eq=False)
class CICStencil:
    """The cloud-in-cell neighbours of one set of particles on a periodic N^3 grid, for painting and reading
    out several fields at the same positions without recomputing them (build with :func:`cic_stencil`).

    index: (8, P) flat cell indices (i_x N + i_y) N + i_z of each particle's 8 corners, int32 (int64 if
    N^3 >= 2^31); weight: (8, P) their CIC weights (summing to 1), in the positions' float dtype.
    Memory: 64 bytes per particle (int32 indices, float32 weights). Paint and readout give the numbers of :func:`cic_paint`
    and :func:`cic_readout` (same corner order, same chunks).
    """

    n: int
    index: torch.Tensor
    weight: torch.Tensor

    def __len__(self) -> int:
        return self.index.shape[1]

    def paint(self, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Summed weights per cell: None (unit mass) or (P,) -> (N, N, N); (P, C) -> (C, N, N, N)."""
        if weights is not None and len(weights) != len(self):
            raise ValueError(f"weights must have one row per particle ({len(self)}), got {len(weights)}")
        vector = weights is not None and weights.ndim == 2
        channels = weights.shape[1] if vector else 1
        out = torch.zeros(channels, self.n**3, device=self.index.device, dtype=self.weight.dtype)
        self._paint_into(out, weights)
        return out.view(channels, self.n, self.n, self.n) if vector else out.view(self.n, self.n, self.n)

    def _paint_into(self, out: torch.Tensor, weights: torch.Tensor | None) -> None:
        """Scatter-add (index_add_, on any device) into out (C, N^3): a chunk at a time, corners in turn."""
        source = None if weights is None else weights.to(out.dtype).reshape(len(self), out.shape[0]).T
        step = _chunk_size(self.index)
        for start in range(0, len(self), step):
            part = slice(start, start + step)
            for index, w in zip(self.index[:, part], self.weight[:, part], strict=True):
                source_w = w.unsqueeze(0) if source is None else source[:, part] * w
                out.index_add_(1, index.long(), source_w)  # int64: 2D index_add_ is ~30x slower with int32

    def readout(self, field: torch.Tensor) -> torch.Tensor:
        """CIC interpolation of a field (N, N, N) -> (P,), or (C, N, N, N) -> (P, C): one gather of all C
        components per corner (the adjoint of :meth:`paint`)."""
        if field.shape[-3:] != (self.n,) * 3 or field.ndim not in (3, 4):
            raise ValueError(
                f"field must be shaped (N, N, N) or (C, N, N, N) with N = {self.n}, got {tuple(field.shape)}"
            )
        flat = field.reshape(*field.shape[:-3], self.n**3)
        dtype = torch.promote_types(field.dtype, self.weight.dtype)
        out = torch.zeros(*field.shape[:-3], len(self), device=field.device, dtype=dtype)
        self._read_into(out, flat)
        return out.T if field.ndim == 4 else out

    def _read_into(self, out: torch.Tensor, flat: torch.Tensor) -> None:
        """out (..., P) += sum over corners of flat (..., N^3) at index times weight, a cached chunk at a time."""
        step = _chunk_size(self.index)
        for start in range(0, len(self), step):
            part = slice(start, start + step)
            chunk = out[..., part]
            for index, w in zip(self.index[:, part], self.weight[:, part], strict=True):
                chunk += flat.index_select(-1, index) * w  # index_select: 3-5x faster than flat[..., index]


@dataclass(frozen=True, eq=False)
class CompiledCICStencil:
    """CPU particles for repeated CIC paint and readout with the compiled kernels (``fields.compiled``):
    the positions (P, 3) Mpc/h, sorted once by grid row on first use (``compiled.sort_by_row``, 16 bytes per
    float32 particle, kept for every later paint and readout); each call recomputes the 8 weights in the loop,
    which is faster than reading a stored stencil back. Same API and numbers (to float rounding) as
    :class:`CICStencil`."""

    n: int
    positions: torch.Tensor  # (P, 3), float32 or float64, contiguous, on the CPU
    box_size: float

    def __len__(self) -> int:
        return self.positions.shape[0]

    def paint(self, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Summed weights per cell: None (unit mass) or (P,) -> (N, N, N); (P, C) -> (C, N, N, N)."""
        from lss_lightning.fields import compiled

        if weights is not None and len(weights) != len(self):
            raise ValueError(f"weights must have one row per particle ({len(self)}), got {len(weights)}")
        order, pos = self._sorted
        n = self.n
        if weights is None:  # np.zeros: calloc'd pages, zeroed as the kernel first touches them
            out = torch.from_numpy(np.zeros((n, n, n), dtype=pos.dtype))
            self.paint_into(out)
            return out
        w = weights.detach().to(self.positions.dtype).reshape(len(self), -1).numpy()
        out = np.zeros((w.shape[1], n**3), dtype=pos.dtype)
        compiled.paint_weighted(pos, self._inv_cell(pos.dtype), n, np.take(w, order, axis=0), out)
        out = torch.from_numpy(out).view(-1, n, n, n)
        return out if weights.ndim == 2 else out[0]

    def paint_into(self, out: torch.Tensor) -> None:
        """Add the particles' CIC counts (unit mass) to ``out`` (N, N, N), contiguous, the positions' dtype."""
        from lss_lightning.fields import compiled

        if out.shape != (self.n,) * 3 or out.dtype != self.positions.dtype or not out.is_contiguous():
            raise ValueError(f"out must be a contiguous ({self.n},) * 3 {self.positions.dtype} tensor")
        compiled.paint_unit(self._sorted[1], self._inv_cell(), self.n, out.numpy().reshape(-1))

    def readout(self, field: torch.Tensor) -> torch.Tensor:
        """CIC interpolation of a field (N, N, N) -> (P,), or (C, N, N, N) -> (P, C), a component at a time
        (``fields.compiled``: faster than one pass over a channels-last field on sorted particles)."""
        if field.shape[-3:] != (self.n,) * 3 or field.ndim not in (3, 4):
            raise ValueError(
                f"field must be shaped (N, N, N) or (C, N, N, N) with N = {self.n}, got {tuple(field.shape)}"
            )
        if field.ndim == 4:
            return torch.stack([self.readout(component) for component in field], dim=1)
        from lss_lightning.fields import compiled

        grid, positions = self._operands(field)
        out = torch.from_numpy(np.empty(len(self), dtype=grid.dtype))
        compiled.readout(
            grid.reshape(-1), positions, self._sorted[0], self._inv_cell(positions.dtype), self.n, out.numpy()
        )
        return out

    @cached_property
    def _sorted(self) -> tuple[np.ndarray, np.ndarray]:
        """(order, positions[order]): the particles sorted by the grid row of their lower corner, computed on
        first use and kept (``compiled.sort_by_row``; order is int32 below 2^31 particles)."""
        from lss_lightning.fields import compiled

        pos = self.positions.numpy()
        order = np.empty(len(pos), dtype=np.int32 if len(pos) < 2**31 else np.int64)
        sorted_positions = np.empty_like(pos)
        compiled.sort_by_row(pos, self._inv_cell(), self.n, order, sorted_positions)
        return order, sorted_positions

    def _operands(self, field: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """The field and the sorted positions as contiguous numpy arrays of one dtype (the wider of the two),
        and numba's threads set to torch's."""
        from lss_lightning.fields.compiled import use_torch_threads

        dtype = torch.promote_types(field.dtype, self.positions.dtype)
        use_torch_threads()
        positions = self._sorted[1].astype(np.float64 if dtype == torch.float64 else np.float32, copy=False)
        return field.detach().to(dtype).contiguous().numpy(), positions

    def _inv_cell(self, dtype: np.dtype | None = None):
        """N / L (1 / (Mpc/h)) as a numpy scalar of ``dtype`` (default the positions'): the kernels' maths run
        in it."""
        return (self.positions.numpy().dtype if dtype is None else dtype).type(self.n / self.box_size)


def compiled_cic_available(*tensors: torch.Tensor | None) -> bool:
    """True where the compiled CPU kernels apply: every tensor on the CPU and not needing gradients, and numba
    importable (a dependency; without it the torch path runs)."""
    if any(t is not None and (t.device.type != "cpu" or t.requires_grad) for t in tensors):
        return False
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def _compiled_stencil(positions: torch.Tensor, n: int, box_size: float) -> CompiledCICStencil:
    dtype = positions.dtype if positions.dtype in (torch.float32, torch.float64) else torch.float32
    return CompiledCICStencil(int(n), positions.detach().to(dtype).contiguous(), float(box_size))


def cic_stencil(
    positions: torch.Tensor, n: int, box_size: float, *, compiled: bool | None = None
) -> CICStencil | CompiledCICStencil:
    """The CIC neighbours of particles (P, 3) in Mpc/h (any real value; wrapped periodically) on a periodic
    N^3 grid of side ``box_size``: grid point i at x = i dx, dx = L / N.

    compiled: None picks the compiled CPU kernels where they apply (:func:`compiled_cic_available`), else the
    torch stencil (any device, autograd); False forces the torch stencil."""
    _check_positions(positions)
    if compiled is None:
        compiled = compiled_cic_available(positions)
    if compiled:
        return _compiled_stencil(positions, n, box_size)
    dtype = positions.dtype if positions.is_floating_point() else torch.float32
    positions = positions.to(dtype)
    index_dtype = torch.int32 if n**3 < 2**31 else torch.long  # int32 halves the indices' memory
    index = torch.empty(8, len(positions), device=positions.device, dtype=index_dtype)
    weight = torch.empty(8, len(positions), device=positions.device, dtype=dtype)
    step = _chunk_size(positions)
    for start in range(0, len(positions), step):
        part = slice(start, start + step)
        _cic_corners(positions[part], n, box_size, index[:, part], weight[:, part])
    return CICStencil(int(n), index, weight)


def cic_paint(
    positions: torch.Tensor,
    n: int,
    box_size: float,
    weights: torch.Tensor | None = None,
    *,
    compiled: bool | None = None,
) -> torch.Tensor:
    """Cloud-in-cell assignment of particles to a periodic N^3 grid.

    positions: (P, 3) in Mpc/h (any real value; wrapped periodically).
    weights: None (unit mass), (P,) or (P, C).
    Returns the summed weights per cell: (N, N, N) for None or (P,), (C, N, N, N) for (P, C).
    On the CPU the compiled kernel paints (``fields.compiled``; ``compiled=False`` forces torch); elsewhere
    torch's index_add_ scatters a chunk of the stencil at a time (memory bounded, any device, autograd).
    """
    _check_positions(positions)
    if compiled is None:
        compiled = compiled_cic_available(positions, weights)
    if compiled:
        return _compiled_stencil(positions, n, box_size).paint(weights)
    dtype = positions.dtype if positions.is_floating_point() else torch.float32
    vector = weights is not None and weights.ndim == 2
    channels = weights.shape[1] if vector else 1
    out = torch.zeros(channels, n**3, device=positions.device, dtype=dtype)
    step = _chunk_size(positions)
    for start in range(0, len(positions), step):
        part = slice(start, start + step)
        cic_stencil(positions[part], n, box_size, compiled=False)._paint_into(
            out, None if weights is None else weights[part]
        )
    return out.view(channels, n, n, n) if vector else out.view(n, n, n)


def cic_readout(
    field: torch.Tensor, positions: torch.Tensor, box_size: float, *, compiled: bool | None = None
) -> torch.Tensor:
    """Interpolate a periodic grid to positions with CIC weights (the adjoint of :func:`cic_paint`).

    field: (N, N, N) or (C, N, N, N); positions (P, 3) in Mpc/h. Returns (P,) or (P, C), in the field's dtype.
    On the CPU the compiled kernel reads (``compiled=False`` forces torch); elsewhere the torch stencil is
    built a chunk at a time (memory bounded). Use :func:`cic_stencil` to read repeatedly.
    """
    _check_positions(positions)
    if compiled is None:
        compiled = compiled_cic_available(field, positions)
    if compiled:
        stencil = _compiled_stencil(positions.to(field.dtype), field.shape[-1], box_size)
        return stencil.readout(field).to(field.dtype)
    vector = field.ndim == 4
    n = field.shape[-1]
    flat = field.reshape(*field.shape[:-3], n**3)
    out = torch.zeros(*field.shape[:-3], len(positions), device=field.device, dtype=field.dtype)
    positions = positions.to(field.dtype)
    step = _chunk_size(positions)
    for start in range(0, len(positions), step):
        part = slice(start, start + step)
        cic_stencil(positions[part], n, box_size, compiled=False)._read_into(out[..., part], flat)
    return out.T if vector else out


def lattice_positions(n: int, box_size: float, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """Positions (N^3, 3) in Mpc/h of the grid points i * dx, in C order (x slowest)."""
    q = torch.arange(n, device=device, dtype=dtype) * (box_size / n)
    return torch.stack(torch.meshgrid(q, q, q, indexing="ij"), dim=-1).reshape(-1, 3)
