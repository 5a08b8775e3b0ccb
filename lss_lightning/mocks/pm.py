"""Particle-mesh gravity: kick-drift-kick with FastPM's growth-exact step factors (Feng et al. 2016).

State: comoving positions x in Mpc/h and momenta p = a^3 E(a) dx/da in Mpc/h, so the peculiar
velocity is v = 100 p / a km/s (H0 = 100 h km/s/Mpc). Equations of motion in the scale factor a:
    dx/da = p / (a^3 E),    dp/da = (3/2) Omega_m F(x) / (a^2 E),    F = -grad phi,  laplacian phi = delta,
with delta the CIC density contrast of the particles on a force mesh ``mesh_factor`` times finer than the
particle lattice. Poisson solve and gradient are done in Fourier space (kernels: see ``ForceMesh``); the
CIC window is not deconvolved.

Time integration (FastPM): steps a_0 < a_1 < ... < a_n, half steps at a_{i+1/2} = sqrt(a_i a_{i+1}).
With G(a) = a^3 E dD/da the growth of the momentum of a linear mode (p = G Psi0, x - q = D Psi0), the
integrals of the equations above are replaced by growth ratios, so a linear mode grows exactly as D(a)
whatever the number of steps:
    drift  x += p [D(a_{i+1}) - D(a_i)] / G(a_{i+1/2})
    kick   p += F(x_i) [G(a_{i+1/2}) - G(a_{i-1/2})] / D(a_i)
(the kick equals FastPM's (3/2) Omega_m / (a^2 E) dG / G' because G' = (3/2) Omega_m D / (a^2 E)).

Cosmology: the flat w0-wa background E(a) of ``cosmology.py``; D and f from its scale-independent growth
equation with the total Omega_m. Massive neutrinos enter through that background (counted as matter) and
through the shape of the z = 0 linear P(k) that the initial conditions are scaled back from; they are
painted with the cold particles (no free-streaming suppression of growth after the start: an
approximation at the percent level for M_nu <~ 0.1 eV, stated rather than hidden).

Memory (float32): positions, momenta and forces (36 bytes per particle) beside the initial conditions,
and one force mesh with its half-complex transform and one gradient component at a time. Measured
(bench/bench_pm.py, before the CIC stencil): 256^3 particles on a 512^3 mesh peak at 3.9 GB, 182 bytes per
particle above the initial conditions, inside a 16 GB GPU. A force call also holds the particles' CIC
stencil, built once for the paint and the three readouts: on a GPU fields.mesh.CICStencil (64 bytes per
particle; measured on a CPU at 128^3 particles on a 256^3 mesh, it raised the peak of one call from 316 to
415 MB), on the CPU the compiled kernels' CompiledCICStencil (the positions sorted by grid row and their order,
16 bytes per particle). On the CPU the force takes one inverse FFT to phi and the same 4-point gradient as a
compiled real-space stencil into a (3, N, N, N) mesh (12 N^3 bytes), read out a component at a time: two FFTs
fewer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from lss_lightning.cosmology import Cosmology
from lss_lightning.fields.kernels import finite_difference_gradient, inverse_laplacian
from lss_lightning.fields.mesh import CICStencil, CompiledCICStencil, cic_stencil, wavevectors

STEPPINGS = ("linear", "log")
KM_S_PER_MOMENTUM = 100.0  # v [km/s] = 100 p / a, with p in Mpc/h


@dataclass(frozen=True)
class PMSettings:
    """How a particle-mesh run integrates (mirrors the ``pm`` block of conf/mock/default.yaml)."""

    steps: int = 10
    mesh_factor: int = 2  # force-mesh cells per particle-lattice spacing, per side
    a_start: float = 0.1  # scale factor of the 2LPT initial conditions
    stepping: str = "linear"  # linear | log: steps uniform in a or in ln a

    def __post_init__(self):
        if int(self.steps) < 1:
            raise ValueError(f"pm.steps must be >= 1, got {self.steps}")
        if int(self.mesh_factor) < 1:
            raise ValueError(f"pm.mesh_factor must be a positive integer, got {self.mesh_factor}")
        if not 0.0 < self.a_start < 1.0:
            raise ValueError(
                f"pm.a_start must lie in (0, 1), got {self.a_start} (e.g. pm.a_start=0.1 for z = 9)"
            )
        if self.stepping not in STEPPINGS:
            raise ValueError(f"pm.stepping must be one of {STEPPINGS}, got {self.stepping!r}")
        object.__setattr__(self, "steps", int(self.steps))
        object.__setattr__(self, "mesh_factor", int(self.mesh_factor))

    def scale_factors(self, a_end: float) -> np.ndarray:
        """a_0 = a_start, ..., a_n = a_end, uniform in a (linear) or in ln a (log)."""
        if not self.a_start < a_end:
            raise ValueError(
                f"pm.a_start={self.a_start} must be earlier than the output a={a_end:.4g} "
                f"(z={1 / a_end - 1:.4g}); lower pm.a_start"
            )
        if self.stepping == "log":
            return np.exp(np.linspace(math.log(self.a_start), math.log(a_end), self.steps + 1))
        return np.linspace(self.a_start, a_end, self.steps + 1)


class GrowthTable:
    """D(a) and G(a) = a^3 E dD/da = a^2 E f D of one cosmology, evaluated on demand (float64)."""

    def __init__(self, cosmology: Cosmology):
        self.cosmology = cosmology

    def d(self, a: float) -> float:
        return float(self.cosmology.growth_factor(1.0 / a - 1.0))

    def g(self, a: float) -> float:
        z = 1.0 / a - 1.0
        c = self.cosmology
        return float(a * a * c.efunc(z) * c.growth_rate(z) * c.growth_factor(z))

    def drift(self, a0: float, a1: float, a_mid: float) -> float:
        """Factor multiplying p (held at a_mid) to move x from a0 to a1."""
        return (self.d(a1) - self.d(a0)) / self.g(a_mid)

    def kick(self, a0: float, a1: float, a_force: float) -> float:
        """Factor multiplying F(x(a_force)) to move p from a0 to a1."""
        return (self.g(a1) - self.g(a0)) / self.d(a_force)


Stencil = CICStencil | CompiledCICStencil  # torch (any device) or compiled (CPU) CIC of one particle set


class ForceMesh:
    """Gravitational force F = -grad phi, laplacian phi = delta, from particles painted on an N^3 mesh.

    Kernels (FastPM's defaults): the naive Green's function phi_k = -delta_k / k^2 and the 4-point
    finite-difference gradient i (8 sin(k dx) - sin(2 k dx)) / (6 dx), whose response falls to zero at
    the mesh Nyquist. Measured on 64^3 meshes, the exact gradient i k instead rings around a point mass
    (its force off by up to 80% at 3-8 cells) and, at mesh_factor 2, lets the particle lattice's alias
    power push a long plane wave 15% harder; dividing by the CIC window makes both worse, so neither is
    offered.
    """

    def __init__(self, n: int, box_size: float, *, device=None):
        self.n, self.box_size = int(n), float(box_size)
        self.device = torch.device(device or "cpu")
        self.green = inverse_laplacian(self.n, self.box_size, self.device)  # phi_k = green * delta_k
        self._meshes: dict[str, torch.Tensor] | None = None  # the CPU force's work meshes (_cpu_meshes)
        dx = self.box_size / self.n
        self.gradient = tuple(  # i times these (1D, broadcastable) is the gradient along each axis
            finite_difference_gradient(k, dx)
            for k in wavevectors(self.n, self.box_size, device=self.device, zero_nyquist=True)
        )

    def stencil(self, positions: torch.Tensor | Stencil) -> Stencil:
        """The CIC stencil of particles (P, 3) Mpc/h on this mesh (a stencil passes through)."""
        if isinstance(positions, (CICStencil, CompiledCICStencil)):
            return positions
        return cic_stencil(positions, self.n, self.box_size)

    def potential_k(self, positions: torch.Tensor | Stencil) -> torch.Tensor:
        """phi_k (rfft) of the particles' CIC density contrast (particles as positions or their stencil)."""
        stencil = self.stencil(positions)
        return self._potential_of_counts(stencil.paint(), len(stencil))

    def _potential_of_counts(self, count: torch.Tensor, particles: int, out: torch.Tensor | None = None):
        """phi_k from the CIC counts of ``particles`` particles (scaled in place to 1 + delta; the mean only sets
        the k = 0 mode, which is dropped), into ``out`` if given."""
        count *= self.n**3 / particles
        phi_k = torch.fft.rfftn(count, out=out)
        del count
        torch.view_as_real(phi_k).mul_(self.green.unsqueeze(-1))  # in place, real x complex: no complex copy
        return phi_k

    def forces(self, positions: torch.Tensor) -> torch.Tensor:
        """F at the particles, (P, 3) in Mpc/h (the units of a displacement: F = Psi for a linear mode)."""
        stencil = self.stencil(positions)  # one stencil for the paint and the readouts
        if isinstance(stencil, CompiledCICStencil):
            return self._cpu_forces(stencil)
        return self.forces_at(self.potential_k(stencil), stencil)

    def _cpu_forces(self, stencil: CompiledCICStencil) -> torch.Tensor:
        """forces() on the CPU: the same steps as potential_k and forces_at, into meshes kept between calls (a PM
        run calls this every step; fresh meshes cost their page faults every time)."""
        meshes = self._cpu_meshes(stencil.positions.dtype)
        count = meshes["count"].zero_()
        stencil.paint_into(count)
        phi_k = self._potential_of_counts(count, len(stencil), out=meshes["phi_k"])
        return self._forces_real_space(phi_k, stencil, meshes)

    def _cpu_meshes(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """The CPU force's work meshes for ``dtype``: count and phi (N^3), phi_k (rfft), force (3, N^3);
        16 N^3 + 8 N^2 (N/2 + 1) bytes in float32, allocated on the first call."""
        meshes = self._meshes
        if meshes is None or meshes["count"].dtype != dtype:
            shape, complex_dtype = (
                (self.n,) * 3,
                torch.complex64 if dtype == torch.float32 else torch.complex128,
            )
            meshes = {
                "count": torch.empty(shape, dtype=dtype),
                "phi_k": torch.empty(self.n, self.n, self.n // 2 + 1, dtype=complex_dtype),
                "phi": torch.empty(shape, dtype=dtype),
                "force": torch.empty(3, *shape, dtype=dtype),
            }
            self._meshes = meshes
        return meshes

    def forces_at(self, phi_k: torch.Tensor, positions: torch.Tensor | Stencil) -> torch.Tensor:
        """F = -grad phi read out (CIC) at ``positions`` (P, 3) Mpc/h, or at a stencil's particles, from phi_k."""
        real = phi_k.real.dtype  # as cic_readout: weights in the precision of the field read
        stencil = self.stencil(positions if not isinstance(positions, torch.Tensor) else positions.to(real))
        if isinstance(stencil, CompiledCICStencil):
            return self._forces_real_space(phi_k, stencil)
        out = torch.empty(len(stencil), 3, device=phi_k.device, dtype=real)
        for i, d_i in enumerate(self.gradient):  # one component at a time keeps one real mesh alive
            grad = torch.fft.irfftn(phi_k * (-1j * d_i), s=(self.n,) * 3)
            out[:, i] = stencil.readout(grad)
            del grad
        return out

    def _forces_real_space(
        self, phi_k: torch.Tensor, stencil: CompiledCICStencil, meshes: dict | None = None
    ) -> torch.Tensor:
        """The CPU path: one inverse FFT to phi, the same 4-point gradient as a real-space stencil (compiled)
        and the three components read out with one stencil; two FFTs fewer than the Fourier path and the same
        forces to float rounding (tests/test_pm.py). ``meshes``: phi and force meshes to write into."""
        from lss_lightning.fields import compiled

        real, shape = phi_k.real.dtype, (self.n,) * 3
        phi = meshes["phi"] if meshes else torch.empty(shape, dtype=real)
        force = meshes["force"] if meshes else torch.empty(3, *shape, dtype=real)
        torch.fft.irfftn(phi_k, s=shape, out=phi)
        compiled.use_torch_threads()
        compiled.finite_difference_gradient(phi.numpy(), -self.n / self.box_size, force.numpy())  # -grad phi
        return stencil.readout(force)


@dataclass
class PMState:
    """Particles between steps: positions (P, 3) Mpc/h in [0, L), momenta p (P, 3) Mpc/h, at scale factor a."""

    positions: torch.Tensor
    momenta: torch.Tensor
    a: float

    def velocities(self) -> torch.Tensor:
        """Peculiar velocities (P, 3) in km/s."""
        return self.momenta * (KM_S_PER_MOMENTUM / self.a)


def momenta_from_velocities(velocities: torch.Tensor, a: float) -> torch.Tensor:
    """p = a v / 100 for peculiar velocities in km/s."""
    return velocities * (a / KM_S_PER_MOMENTUM)


StepCallback = Callable[[int, int, float], None]  # (steps done, steps in all, a)
OutputCallback = Callable[[PMState], None]  # particles at one of the requested output scale factors


def step_scale_factors(settings: PMSettings, a_end: float, outputs=()) -> np.ndarray:
    """The step boundaries: ``settings.steps`` steps from a_start to a_end, with every output scale factor
    inserted as an extra boundary (FastPM's factors keep linear growth exact for any boundaries)."""
    a = settings.scale_factors(a_end)
    extra = np.asarray(outputs, dtype=float)
    if extra.size and (extra.min() <= settings.a_start or extra.max() > a_end):
        raise ValueError(
            f"PM outputs at a = {sorted(extra.tolist())} must lie in (a_start = {settings.a_start}, a_end = {a_end:.4g}]"
        )
    return np.unique(np.concatenate([a, extra]))


def evolve(
    positions: torch.Tensor,
    velocities: torch.Tensor,
    cosmology: Cosmology,
    box_size: float,
    particles_per_side: int,
    a_end: float,
    settings: PMSettings,
    *,
    on_step: StepCallback | None = None,
    outputs=(),
    on_output: OutputCallback | None = None,
) -> PMState:
    """Evolve particles given at ``settings.a_start`` (positions Mpc/h, peculiar velocities km/s) to ``a_end``.

    Kick-drift-kick with the factors of the module docstring; the inputs are not modified. At each scale
    factor in ``outputs`` (extra step boundaries, see ``step_scale_factors``) ``on_output`` receives the
    particles, their momenta half-kicked to that a with the force already computed there.
    """
    a = step_scale_factors(settings, a_end, outputs)
    wanted = {float(v) for v in np.atleast_1d(np.asarray(outputs, dtype=float))} if on_output else set()
    mesh = ForceMesh(settings.mesh_factor * particles_per_side, box_size, device=positions.device)
    growth = GrowthTable(cosmology)
    x = positions.clone()
    p = momenta_from_velocities(velocities, float(a[0]))
    force = mesh.forces(x)
    a_momentum = float(a[0])  # where p is defined: a_0, then the half steps
    n = len(a) - 1
    for i in range(n):
        a_mid = math.sqrt(a[i] * a[i + 1])
        p.add_(force, alpha=growth.kick(a_momentum, a_mid, float(a[i])))
        x.add_(p, alpha=growth.drift(float(a[i]), float(a[i + 1]), a_mid))
        torch.remainder(x, box_size, out=x)
        del force
        force = mesh.forces(x)
        a_momentum = a_mid
        if float(a[i + 1]) in wanted and i + 1 < n:
            p_out = p + force * growth.kick(a_momentum, float(a[i + 1]), float(a[i + 1]))
            on_output(PMState(positions=_wrap(x, box_size), momenta=p_out, a=float(a[i + 1])))
        if on_step is not None:
            on_step(i + 1, n, float(a[i + 1]))
    p.add_(force, alpha=growth.kick(a_momentum, float(a[-1]), float(a[-1])))
    final = PMState(positions=_wrap(x, box_size), momenta=p, a=float(a[-1]))
    if float(a[-1]) in wanted:
        on_output(final)
    return final


def _wrap(x: torch.Tensor, box_size: float) -> torch.Tensor:
    """Positions in [0, L): float32 remainder can round a tiny negative number up to L itself."""
    x = torch.remainder(x, box_size)
    return torch.where(x >= box_size, torch.zeros_like(x), x)
