"""Particle-mesh mocks: accuracy against HMcode-2020 and Watson et al. 2013, speed against 2LPT and jaxpm.

All with the mock defaults (conf/mock/default.yaml: 10 kick-drift-kick steps from a = 0.1, force mesh 2x
the particle grid, FoF b = 0.2, >= 20 particles) for 128^3 particles in 256 Mpc/h at z = 0, Quijote's
fiducial cosmology, fixed-amplitude initial conditions (one box scatters ~15% at k = 0.1 otherwise):
1. P(k) / P_HMcode(k) at k = 0.1, 0.2, 0.3, 0.5, 1 h/Mpc for PM and for 2LPT from the same seeds, measured
   on a 256^3 CIC grid with the window deconvolved and the shot noise V / N subtracted (the nearest
   k_F-wide shell). Target: 0.80..1.10 up to k = 0.5 and > 0.6 at k = 1.
2. The FoF mass function over the seeds, in octaves of mass from 100 particles, where Watson et al.'s
   (2013) FoF fit expects >= 50 haloes, with Poisson errors. sigma(M) from CAMB's linear P(k); colossus'
   'watson13' beside it where colossus imports. Target: within 35%.
3. Seconds per simulation (fresh process, median of repeats) for PM + FoF against 2LPT, split into
   ICs / PM steps / FoF / painting, and peak memory; peak memory of 256^3 particles on a 512^3 mesh.
4. jaxpm (a JAX PM, where it imports): its painting, FFT and kernel functions per force evaluation and in a
   jitted 10-step kick-drift-kick loop, at mesh factor 1 and 2, against ours (its pm_forces itself wants one
   particle per mesh cell, so the same functions are driven directly).
5. How steps and mesh factor move P(k) and the mass function (seed 1): 5 / 10 / 20 steps, mesh 1x / 2x / 3x.
6. The budget of one force call on the CPU (``force_budget``; alone with ``--budget``): each stage (the row
   sort, paint, forward FFT, Green's function, inverse FFT to phi, the compiled 4-point gradient, the readout
   of the 3 components),
   median of 5 calls, beside its floor: the FFTs against the same transforms into preallocated outputs, the
   other stages against one pass over the memory they touch (torch.sum or copy_: the traffic a scatter, gather
   or stencil cannot avoid), so a regression in a stage shows as its ratio to the floor.
7. ``--forces --threads T``: ours (compiled CIC, and the torch stencil of the GPU path) against jaxpm per force
   evaluation, 128^3 particles on a 256^3 mesh, interleaved rounds in fresh processes (jax limited to one
   intra-op thread at T = 1 through XLA_FLAGS).
Run: .venv/bin/python bench/bench_pm.py [--seeds 2] [--skip-big] [--skip-sweep] [--budget] [--threads T]
     [--forces --rounds 5]   (~15 min on 2 CPU cores; --budget alone ~1 min, --forces ~2 min)
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
from _harness import interleaved, load, measure, report

N, BOX, GRID_PK = 128, 256.0, 256
K_REPORT = (0.1, 0.2, 0.3, 0.5, 1.0)
FIELDS = ["density", "velocity", "momentum", "density_rsd", "velocity_linear"]
WATSON = {"A": 0.282, "alpha": 2.163, "beta": 1.406, "gamma": 1.210}  # Watson et al. 2013, FoF, universal


def _config(solver: str, n: int = N, box: float = BOX, **overrides):
    from lss_lightning.mocks.config import MockConfig

    values = dict(
        store="unused", grid=n, particles=n, box_size=box, solver=solver, fields=FIELDS, fixed_amplitude=True
    )
    return MockConfig(**{**values, **overrides}, device="cpu")


# -- accuracy ----------------------------------------------------------------------------------------
def run_stages(cfg, seed: int):
    """One simulation stage by stage: (particles, haloes, seconds per stage)."""
    from lss_lightning.cosmology import Cosmology
    from lss_lightning.mocks.simulate import find_haloes, initial_particles, paint_fields, run_solver

    cosmo = Cosmology()
    cosmo.linear_power([0.1])  # CAMB once, outside the timings
    seconds = {}
    t = time.perf_counter()
    particles, _ = initial_particles(cfg, cosmo, seed, "cpu")
    seconds["ICs"] = time.perf_counter() - t
    t = time.perf_counter()
    particles = run_solver(cfg, cosmo, particles)
    seconds["PM steps"] = time.perf_counter() - t
    haloes = None
    if cfg.solver == "pm":
        t = time.perf_counter()
        haloes = find_haloes(cfg, cosmo, particles)
        seconds["FoF"] = time.perf_counter() - t
    t = time.perf_counter()
    paint_fields(cfg, cosmo, particles, haloes, "cpu")
    seconds["painting (5 fields)"] = time.perf_counter() - t
    return particles, haloes, seconds


def power_ratio(positions) -> np.ndarray:
    """(P(k) - V/N) / P_HMcode(k) at K_REPORT, on a 256^3 CIC grid with the window divided out."""
    from lss_lightning.cosmology import Cosmology
    from lss_lightning.fields.mesh import cic_paint
    from lss_lightning.fields.spectra import power_spectrum

    counts = cic_paint(positions, GRID_PK, BOX)
    delta = counts / counts.mean() - 1.0
    spectrum = power_spectrum(delta, BOX, mas="cic")
    shot = BOX**3 / len(positions)
    out = []
    for k in K_REPORT:
        j = int(np.nanargmin(np.abs(spectrum.k - k)))
        out.append((spectrum.power[j] - shot) / Cosmology().nonlinear_power(spectrum.k[j]))
    return np.array(out)


def watson_dndlnm(masses: np.ndarray) -> np.ndarray:
    """Watson et al. (2013) FoF dn/dlnM in (h/Mpc)^3 at z = 0, sigma(M) from CAMB's linear P(k)."""
    from lss_lightning.cosmology import Cosmology
    from lss_lightning.mocks.fof import RHO_CRIT

    cosmo = Cosmology()
    rho = cosmo.Omega_m * RHO_CRIT
    k = np.logspace(-4, 2.5, 6000)
    power = cosmo.linear_power(k)

    def sigma(m):
        return np.array(
            [_sigma_r(k, power, (3 * mi / (4 * np.pi * rho)) ** (1 / 3)) for mi in np.atleast_1d(m)]
        )

    s = sigma(masses)
    dlnsigma = np.log(sigma(masses * 1.01) / sigma(masses / 1.01)) / (2 * np.log(1.01))
    w = WATSON
    f = w["A"] * ((w["beta"] / s) ** w["alpha"] + 1.0) * np.exp(-w["gamma"] / s**2)
    return f * rho / masses * np.abs(dlnsigma)


def _sigma_r(k, power, radius):
    from lss_lightning.cosmology import sigma_from_power

    return sigma_from_power(k, power, radius)


def colossus_dndlnm(masses: np.ndarray) -> np.ndarray | None:
    try:
        from colossus.cosmology import cosmology as ccosmo
        from colossus.lss import mass_function
    except ImportError:
        return None
    from lss_lightning.cosmology import Cosmology

    c = Cosmology()
    ccosmo.setCosmology(
        "lss",
        params={
            "flat": True,
            "H0": 100 * c.h,
            "Om0": c.Omega_m,
            "Ob0": c.Omega_b,
            "sigma8": c.sigma_8,
            "ns": c.n_s,
        },
    )
    return mass_function.massFunction(masses, 0.0, mdef="fof", model="watson13", q_out="dndlnM")


def mass_function_table(catalogues, m_particle: float) -> list[tuple]:
    """Rows (M_lo, M_hi, N measured, N expected, ratio, Poisson error, colossus expected or None)."""
    masses = np.concatenate([c.masses for c in catalogues])
    volume = len(catalogues) * BOX**3
    rows, lo = [], 100 * m_particle
    while True:
        hi = 2 * lo
        grid = np.geomspace(lo, hi, 33)
        expected = volume * np.trapezoid(watson_dndlnm(grid), np.log(grid))
        if expected < 50:
            break
        measured = int(((masses >= lo) & (masses < hi)).sum())
        col = colossus_dndlnm(grid)
        col_expected = None if col is None else volume * np.trapezoid(col, np.log(grid))
        rows.append(
            (lo, hi, measured, expected, measured / expected, np.sqrt(measured) / expected, col_expected)
        )
        lo = hi
    return rows


# -- timing cases (module level: the harness pickles them into fresh processes) -------------------------
def setup_lpt():
    from lss_lightning.mocks.design import design

    cfg = _config("lpt")
    return cfg, design(cfg)[0]


def setup_pm():
    import torch

    from lss_lightning.cosmology import Cosmology
    from lss_lightning.mocks.design import design

    if bench_threads():
        torch.set_num_threads(bench_threads())
    Cosmology().linear_power([0.1])  # CAMB once, outside the timing
    cfg = _config("pm")
    return cfg, design(cfg)[0]


def run_simulation(state):
    from lss_lightning.mocks.simulate import simulate

    simulate(*state, device="cpu")


def setup_big():
    import torch

    from lss_lightning.cosmology import Cosmology
    from lss_lightning.mocks.simulate import initial_particles

    cfg = _config("pm", n=256, box=512.0, pm={"steps": 2})
    particles, _ = initial_particles(cfg, Cosmology(), 1, "cpu")
    torch.set_num_threads(2)
    return cfg, particles


def run_big(state):
    from lss_lightning.cosmology import Cosmology
    from lss_lightning.mocks.simulate import run_solver

    cfg, particles = state
    run_solver(cfg, Cosmology(), particles)


def bench_threads() -> int | None:
    """Threads of the force cases (--threads, passed to the spawned children as BENCH_THREADS)."""
    value = os.environ.get("BENCH_THREADS")
    return int(value) if value else None


def force_positions(order: str) -> np.ndarray:
    """N^3 float32 positions in Mpc/h: "lattice", a particle lattice in its Lagrangian (C) order displaced by
    3 Mpc/h rms, the order the PM sees (its particles keep their lattice order); "random", uniform in random order
    (a worst case for the caches: 8x slower CIC, measured)."""
    rng = np.random.default_rng(0)
    if order == "random":
        return rng.uniform(0.0, BOX, (N**3, 3)).astype(np.float32)
    q = (np.arange(N) + 0.5) * BOX / N
    lattice = np.stack(np.meshgrid(q, q, q, indexing="ij"), -1).reshape(-1, 3)
    return ((lattice + rng.normal(scale=3.0, size=lattice.shape)) % BOX).astype(np.float32)


def setup_forces(mesh_factor: int, compiled: bool | None = None, order: str = "lattice"):
    import torch

    from lss_lightning.mocks.pm import ForceMesh

    if bench_threads():
        torch.set_num_threads(bench_threads())
    positions = torch.from_numpy(force_positions(order))
    mesh = ForceMesh(mesh_factor * N, BOX)
    if compiled is not None:
        from lss_lightning.fields.mesh import cic_stencil

        return mesh, cic_stencil(positions, mesh.n, BOX, compiled=compiled)  # the stencil's build is untimed
    return mesh, positions


def setup_forces_1():
    return setup_forces(1)


def setup_forces_2():
    return setup_forces(2)


def setup_forces_2_torch():
    """The torch stencil (the GPU path) on the CPU; its build is untimed here."""
    return setup_forces(2, compiled=False)


def setup_forces_2_random():
    return setup_forces(2, order="random")


def run_forces(state):
    mesh, positions = state
    mesh.forces(positions)


def run_forces_stencil(state):
    mesh, stencil = state
    mesh.forces_at(mesh.potential_k(stencil), stencil)


def jaxpm_force_function(n: int):
    """jaxpm's own painting, FFTs and kernels on an n^3 mesh for any particle count (its pm_forces wants one
    particle per mesh cell): paint, phi = invlaplace delta, F_i = read(-gradient_i phi); positions in cells."""
    import jax
    import jax.numpy as jnp
    from jaxpm.distributed import fft3d, ifft3d
    from jaxpm.kernels import fftk, gradient_kernel, invlaplace_kernel
    from jaxpm.painting import _cic_paint_impl, _cic_read_impl

    def forces(positions):
        delta_k = fft3d(_cic_paint_impl(jnp.zeros((n, n, n)), positions))
        kvec = fftk(delta_k)
        phi_k = delta_k * invlaplace_kernel(kvec)
        return jnp.stack(
            [_cic_read_impl(ifft3d(-gradient_kernel(kvec, i) * phi_k), positions) for i in range(3)], -1
        )

    return jax.jit(forces)


def setup_jaxpm(mesh_factor: int, order: str = "lattice"):
    if bench_threads() == 1:  # XLA's CPU client: one intra-op thread (read when jax first imports)
        os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    import jax.numpy as jnp

    n = mesh_factor * N
    positions = jnp.asarray(force_positions(order) * (n / BOX))  # jaxpm: positions in mesh cells
    forces = jaxpm_force_function(n)
    forces(positions).block_until_ready()  # compile outside the timing
    return forces, positions, jnp


def setup_jaxpm_1():
    return setup_jaxpm(1)


def setup_jaxpm_2():
    return setup_jaxpm(2)


def setup_jaxpm_2_random():
    return setup_jaxpm(2, order="random")


def run_jaxpm(state):
    forces, positions, _ = state
    forces(positions).block_until_ready()


def setup_jaxpm_run():
    """jaxpm's pm_forces in a jitted kick-drift-kick step (constant factors: the timing is the force's)."""
    import jax

    forces, positions, jnp = setup_jaxpm(2)
    n = 2 * N

    @jax.jit
    def step(x, p):
        p = p + 0.01 * forces(x)
        x = jnp.mod(x + 0.01 * p, n)
        return x, p

    momenta = jnp.zeros_like(positions)
    step(positions, momenta)[0].block_until_ready()
    return step, positions, momenta


def run_jaxpm_steps(state):
    step, x, p = state
    f_last = None
    for _ in range(10):
        x, p = step(x, p)
        f_last = x
    f_last.block_until_ready()


def jaxpm_agreement(mesh_factor: int) -> float:
    """max |F_ours - F_jaxpm dx n_mesh^3 / N_p| / rms F_ours for random particles (same kernels, other units)."""
    import jax.numpy as jnp
    import torch

    from lss_lightning.mocks.pm import ForceMesh

    n = 32 * mesh_factor
    positions = torch.rand(32**3, 3, generator=torch.Generator().manual_seed(1)) * BOX
    ours = ForceMesh(n, BOX).forces(positions).double().numpy()
    theirs = np.asarray(jaxpm_force_function(n)(jnp.asarray(positions.numpy() * n / BOX)), dtype=np.float64)
    scale = (BOX / n) * n**3 / 32**3
    return float(np.abs(ours - scale * theirs).max() / np.sqrt((ours**2).mean()))


def jaxpm_available() -> bool:
    try:
        import jaxpm.pm  # noqa: F401
    except Exception:  # ImportError, or jax_cosmo's missing pkg_resources
        return False
    return True


# -- report ------------------------------------------------------------------------------------------
SWEEP = ((5, 2), (10, 1), (10, 2), (20, 2), (10, 3))  # (steps, mesh_factor)


def sweep() -> None:
    """P(k) ratios and haloes above 100 particles (vs Watson) for several steps and mesh factors, seed 1."""
    from lss_lightning.cosmology import Cosmology
    from lss_lightning.mocks.fof import particle_mass

    m_p = particle_mass(Cosmology(), BOX, N)
    grid = np.geomspace(100 * m_p, 800 * m_p, 33)
    expected = BOX**3 * np.trapezoid(watson_dndlnm(grid), np.log(grid))
    print(
        f"\nsteps and mesh (seed 1): P / P_HMcode, haloes of 100-800 particles / Watson ({expected:.0f} expected)"
    )
    print(
        "| steps | mesh | " + " | ".join(f"k = {k:g}" for k in K_REPORT) + " | haloes / Watson | PM seconds |"
    )
    print("|---" * (len(K_REPORT) + 4) + "|")
    for steps, factor in SWEEP:
        particles, haloes, seconds = run_stages(_config("pm", pm={"steps": steps, "mesh_factor": factor}), 1)
        ratio = power_ratio(particles.positions)
        found = int(((haloes.masses >= grid[0]) & (haloes.masses < grid[-1])).sum())
        print(
            f"| {steps} | {factor}x | "
            + " | ".join(f"{r:.3f}" for r in ratio)
            + f" | {found / expected:.3f} | {seconds['PM steps']:.1f} |"
        )


def main(seeds: int, big: bool, with_sweep: bool) -> None:
    import torch

    from lss_lightning.cosmology import Cosmology
    from lss_lightning.mocks.fof import particle_mass

    torch.set_num_threads(2)
    print(f"load average at start: {os.getloadavg()[0]:.2f} (timings assume an otherwise idle machine)")
    print(
        f"particle mesh vs HMcode-2020: {N}^3 particles in {BOX:g} Mpc/h, z = 0, defaults, fixed amplitudes"
    )
    ratios = {"pm": [], "lpt": []}
    stages, catalogues = [], []
    for seed in range(1, seeds + 1):
        for solver in ("pm", "lpt"):
            particles, haloes, seconds = run_stages(_config(solver), seed)
            ratios[solver].append(power_ratio(particles.positions))
            if solver == "pm":
                stages.append(seconds)
                catalogues.append(haloes)
    print("\n| k [h/Mpc] | " + " | ".join(f"{k:g}" for k in K_REPORT) + " |")
    print("|---" * (len(K_REPORT) + 1) + "|")
    for solver, label in (("pm", "PM, 10 steps, mesh 2x"), ("lpt", "2LPT")):
        per_seed = np.array(ratios[solver])
        print(f"| {label} (mean of {seeds}) | " + " | ".join(f"{r:.3f}" for r in per_seed.mean(0)) + " |")
        for s, row in enumerate(per_seed, 1):
            print(f"| {label}, seed {s} | " + " | ".join(f"{r:.3f}" for r in row) + " |")
    pm_mean = np.array(ratios["pm"]).mean(0)
    ok_pk = (
        all(0.80 <= r <= 1.10 for k, r in zip(K_REPORT, pm_mean, strict=True) if k <= 0.5)
        and pm_mean[-1] > 0.6
    )
    print(f"target 0.80..1.10 up to k = 0.5 and > 0.6 at k = 1: {'met' if ok_pk else 'NOT met'}")

    m_p = particle_mass(Cosmology(), BOX, N)
    print(f"\nFoF mass function, {seeds} boxes, m_p = {m_p:.3g} Msun/h, against Watson et al. 2013 (FoF):")
    print("| M [Msun/h] | haloes | Watson expected | ratio | Poisson error | colossus watson13 |")
    print("|---|---|---|---|---|---|")
    rows = mass_function_table(catalogues, m_p)
    for lo, hi, measured, expected, ratio, err, col in rows:
        col_text = "-" if col is None else f"{col:.1f}"
        print(f"| {lo:.3g}-{hi:.3g} | {measured} | {expected:.1f} | {ratio:.3f} | {err:.3f} | {col_text} |")
    ok_hmf = rows and all(abs(r[4] - 1) <= 0.35 for r in rows)
    print(f"target within 35% in every bin: {'met' if ok_hmf else 'NOT met'}")

    print("\nstages of one PM simulation (median over seeds, same process, after CAMB):")
    for name in stages[0]:
        print(f"  {name:<22} {statistics.median(s[name] for s in stages):7.2f} s")

    results = [
        measure("2LPT simulation", setup_lpt, run_simulation, repeats=3),
        measure("PM + FoF simulation", setup_pm, run_simulation, repeats=3, warmup=False),
    ]
    report(
        f"one simulation, {N}^3 particles -> {N}^3 grids, 5 fields (fresh processes)",
        results,
        "2LPT simulation",
    )
    pm_seconds = results[1].seconds
    print(
        f"  PM + FoF: {pm_seconds:.1f} s per simulation; target < 60 s: {'met' if pm_seconds < 60 else 'NOT met'}"
    )

    forces = [
        measure(f"ours, force, mesh {N}^3 (factor 1)", setup_forces_1, run_forces, repeats=3),
        measure(f"ours, force, mesh {2 * N}^3 (factor 2)", setup_forces_2, run_forces, repeats=3),
    ]
    if jaxpm_available():
        forces += [
            measure(f"jaxpm force, mesh {N}^3", setup_jaxpm_1, run_jaxpm, repeats=3),
            measure(f"jaxpm force, mesh {2 * N}^3", setup_jaxpm_2, run_jaxpm, repeats=3),
            measure("jaxpm, 10 KDK steps, mesh 2x", setup_jaxpm_run, run_jaxpm_steps, repeats=1),
        ]
        for factor in (1, 2):
            print(
                f"  jaxpm cross-check, mesh factor {factor}: forces differ by {jaxpm_agreement(factor):.1e} of their rms"
            )
    else:
        print("\njaxpm does not import here (pip install jaxpm 'setuptools<81'); peer timings skipped")
    report(f"force evaluations, {N}^3 particles (the PM steps above: 11 per run)", forces, forces[0].name)

    if with_sweep:
        sweep()

    if big:
        r = measure("PM, 256^3 particles, 512^3 mesh, 2 steps", setup_big, run_big, repeats=1, warmup=False)
        report("memory at scale (CPU; the same tensors on a GPU)", [r], r.name)
        print(
            f"  peak {r.peak_mb / 1024:.2f} GB in all, {r.work_mb * 2**20 / 256**3:.0f} bytes per particle above the "
            "initial conditions; target: inside 16 GB of GPU memory"
        )


def simulation_time(rounds: int) -> None:
    """One 128^3 PM + FoF simulation with 5 fields (the mock defaults, after CAMB), at 2 threads, in fresh
    processes (the first call of each compiles nothing: numba's kernels come from its cache), beside 2LPT."""
    os.environ["BENCH_THREADS"] = "2"
    results = interleaved(
        [("2LPT simulation", setup_lpt, run_simulation), ("PM + FoF simulation", setup_pm, run_simulation)],
        rounds,
    )
    report(
        f"one simulation, {N}^3 particles, 5 fields, median of {rounds} interleaved rounds, {load()}",
        results,
        "2LPT simulation",
    )
    seconds = results[1].seconds
    print(f"  PM + FoF: {seconds:.2f} s per simulation; goal < 10 s on 2 idle cores: {seconds < 10}")


def force_comparison(threads: int, rounds: int) -> None:
    """Ours against jaxpm, one force evaluation of 128^3 particles on a 256^3 mesh, at ``threads`` threads:
    interleaved rounds in fresh processes (the median and best reported), the load average beside it."""
    os.environ["BENCH_THREADS"] = str(threads)
    cases = [
        ("ours, force (compiled CIC)", setup_forces_2, run_forces),
        ("ours, force (torch stencil)", setup_forces_2_torch, run_forces_stencil),
        ("ours, force, random order", setup_forces_2_random, run_forces),
    ]
    if jaxpm_available():
        cases += [
            ("jaxpm, force", setup_jaxpm_2, run_jaxpm),
            ("jaxpm, force, random order", setup_jaxpm_2_random, run_jaxpm),
        ]
    else:
        print("\njaxpm does not import here (pip install jaxpm 'setuptools<81'); peer timing skipped")
    results = interleaved(cases, rounds)
    report(
        f"one force evaluation, {N}^3 particles, {2 * N}^3 mesh, {threads} thread(s), median of {rounds} "
        f"interleaved rounds, {load()}",
        results,
        cases[0][0],
    )
    by = {r.name: r for r in results}
    if "jaxpm, force" in by:
        ratio = by["jaxpm, force"].seconds / by[cases[0][0]].seconds
        print(f"  ours vs jaxpm: {ratio:.2f}x its speed (median t_jaxpm / t_ours; goal >= 2x: {ratio >= 2})")
        worst = by["jaxpm, force, random order"].seconds / by["ours, force, random order"].seconds
        print(f"  random order: ours {worst:.2f}x jaxpm's speed")
        print(f"  jaxpm cross-check, mesh factor 2: forces differ by {jaxpm_agreement(2):.1e} of their rms")


def _median_time(fn, repeats: int = 5) -> float:
    fn()  # warm-up (allocator, FFT plans)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def force_budget(mesh: int = 2 * N, threads: int = 1) -> None:
    """Seconds per stage of one ForceMesh.forces call on the CPU (compiled CIC) and the floor of each stage."""
    import torch

    from lss_lightning.fields import compiled
    from lss_lightning.fields.mesh import cic_stencil
    from lss_lightning.mocks.pm import ForceMesh

    torch.set_num_threads(threads)
    compiled.use_torch_threads()  # numba's loops (gradient, readout) on as many threads
    pos = torch.from_numpy(force_positions("lattice"))  # N^3 particles in their lattice order, as in the PM
    fm = ForceMesh(mesh, BOX)
    st = cic_stencil(pos, mesh, BOX)
    count = st.paint()
    phi_k = torch.fft.rfftn(count) * fm.green
    phi = torch.fft.irfftn(phi_k, s=(mesh,) * 3)
    force = torch.empty(3, mesh, mesh, mesh)
    out_k, out_r, work_k = torch.empty_like(phi_k), torch.empty_like(phi), phi_k.clone()
    stages = {  # stage: (seconds of the stage, seconds of its floor: the same memory traffic, or the bare FFT)
        "row sort of the particles (once per call)": (
            _median_time(lambda: cic_stencil(pos, mesh, BOX)._sorted),
            _median_time(lambda: (pos.sum(), pos.clone())),
        ),
        "paint": (_median_time(st.paint), _median_time(lambda: (pos.sum(), torch.zeros(mesh**3).sum()))),
        "forward FFT": (
            _median_time(lambda: torch.fft.rfftn(count)),
            _median_time(lambda: torch.fft.rfftn(count, out=out_k)),
        ),
        "Green's function (in place)": (
            _median_time(lambda: torch.view_as_real(work_k).mul_(fm.green.unsqueeze(-1))),
            _median_time(lambda: work_k.sum()),
        ),
        "inverse FFT to phi": (
            _median_time(lambda: torch.fft.irfftn(phi_k, s=(mesh,) * 3)),
            _median_time(lambda: torch.fft.irfftn(phi_k, s=(mesh,) * 3, out=out_r)),
        ),
        "4-point gradient (compiled)": (
            _median_time(
                lambda: compiled.finite_difference_gradient(phi.numpy(), -mesh / BOX, force.numpy())
            ),
            _median_time(lambda: force.copy_(phi.unsqueeze(0).expand_as(force))),
        ),
        "readout of 3 components": (
            _median_time(lambda: st.readout(force)),
            _median_time(lambda: (pos.sum(), force.sum())),
        ),
    }
    total = _median_time(lambda: fm.forces(pos))
    print(
        f"\nbudget of one force call: {N}^3 particles (lattice order), {mesh}^3 mesh, {threads} thread(s), "
        f"{type(st).__name__}, median of 5, load {os.getloadavg()[0]:.2f}"
    )
    print("| stage | seconds | share of the call | floor | stage / floor |\n|---|---|---|---|---|")
    for name, (sec, floor) in stages.items():
        floor_text = "-" if floor is None else f"{floor:.3f} | {sec / floor:.2f}"
        print(
            f"| {name} | {sec:.3f} | {sec / total:.0%} | {floor_text}"
            + (" | -" if floor is None else "")
            + " |"
        )
    print(
        f"| whole call (ForceMesh.forces) | {total:.3f} | 100% | {sum(f or 0 for _, f in stages.values()):.3f} | - |"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--skip-big", action="store_true", help="skip the 256^3-on-512^3 memory case")
    parser.add_argument("--skip-sweep", action="store_true", help="skip the steps / mesh-factor table")
    parser.add_argument("--budget", action="store_true", help="only the per-stage budget of one force call")
    parser.add_argument(
        "--forces", action="store_true", help="only ours vs jaxpm per force call, interleaved"
    )
    parser.add_argument(
        "--simulation", action="store_true", help="only the seconds of one PM + FoF simulation (2 threads)"
    )
    parser.add_argument("--threads", type=int, default=1, help="threads of the budget and of --forces")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of --forces")
    args = parser.parse_args()
    if args.simulation:
        simulation_time(args.rounds)
    elif args.forces:
        force_comparison(args.threads, args.rounds)
    elif not args.budget:
        main(args.seeds, not args.skip_big, not args.skip_sweep)
    if not (args.forces or args.simulation):
        force_budget(threads=args.threads)
    print(f"load average at the end (last minute): {os.getloadavg()[0]:.2f}")
