"""Quijote conversion throughput: a synthetic 256^3-particle snapshot over 8 Blosc files -> CIC grids.

The snapshot is written in Quijote's layout (lss_lightning.data.quijote.synthetic) to a temporary
folder. Each mode then runs in a fresh subprocess, so its peak resident memory (ru_maxrss) is its own
(the parent imports only the standard library: Linux carries a parent's peak into a forked child's
ru_maxrss, so a heavy parent would inflate every row):
  import only     python + torch + the package imported: the floor every other mode pays
  read only       stream and decode all files (Blosc), no painting
  streaming       what the converter does: file by file in slices of chunk particles -> ParticleGridder
  all in memory   baseline: read all 8 files at once, concatenate, paint in one call
  converter       convert_store end to end (streaming + finalise + writing the store file)
Throughput is particles / wall time of the mode's work (imports excluded).

    python bench/bench_quijote_conversion.py [--particles-per-side 256] [--grid 128] [--files 8] [--threads T]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FIELDS = ["density", "velocity", "momentum", "density_rsd"]
MODES = ("import only", "read only", "streaming", "all in memory", "converter")
BOX, REDSHIFT, SNAPNUM = 1000.0, 0.0, 4


def snapshot_base(root: Path) -> Path:
    return root / f"Snapshots/fiducial/0/snapdir_{SNAPNUM:03d}/snap_{SNAPNUM:03d}"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def write_snapshot(root: Path, n: int, n_files: int) -> dict:
    """Runs inside a child process, so the parent stays small."""
    from lss_lightning.data.quijote.synthetic import write_random_snapshot

    start = time.perf_counter()
    paths = write_random_snapshot(snapshot_base(root), n, box_size=BOX, n_files=n_files, redshift=REDSHIFT)
    return {"seconds": time.perf_counter() - start, "mb": sum(p.stat().st_size for p in paths) / 2**20}


def run_mode(mode: str, root: Path, grid: int, chunk: int, threads: int | None) -> dict:
    """Runs inside the child process; returns seconds, particles and peak memory."""
    import numpy as np
    import torch

    if threads:
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()

    from lss_lightning.cosmology import Cosmology
    from lss_lightning.data.quijote import GadgetSnapshot, QuijoteConfig, convert_store, grid_snapshot
    from lss_lightning.fields.particles import ParticleGridder

    a_h = Cosmology().a_h(REDSHIFT)
    start = time.perf_counter()
    n = 0
    if mode == "read only":
        snap = GadgetSnapshot(snapshot_base(root))
        for part in snap.iter_particles([1], chunk):
            n += len(part.positions)
    elif mode == "streaming":
        snap = GadgetSnapshot(snapshot_base(root))
        grid_snapshot(snap, FIELDS, grid=grid, a_h=a_h, chunk=chunk)
        n = snap.count([1])
    elif mode == "all in memory":
        snap = GadgetSnapshot(snapshot_base(root))
        parts = list(snap.iter_particles([1], chunk=2**40))  # one slice per file = whole files
        pos = torch.from_numpy(np.concatenate([p.positions for p in parts]))
        vel = torch.from_numpy(np.concatenate([p.velocities for p in parts]))
        del parts
        gridder = ParticleGridder(grid, BOX, FIELDS, a_h=a_h)
        gridder.add(pos, vel, snap.header.mass_table[1])
        gridder.finalise()
        n = len(pos)
    elif mode == "converter":
        cfg = QuijoteConfig(
            store=str(root / "store"),
            root=str(root),
            set_name="fiducial",
            n_sims=1,
            redshift=REDSHIFT,
            box_size=BOX,
            grid=grid,
            fields=FIELDS,
            chunk_particles=chunk,
        )
        convert_store(cfg, progress=False)
        n = GadgetSnapshot(snapshot_base(root)).count([1])
    seconds = time.perf_counter() - start
    return {
        "mode": mode,
        "seconds": seconds,
        "particles": n,
        "peak_mb": peak_rss_mb(),
        "threads": threads,
        "torch": torch.__version__,
    }


def child(mode: str, root: Path, *options: str) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--root", str(root), *options]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--particles-per-side", type=int, default=256)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--grid", type=int, default=128)
    parser.add_argument("--chunk", type=int, default=2**21, help="particles painted at once when streaming")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--child", choices=(*MODES, "write"), help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    n = args.particles_per_side**3
    if args.child == "write":
        print(json.dumps(write_snapshot(args.root, n, args.files)))
        return
    if args.child:
        print(json.dumps(run_mode(args.child, args.root, args.grid, args.chunk, args.threads)))
        return

    options = ["--grid", str(args.grid), "--chunk", str(args.chunk)] + (
        ["--threads", str(args.threads)] if args.threads else []
    )
    with tempfile.TemporaryDirectory(prefix="bench_quijote_") as tmp:
        root = Path(tmp)
        written = child(
            "write", root, "--particles-per-side", str(args.particles_per_side), "--files", str(args.files)
        )
        print(
            f"synthetic snapshot: {args.particles_per_side}^3 = {n:,} particles in {args.files} Blosc/zstd files, "
            f"{written['mb']:.0f} MB, written in {written['seconds']:.1f} s"
        )
        load = os.getloadavg()[0]
        results = {mode: child(mode, root, *options) for mode in MODES}
    print(
        f"grid {args.grid}^3, fields {FIELDS}, streaming slices of {args.chunk:,} particles, "
        f"torch {results['streaming']['torch']} on {results['streaming']['threads']} of {os.cpu_count()} CPU threads, "
        f"load average {load:.2f} before the runs"
    )

    floor = results["import only"]["peak_mb"]
    print(f"\n{'mode':<15} {'seconds':>8} {'Mparticles/s':>13} {'peak RSS MB':>12} {'above import':>13}")
    for mode, r in results.items():
        rate = f"{r['particles'] / r['seconds'] / 1e6:13.2f}" if r["particles"] else f"{'-':>13}"
        seconds = f"{r['seconds']:8.2f}" if r["particles"] else f"{'-':>8}"
        print(f"{mode:<15} {seconds} {rate} {r['peak_mb']:12.0f} {r['peak_mb'] - floor:13.0f}")
    stream, base = results["streaming"], results["all in memory"]
    print(
        f"\nstreaming vs all-in-memory baseline: time x{stream['seconds'] / base['seconds']:.2f}, "
        f"peak memory above import x{(stream['peak_mb'] - floor) / (base['peak_mb'] - floor):.2f}"
    )


if __name__ == "__main__":
    main()
