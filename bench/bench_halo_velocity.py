"""Wu et al. 2023 on particle-mesh haloes over training seeds: velocities at the haloes, redshift-space correction.

Trains each variant (default `experiment=wu2023`, the paper's setup, and `experiment=wu2023_hybrid`, the network
predicting the correction to velocity_linear_halos_rsd with a halo-weighted loss) on 24 PM boxes of 250 Mpc/h with
128^3 particles, FoF haloes in six mass bins, redshift space, 90^3 cells (18 training / 3 validation / 3 test
boxes; one store, one split, so the seeds differ only in initialisation, crop order and augmentation), with
CPU-sized overrides, once per training seed (`seed` = --seed-base + 0 .. --seeds - 1). Evaluates on the held-out
boxes at the haloes: per mass bin the rms and bias of the line-of-sight velocity residual, the 3D rms and the
correlation of v_los, mean ± std over seeds, for each variant and for linear theory from the haloes (divided by
the haloes' linear bias, measured once from the training boxes as sqrt(P_hh / P_mm) at k < 0.1 h/Mpc), with the
seeds in which each variant beats linear theory; and the halo multipoles xi_0, xi_2 at s = 10-40 Mpc/h in real
space, redshift space and moved back by each, with the quadrupole residual.

Run: .venv/bin/python bench/bench_halo_velocity.py [--variants wu2023,wu2023_hybrid] [--seeds 3] [--seed-base 12345]
         [--epochs 30] [--smoke] [extra Hydra overrides]
     about 17 min per seed and variant on 2 CPU cores (17.1 min measured for wu2023 at 30 epochs), so ~105 min for
     the default 2 variants x 3 seeds, plus ~8 min for the store on first use; --smoke: ~2 min, numbers meaningless
     .venv/bin/python bench/bench_halo_velocity.py --report <dir>/seeds.json    (the seed tables of a run)
Writes bench/results/halo_velocity_<time>/seeds.json (every per-seed number) beside the runs. The store
(data/mocks/wu2023_pm_bench) also holds halo_mass_rsd, wu2023_hybrid's loss weights, and the matter density.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
from _harness import mean_std, merge_overrides, over_seeds, parse_variant_bench, train_seed, variant_overrides
from bench_velocity_unet import compact, halo_table
from hydra import compose, initialize_config_dir

from lss_lightning.config import CONF_DIR, REPO_ROOT
from lss_lightning.run.assemble import build_data

# + the matter density for the bias; halo_mass_rsd for wu2023_hybrid's halo-weighted loss
FIELDS = "data.generate.fields=[halos_rsd,velocity_linear_halos_rsd,halo_velocity_rsd,halo_mass_rsd,density]"
SMOKE = [  # 8 PM boxes of 108.4 Mpc/h, 56^3 particles (the full run's mass resolution), 39^3 cells of 2.78 Mpc/h
    "data.store=${paths.data_dir}/mocks/bench_smoke_halo_velocity",
    "data.generate.n_sims=8",
    "data.generate.grid=39",
    "data.generate.particles=56",
    "data.generate.box_size=108.4",
    "data.generate.allow_empty_bins=true",
    "data.crop=13",  # 19^3 -> 13^3, the wu2023 U-net's smallest crop with pad 3 above 9
    "evaluation.save_predictions=false",
    "evaluation.plots=false",
]
S_REPORT = (10.0, 20.0, 30.0, 40.0)


def cpu_overrides(args: argparse.Namespace) -> list[str]:
    return [
        f"model.net.width={4 if args.smoke else 8}",  # the experiment's width 16 is for GPUs
        f"trainer.max_epochs={args.epochs}",
        f"data.train_crops_per_sim={4 if args.smoke else 12}",
        f"+trainer.limit_val_batches={2 if args.smoke else 8}",
        "data.num_workers=1",
        FIELDS,
        "data.store=${paths.data_dir}/mocks/wu2023_pm_bench",
        "callbacks=default",
        "~callbacks.progress_bar",
        *(SMOKE if args.smoke else []),
    ]


def halo_bias(store_root: str, sims: list[str]) -> float:
    """Linear bias of all haloes in the bins: sqrt(P_hh / P_mm) over k < 0.1 h/Mpc, real space."""
    import torch

    from lss_lightning.fields.mesh import cic_paint
    from lss_lightning.fields.spectra import power_spectrum
    from lss_lightning.fields.tracers import in_any_bin
    from lss_lightning.store.reader import FieldStore
    from lss_lightning.store.schema import parse_mass_bins

    store = FieldStore(store_root)
    bins = parse_mass_bins(store.manifest["generator"]["mass_bins"])
    ratios = []
    for sim in sims:
        cat = store.read_halos(sim)
        keep = in_any_bin(bins, cat.masses)
        counts = cic_paint(torch.from_numpy(cat.positions[keep]), store.grid, store.box_size)
        halo = power_spectrum(counts / counts.mean() - 1, store.box_size)
        matter = power_spectrum(torch.from_numpy(store.read(sim, "density")[0]), store.box_size)
        low = halo.k < 0.1
        ratios.append(np.sum(halo.power[low] - store.box_size**3 / keep.sum()) / np.sum(matter.power[low]))
    return float(np.sqrt(np.mean(ratios)))


def tables(runs: dict[str, list[dict]]) -> None:
    variants = list(runs)
    halo_table(runs, with_3d=True)
    first = runs[variants[0]][0]["halos"]["clustering"]
    s = np.asarray(first["real space"]["s"])
    cases = ["real", "redshift", *variants, "linear"]
    print(
        "\nhalo multipoles s^2 xi_l [(Mpc/h)^2], summed over the test boxes: real space, redshift space, moved back "
        "by each variant (mean ± std over seeds) / linear theory (first variant's runs)"
    )
    print("| s [Mpc/h] | " + " | ".join(f"xi_{ell} {c}" for ell in (0, 2) for c in cases) + " |")
    print("|---" * (1 + 2 * len(cases)) + "|")
    for target in S_REPORT:
        j = int(np.argmin(np.abs(s - target)))
        row = []
        for ell in (0, 2):
            for case in cases:
                key = {"real": "real space", "redshift": "redshift space", "linear": "linear"}.get(
                    case, "unet"
                )
                source = runs[variants[0]] if case in ("real", "redshift", "linear") else runs[case]
                row.append(
                    mean_std([s[j] ** 2 * r["halos"]["clustering"][key][f"xi{ell}"][j] for r in source], 1)
                )
        print(f"| {s[j]:.1f} | " + " | ".join(row) + " |")


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    return parse_variant_bench(argv, __doc__, "wu2023,wu2023_hybrid", 30, "print the tables of a seeds.json")


def main(argv: list[str]) -> int:
    args, extra = parse(argv)
    if args.report:
        tables(json.loads(Path(args.report).read_text())["runs"])
        return 0
    out = REPO_ROOT / "bench" / "results" / f"halo_velocity_{time.strftime('%Y%m%d-%H%M%S')}"
    variants = args.variants.split(",")
    seeds = [args.seed_base + i for i in range(args.seeds)]
    start = time.perf_counter()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        overrides = merge_overrides(variant_overrides(variants[0]), cpu_overrides(args), extra)
        cfg = compose(config_name="train", overrides=[*overrides, f"paths.output_dir={out}"])
    dm = build_data(cfg)  # builds the store first, so the haloes' bias is measured on the training boxes
    store_minutes = (time.perf_counter() - start) / 60
    bias = halo_bias(str(dm.store_root), dm.splits["train"])

    def run(variant: str, seed: int) -> dict:
        run_dir = out / f"{variant}_seed{seed}"
        overrides = merge_overrides(variant_overrides(variant), cpu_overrides(args), extra, [f"seed={seed}"])
        overrides.append(f"evaluation.linear_bias={bias:.3f}")
        metrics = train_seed(run_dir, overrides)
        return {"seed": seed, "overrides": overrides, "dir": str(run_dir), **compact(metrics)}

    start = time.perf_counter()
    results = over_seeds(variants, seeds, run)
    minutes = (time.perf_counter() - start) / 60
    runs = {v: list(by_seed.values()) for v, by_seed in results.items()}
    out.mkdir(parents=True, exist_ok=True)
    (out / "seeds.json").write_text(
        json.dumps(
            {
                "command": ["bench/bench_halo_velocity.py", *argv],
                "seeds": seeds,
                "halo_bias": bias,
                "runs": runs,
            },
            indent=1,
        )
    )
    first = runs[variants[0]][0]
    print(
        f"\nWu 2023 on {len(first['simulations'])} held-out {first['source']} boxes ({first['box_size']:g} Mpc/h, "
        f"{first['grid']}^3, z = {first['redshift']:g}); {len(seeds)} seeds {seeds} x {len(variants)} variants, "
        f"{args.epochs} epochs; store {store_minutes:.1f} min, train + eval {minutes:.1f} min "
        f"({minutes / (len(seeds) * len(variants)):.1f} per run), peak RSS "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB; halo bias {bias:.2f}"
    )
    for v in variants:
        print(f"{v}: {' '.join(o for o in runs[v][0]['overrides'] if not o.startswith('seed='))}")
    tables(runs)
    print(f"\nper-seed numbers: {out / 'seeds.json'} (reprint: --report); runs, metrics and plots: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
