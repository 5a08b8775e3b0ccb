"""Velocity reconstruction on held-out mocks: Wu 2021 U-nets against linear theory, over training seeds.

Trains each variant (default `experiment=wu2021`, the paper's density-only U-net, and `experiment=wu2021_hybrid`,
inputs density + velocity_linear with the network predicting the correction to linear theory) on particle-mesh
mocks of 256 Mpc/h, 128^3 cells of 2 Mpc/h, 24 training / 4 validation / 4 test boxes (one store, one split:
data.split.seed is fixed, so the training seeds differ only in initialisation, crop order and augmentation),
with CPU-sized overrides, once per training seed (`seed` = --seed-base + 0 .. --seeds - 1). Each run evaluates
its best checkpoint on the 4 held-out test boxes. Prints, at k = 0.1, 0.3, 0.5, 1.0 h/Mpc, r(k), T(k) and the
error power P_err / P_true = T^2 + 1 - 2 T r of each variant as mean ± std over the seeds, beside linear theory
v = i a H f delta k / k^2 from the same density (deterministic: checked to be identical across the runs), and in
how many seeds each variant beats linear theory; then, at the haloes of the test boxes (per mass bin of the store),
the line-of-sight rms, bias and correlation of the velocity read at the haloes and the halo quadrupole left after
moving the haloes back (`quadrupole_residual`). Exit 0 if a variant's r(k) beats linear theory at every
k >= 0.3 h/Mpc in every seed. Add `data.generate.solver=lpt data.store=data/mocks/wu2021_lpt` for 2LPT mocks.

Run: .venv/bin/python bench/bench_velocity_unet.py [--variants wu2021,wu2021_hybrid] [--seeds 3] [--seed-base 12345]
         [--epochs 10] [--smoke] [extra Hydra overrides]
     about 16 min per seed and variant on 2 CPU cores (16.3 min measured for wu2021), so ~100 min for the default
     2 variants x 3 seeds, plus ~10 min for the 32-box store on first use; --smoke: ~2 min, numbers meaningless
     .venv/bin/python bench/bench_velocity_unet.py --report <dir>/seeds.json    (the seed tables of a run)
     .venv/bin/python bench/bench_velocity_unet.py --report <run>/eval/metrics.json   (the table of one run)
Writes bench/results/velocity_unet_<time>/seeds.json (every per-seed number) beside the runs.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

from _harness import (
    count,
    identical,
    mean_std,
    merge_overrides,
    over_seeds,
    parse_variant_bench,
    train_seed,
    variant_overrides,
)

from lss_lightning.config import REPO_ROOT

SMOKE = [  # 8 PM boxes of 80 Mpc/h on 40^3 cells (2 Mpc/h, as the full run), built once
    "data.store=${paths.data_dir}/mocks/bench_smoke_velocity",
    "data.generate.n_sims=8",
    "data.generate.grid=40",
    "data.generate.box_size=80.0",
    "evaluation.save_predictions=false",
    "evaluation.plots=false",
]


def cpu_overrides(args: argparse.Namespace) -> list[str]:
    return [
        f"model.net.width={4 if args.smoke else 16}",  # the experiment's width 32 is for GPUs
        f"trainer.max_epochs={args.epochs}",
        f"data.train_crops_per_sim={4 if args.smoke else 48}",
        f"+trainer.limit_val_batches={2 if args.smoke else 16}",  # validation is a monitor, not the test
        "data.num_workers=1",
        "callbacks=default",
        "~callbacks.progress_bar",
        *(SMOKE if args.smoke else []),
    ]


def compact(metrics: dict) -> dict:
    """What the tables need of a run's metrics.json (no spectra, no xi(s, mu))."""
    out = {k: metrics[k] for k in ("target", "linear_baseline", "simulations", "source", "box_size", "grid")}
    out |= {"redshift": metrics["redshift"], "report_k": metrics["report_k"], "summary": metrics["summary"]}
    if "halos" in metrics:
        halos = metrics["halos"]
        out["halos"] = {
            "velocities": halos["velocities"],
            "quadrupole_residual": halos["quadrupole_residual"],
            "clustering": {  # the multipoles, not xi(s, mu)
                case: {q: c[q] for q in ("s", "xi0", "xi2")} for case, c in halos["clustering"].items()
            },
        }
    return out


def _err(e: dict) -> float | None:
    return None if e["T"] is None or e["r"] is None else e["T"] ** 2 + 1 - 2 * e["T"] * e["r"]


def table(metrics: dict) -> bool:
    """One run: r(k), T(k) and P_err / P_true of the U-net and linear theory; True if the U-net's r beats linear
    theory at every k >= 0.3 h/Mpc."""
    summary = metrics["summary"]
    print(
        "\n| k [h/Mpc] | r U-net | r linear | T U-net | T linear | P_err/P_true U-net | P_err/P_true linear |"
        "\n|---|---|---|---|---|---|---|"
    )
    ok = True
    for k in metrics["report_k"]:
        u, lin = summary["unet"]["vector"][f"{k:g}"], summary["linear"]["vector"][f"{k:g}"]
        print(
            f"| {k:g} | {mean_std([u['r']])} | {mean_std([lin['r']])} | {mean_std([u['T']])} | "
            f"{mean_std([lin['T']])} | {mean_std([_err(u)])} | {mean_std([_err(lin)])} |"
        )
        if k >= 0.3:
            ok &= u["r"] is not None and lin["r"] is not None and u["r"] > lin["r"]
    print(f"\nU-net beats linear theory in r(k) at every k >= 0.3 h/Mpc: {'yes' if ok else 'NO'}")
    return ok


def seed_tables(runs: dict[str, list[dict]]) -> bool:
    """Mean ± std over seeds of every variant beside linear theory; True if some variant's r beats linear theory
    at every k >= 0.3 h/Mpc in every seed."""
    variants = list(runs)
    first = runs[variants[0]][0]
    n = {v: len(runs[v]) for v in variants}

    def vec(run: dict, label: str, k: float) -> dict:
        return run["summary"][label]["vector"][f"{k:g}"]

    # linear theory does not depend on the training seed; variants with another baseline (velocity_linear as
    # input instead of linear theory from the density) may differ at round-off
    spread_seed = max(
        identical([vec(r, "linear", k)[q] for r in runs[v]])
        for v in variants
        for k in first["report_k"]
        for q in ("r", "T")
    )
    spread_variant = max(
        identical([vec(runs[v][0], "linear", k)[q] for v in variants])
        for k in first["report_k"]
        for q in ("r", "T")
    )
    print(
        f"\nlinear theory ({', '.join(v + ': ' + runs[v][0]['linear_baseline'] for v in variants)}): largest relative "
        f"difference of its r, T across seeds {spread_seed:.1e}, across variants {spread_variant:.1e}"
        + ("" if spread_seed < 1e-4 else "  <- NOT deterministic: check the runs")
        + (
            ""
            if spread_variant < 1e-4
            else "  (the variants' baselines differ: the table shows the first's; 'beats' uses each run's own)"
        )
    )
    print(
        f"\nvelocity r(k), T(k) and P_err/P_true = T^2 + 1 - 2 T r, mean ± std over seeds ({', '.join(f'{v}: {n[v]}' for v in variants)});"
        " linear theory from the first variant's runs; 'beats' = seeds with r above / P_err below linear theory\n"
    )
    cols = ["k [h/Mpc]"]
    for q in ("r", "T", "P_err/P_true"):
        cols += [f"{q} {v}" for v in variants] + [f"{q} linear"]
    cols += [f"beats linear {v} (r / P_err)" for v in variants]
    print("| " + " | ".join(cols) + " |\n" + "|---" * len(cols) + "|")
    wins = {v: True for v in variants}
    for k in first["report_k"]:
        row = [f"{k:g}"]
        for q in ("r", "T", "err"):
            get = _err if q == "err" else (lambda e, q=q: e[q])
            row += [mean_std([get(vec(r, "unet", k)) for r in runs[v]]) for v in variants]
            row.append(mean_std([get(vec(r, "linear", k)) for r in runs[variants[0]]]))
        for v in variants:
            beats_r = [_gt(vec(r, "unet", k)["r"], vec(r, "linear", k)["r"]) for r in runs[v]]
            beats_e = [_gt(_err(vec(r, "linear", k)), _err(vec(r, "unet", k))) for r in runs[v]]
            row.append(f"{count(beats_r)} / {count(beats_e)}")
            if k >= 0.3:
                wins[v] &= all(beats_r)
        print("| " + " | ".join(row) + " |")
    for v in variants:
        print(
            f"{v} beats linear theory in r(k) at every k >= 0.3 h/Mpc in every seed: {'yes' if wins[v] else 'NO'}"
        )
    if "halos" in first:
        halo_table(runs)
    return any(wins.values())


def _gt(a, b) -> bool:
    return a is not None and b is not None and a > b


def halo_table(runs: dict[str, list[dict]], with_3d: bool = False) -> None:
    """Velocities read at the haloes of the test boxes, per mass bin (km/s): line-of-sight rms, bias, (3D rms,)
    correlation, mean ± std over seeds, linear theory beside; and the quadrupole residual. 'beats' counts the
    seeds in which a variant's LOS rms (3D rms) is below / r above linear theory's in the same run."""
    variants = list(runs)
    first = runs[variants[0]][0]
    bins = list(first["halos"]["velocities"]["linear"])
    quantities = [("los_rms", "LOS rms", 0), ("los_bias", "LOS bias", 1)]
    quantities += [("rms_3d", "3D rms", 0)] if with_3d else []
    quantities += [("los_correlation", "r", 3)]
    # (key, name, True if higher is better)
    criteria = [("los_rms", "LOS rms", False)] + ([("rms_3d", "3D rms", False)] if with_3d else [])
    criteria += [("los_correlation", "r", True)]
    spread = max(
        identical([r["halos"]["velocities"]["linear"][b].get(key) for r in runs[v]])
        for v in variants
        for b in bins
        for key, _, _ in quantities
    )
    print(
        "\nvelocities at the haloes [km/s], mean ± std over seeds; linear theory from the first variant's runs "
        f"(largest relative difference across seeds {spread:.1e})\n"
    )
    cols = ["mass bin [Msun/h]", "haloes", "true v_los rms"]
    for _, name, _ in quantities:
        cols += [f"{name} {v}" for v in variants] + [f"{name} linear"]
    cols += [f"beats linear {v} ({' / '.join(c[1] for c in criteria)})" for v in variants]
    print("| " + " | ".join(cols) + " |\n" + "|---" * len(cols) + "|")
    every: dict[str, dict[str, list[str]]] = {v: {name: [] for _, name, _ in criteria} for v in variants}
    for b in bins:
        lin0 = first["halos"]["velocities"]["linear"][b]
        if not lin0.get("n_halos"):
            print(f"| {b.removesuffix(' Msun/h')} | 0 |" + " - |" * (len(cols) - 2))
            continue
        row = [b.removesuffix(" Msun/h"), str(lin0["n_halos"]), f"{lin0['true_los_rms']:.0f}"]
        for key, _, digits in quantities:
            row += [
                mean_std([r["halos"]["velocities"]["unet"][b].get(key) for r in runs[v]], digits)
                for v in variants
            ]
            row.append(
                mean_std([r["halos"]["velocities"]["linear"][b].get(key) for r in runs[variants[0]]], digits)
            )
        for v in variants:
            vel = [
                (r["halos"]["velocities"]["unet"][b], r["halos"]["velocities"]["linear"][b]) for r in runs[v]
            ]
            cells = []
            for key, name, higher in criteria:
                flags = [
                    _gt(u.get(key), lo.get(key)) if higher else _gt(lo.get(key), u.get(key)) for u, lo in vel
                ]
                cells.append(count(flags))
                if all(flags):
                    every[v][name].append(b.removesuffix(" Msun/h"))
            row.append(" / ".join(cells))
        print("| " + " | ".join(row) + " |")
    for v in variants:
        print(
            f"{v} beats linear theory in every seed: "
            + "; ".join(
                f"{name} in {', '.join(bs) if bs else 'no mass bin'}" for name, bs in every[v].items()
            )
        )
    qr = {v: [r["halos"]["quadrupole_residual"]["unet"] for r in runs[v]] for v in variants}
    parts = []
    for v in variants:
        lin_v = [r["halos"]["quadrupole_residual"]["linear"] for r in runs[v]]
        below = count(_gt(lo, u) for lo, u in zip(lin_v, qr[v], strict=True))
        parts.append(f"{v} {mean_std(qr[v])} (below linear theory in {below} seeds)")
    lin = [r["halos"]["quadrupole_residual"]["linear"] for r in runs[variants[0]]]
    print(
        "\nhalo xi_2 left after moving the haloes back (quadrupole_residual; 0 = real space restored, 1 = none): "
        + ", ".join(parts)
        + f"; linear theory {mean_std(lin)}"
    )


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    return parse_variant_bench(
        argv,
        __doc__,
        "wu2021,wu2021_hybrid",
        10,
        "print the tables of a seeds.json or of one run's metrics.json",
    )


def main(argv: list[str]) -> int:
    args, extra = parse(argv)
    if args.report:
        data = json.loads(Path(args.report).read_text())
        return 0 if (seed_tables(data["runs"]) if "runs" in data else table(data)) else 1
    out = REPO_ROOT / "bench" / "results" / f"velocity_unet_{time.strftime('%Y%m%d-%H%M%S')}"
    seeds = [args.seed_base + i for i in range(args.seeds)]

    def run(variant: str, seed: int) -> dict:
        run_dir = out / f"{variant}_seed{seed}"
        overrides = merge_overrides(variant_overrides(variant), cpu_overrides(args), extra, [f"seed={seed}"])
        metrics = train_seed(run_dir, overrides)
        return {"seed": seed, "overrides": overrides, "dir": str(run_dir), **compact(metrics)}

    start = time.perf_counter()
    results = over_seeds(args.variants.split(","), seeds, run)
    minutes = (time.perf_counter() - start) / 60
    runs = {v: list(by_seed.values()) for v, by_seed in results.items()}
    out.mkdir(parents=True, exist_ok=True)
    (out / "seeds.json").write_text(
        json.dumps(
            {"command": ["bench/bench_velocity_unet.py", *argv], "seeds": seeds, "runs": runs}, indent=1
        )
    )
    first = runs[next(iter(runs))][0]
    print(
        f"\nvelocity reconstruction on {len(first['simulations'])} held-out {first['source']} boxes "
        f"({first['box_size']:g} Mpc/h, {first['grid']}^3, z = {first['redshift']:g}); {len(seeds)} seeds "
        f"{seeds} x {len(runs)} variants, {args.epochs} epochs; total {minutes:.1f} min "
        f"({minutes / (len(seeds) * len(runs)):.1f} per run), peak RSS "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
    )
    for v in runs:
        print(f"{v}: {' '.join(o for o in runs[v][0]['overrides'] if not o.startswith('seed='))}")
    ok = seed_tables(runs)
    print(f"\nper-seed numbers: {out / 'seeds.json'} (reprint: --report); runs, metrics and plots: {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
