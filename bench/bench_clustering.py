"""Halo pair counts DD(s, mu) in a periodic box: lss_lightning's ``pair_counts`` (the compiled cell list, and
the streamed cKDTree search, method="tree") against the materialised counting they replaced, and against
Corrfunc where it imports.

Catalogues (synthetic, seeded, no simulation): "one box", 3,000 halo-like points in a 256 Mpc/h box (about
the FoF haloes of a mock box: half uniform, half in clumps of ~10 points, Gaussian sigma 2 Mpc/h, so there are
close pairs), and "10x", ten times as many points (30,000) by the same recipe in the same box: ~2.5e5 and
~2.4e7 unordered pairs below s_max. Binning: the evaluation's defaults (conf/evaluation/default.yaml,
``halo_velocities.default_s_edges``): s in 15 bins over 0-60 Mpc/h, n_mu = 20 bins of mu = |s_z| / s in
[0, 1], line of sight z (los_axis 2), periodic.

Baseline: the materialised counting that ``correlation_s_mu`` did before ce806e2: scipy cKDTree.query_pairs
over every pair below s_max, numpy separations and np.histogram2d, holding every pair at once (~100 bytes
a pair). On the 10x catalogue it needs a few GB, so it runs there only with --materialised-10x, and only if
/proc/meminfo's MemAvailable covers twice its estimate. Peer: Corrfunc.theory.DDsmu (periodic, autocorr=1,
nthreads = torch threads, mu_max = 1, the same s edges and mu bins) where ``import Corrfunc`` works; else
skipped with the reason. The check: both of ours equal the baseline exactly (np.array_equal) on the one-box
catalogue. Threads: OMP_NUM_THREADS (torch's, which numba and Corrfunc are given too).

Timing: each (case, round) runs in a fresh spawned process (_harness.measure: untimed setup, one warm-up
call, then one timed call; peak RSS reset after setup). The cases are interleaved, round by round (ours,
baseline, Corrfunc, ours, ...), and the table shows the median and best over --rounds (default 5) rounds and
the largest peak RSS and "work" (peak minus the memory after setup; setup imports lss_lightning's clustering
module, hence torch, for every case, so the peak RSS columns compare like with like). Load averages
(os.getloadavg) are printed at the start, beside each table and at the end.

Run: .venv/bin/python bench/bench_clustering.py [--rounds 5] [--points 3000] [--materialised-10x]
"""

from __future__ import annotations

import argparse
from functools import partial

import numpy as np
from _harness import Result, interleaved, load, report

BOX, N_MU, LOS = 256.0, 20, 2
SEED = 7
BYTES_PER_PAIR = 110  # the materialised path's peak per pair (the issue: 7.4 GB for 73 M pairs, ~101 B)
OURS, TREE = "ours compiled (pair_counts)", "ours tree (streamed cKDTree)"
BASE, PEER = "materialised (query_pairs+hist2d)", "Corrfunc DDsmu"


def s_edges() -> np.ndarray:
    from lss_lightning.evaluate.halo_velocities import default_s_edges

    return default_s_edges(BOX)


def halo_like(n: int, seed: int = SEED) -> np.ndarray:
    """(n, 3) float64 in [0, BOX): half uniform, half around n // 20 random centres (sigma 2 Mpc/h)."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0.0, BOX, (max(n // 20, 1), 3))
    half = n // 2
    clumped = centres[rng.integers(0, len(centres), n - half)] + rng.normal(0.0, 2.0, (n - half, 3))
    pos = np.mod(np.concatenate([rng.uniform(0.0, BOX, (half, 3)), clumped]), BOX)
    pos[pos >= BOX] = 0.0
    return pos


def materialised_counts(pos: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The baseline: every pair below s_max at once (correlation_s_mu before the streamed counts)."""
    from scipy.spatial import cKDTree

    pairs = cKDTree(pos, boxsize=BOX).query_pairs(edges[-1], output_type="ndarray")
    d = pos[pairs[:, 1]] - pos[pairs[:, 0]]
    d -= BOX * np.round(d / BOX)
    s = np.sqrt((d * d).sum(axis=1))
    mu = np.abs(d[:, LOS]) / np.where(s > 0, s, 1.0)
    dd, _, _ = np.histogram2d(s, np.minimum(mu, 1.0), bins=[edges, np.linspace(0.0, 1.0, N_MU + 1)])
    return dd


def setup_catalogue(n: int):
    import lss_lightning.evaluate.clustering  # noqa: F401  (torch too: the same imports for every case)

    return halo_like(n), s_edges()


def run_ours(state):
    from lss_lightning.evaluate.clustering import pair_counts

    pos, edges = state
    pair_counts(pos, BOX, edges, N_MU, LOS)


def run_tree(state):
    from lss_lightning.evaluate.clustering import pair_counts

    pos, edges = state
    pair_counts(pos, BOX, edges, N_MU, LOS, method="tree")


def run_materialised(state):
    materialised_counts(*state)


def setup_corrfunc(n: int):
    import torch

    pos, edges = setup_catalogue(n)
    xyz = [np.ascontiguousarray(pos[:, k]) for k in range(3)]
    return xyz, edges, torch.get_num_threads()


def run_corrfunc(state):
    from Corrfunc.theory.DDsmu import DDsmu

    (x, y, z), edges, threads = state
    return DDsmu(1, threads, edges, 1.0, N_MU, x, y, z, periodic=True, boxsize=BOX)


def corrfunc_missing() -> str | None:
    """None if Corrfunc.theory.DDsmu imports, else the reason it does not."""
    try:
        from Corrfunc.theory.DDsmu import DDsmu  # noqa: F401
    except Exception as e:  # ImportError, or a broken build (missing libgsl raises OSError)
        return f"{type(e).__name__}: {e}"
    return None


def mem_available_mb() -> float:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024.0
    return float("inf")


def cases_for(n: int, with_baseline: bool, with_peer: bool) -> list[tuple[str, partial, object]]:
    cases = [(OURS, partial(setup_catalogue, n), run_ours), (TREE, partial(setup_catalogue, n), run_tree)]
    if with_baseline:
        cases.append((BASE, partial(setup_catalogue, n), run_materialised))
    if with_peer:
        cases.append((PEER, partial(setup_corrfunc, n), run_corrfunc))
    return cases


def summary(results: list[Result]) -> None:
    by = {r.name: r for r in results}
    ours = by[OURS]
    if BASE in by:
        speed = by[BASE].seconds / ours.seconds
        print(f"  ours vs materialised: {speed:.2f}x its speed (median t_materialised / t_ours)")
    if PEER in by:
        ratio = by[PEER].seconds / ours.seconds
        goal = "met" if ratio >= 0.5 else "NOT met"
        print(
            f"  ours vs Corrfunc: {ratio:.2f}x its speed (median t_Corrfunc / t_ours; goal >= 0.5x: {goal})"
        )
    print(f"  ours peak RSS {ours.peak_mb:.0f} MB, work {ours.work_mb:.0f} MB (goal: peak < 1024 MB)")


def check_exact(n: int) -> None:
    from lss_lightning.evaluate.clustering import pair_counts

    pos, edges = halo_like(n), s_edges()
    ours, base = pair_counts(pos, BOX, edges, N_MU, LOS), materialised_counts(pos, edges)
    tree = pair_counts(pos, BOX, edges, N_MU, LOS, method="tree")
    print(
        f"  ours == materialised exactly (np.array_equal): {np.array_equal(ours, base)}, tree == materialised: "
        f"{np.array_equal(tree, base)}, {ours.sum()} pairs"
    )


def check_corrfunc(n: int) -> None:
    """Informative: Corrfunc counts ordered pairs (2x ours), mu < 1 strictly, and with s_min = 0 it may
    add the N self-pairs to the first bin; the largest per-bin |2 ours - Corrfunc| is printed."""
    from lss_lightning.evaluate.clustering import pair_counts

    state = setup_corrfunc(n)
    theirs = np.asarray(run_corrfunc(state)["npairs"], dtype=np.int64).reshape(len(state[1]) - 1, N_MU)
    ours = pair_counts(halo_like(n), BOX, state[1], N_MU, LOS)
    print(f"  Corrfunc agreement: max per-bin |2 ours - Corrfunc| = {np.abs(2 * ours - theirs).max()}")


def materialised_fits(n: int) -> tuple[bool, str]:
    """Whether the materialised baseline's estimated memory (uniform pair count) fits twice over."""
    pairs = 0.5 * n * n * 4.0 / 3.0 * np.pi * s_edges()[-1] ** 3 / BOX**3
    need, free = pairs * BYTES_PER_PAIR / 2**20, mem_available_mb()
    return 2 * need < free, f"~{pairs / 1e6:.0f} M pairs, ~{need:.0f} MB needed, {free:.0f} MB available"


def table(label: str, n: int, with_baseline: bool, missing: str | None, rounds: int) -> None:
    import torch

    print(f"\n{label}: {n} points in {BOX:.0f} Mpc/h, {load()}", flush=True)
    results = interleaved(cases_for(n, with_baseline, missing is None), rounds)
    base = BASE if with_baseline else OURS
    edges = s_edges()
    report(
        f"DD(s, mu), {label}: {n} points, s {edges[0]:.0f}-{edges[-1]:.0f} Mpc/h in {len(edges) - 1} bins, "
        f"{N_MU} mu bins, median of {rounds} interleaved rounds, torch threads {torch.get_num_threads()}, "
        f"{load()}",
        results,
        base,
    )
    summary(results)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median is reported")
    p.add_argument("--points", type=int, default=3000, help="one-box catalogue (10x: ten times)")
    big = "also time the materialised baseline on 10x (a few GB; checked against MemAvailable)"
    p.add_argument("--materialised-10x", action="store_true", help=big)
    args = p.parse_args()
    print(f"start: {load()}")
    missing = corrfunc_missing()
    if missing:
        print(f"Corrfunc skipped: `import Corrfunc.theory.DDsmu` failed ({missing})")
    table("one box", args.points, True, missing, args.rounds)
    check_exact(args.points)
    if missing is None:
        check_corrfunc(args.points)
    n10 = 10 * args.points
    fits, why = materialised_fits(n10)
    if not args.materialised_10x:
        print(f"\nmaterialised baseline skipped on 10x: needs --materialised-10x ({why})")
    elif not fits:
        print(f"\nmaterialised baseline skipped on 10x: not enough memory ({why})")
    table("10x", n10, args.materialised_10x and fits, missing, args.rounds)
    print(f"\nend: {load()}")


if __name__ == "__main__":
    main()
