"""Parameter estimation on one Latin-hypercube mock set: field networks against summary baselines.

Builds (or reuses) one Latin-hypercube store of mocks (particle mesh by default; ``--solver lpt`` for 2LPT)
and trains, on identical splits, crops, loss (moment network), optimiser and evaluation:

    cnn            3D CNN (model=cnn3d, preset cnn3d: four k3 s2 convolutions, global average pool)
    efficientnet   3D EfficientNet-B0 (model=efficientnet3d)
    vit            3D ViT (model=vit3d, preset vit3d_tiny with 8^3-cell patches)
    pk             MLP on each crop's P(k) (model=summary_mlp, summaries=[power_spectrum])
    xi_0_130       MLP on xi(r) over [0, 0.5] of the crop side (Pan et al.'s s in (0, 130) of 256 Mpc/h)
    xi_10_130      MLP on xi(r) over [0.04, 0.5] (Pan et al.'s s in (10, 130))

each once per training seed (`seed` = --seed-base + 0 .. --seeds - 1; the store and the split of simulations are
the same for every seed, so the seeds differ only in initialisation, crop order and augmentation). EfficientNet
is left out unless --efficientnet (depthwise 3D convolutions are slow on CPUs). Prints, per parameter, each
model's mean relative error, RMSE and R^2 on the held-out boxes as mean ± std over the seeds; the ratios
CNN / P(k), CNN / xi(r), ViT / CNN (EfficientNet / CNN) of the relative error and the RMSE, computed per seed and
then averaged, with the number of seeds that keep the ordering; the 68% / 95% coverage of the moment network's
sigma and of the flow posterior on the test sub-volumes; and per model the parameters, seconds per training epoch
and training samples per second. Passes if the CNN beats the P(k) baseline on Omega_m and sigma_8 in every seed.

Run: .venv/bin/python bench/bench_params.py [--solver lpt] [--epochs 15] [--models cnn,pk] [--efficientnet]
         [--seeds 3] [--seed-base 12345] [--smoke]
     per seed on 2 cores (README's PM run, idle machine, 15 epochs): ~6 min without EfficientNet (CNN ~1.7, ViT
     ~2.2, each MLP ~0.5 min, + evaluation), ~10.4 min with --efficientnet (4 epochs of ~64 s); so ~18 min for the
     default 3 seeds (~31 with EfficientNet), + ~5 min for the PM store once. --solver lpt: 23.4 min per seed with
     EfficientNet on shared cores. --smoke: 16 boxes of 32^3, 1 epoch, 2 seeds, ~2 min, numbers meaningless.
     .venv/bin/python bench/bench_params.py --report <dir>/seeds.json    (the tables of a run)
Writes bench/results/params_<solver>_<time>/seeds.json (every per-seed number) beside the runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from _harness import add_seed_args, count, mean_std, over_seeds
from hydra import compose, initialize_config_dir

from lss_lightning.config import CONF_DIR, REPO_ROOT
from lss_lightning.run import train

MODELS = {
    "cnn": ["model=cnn3d", "model.net.name=cnn3d", "model.net.dropout=0.0"],
    "efficientnet": ["model=efficientnet3d", "model.net.name=efficientnet3d_b0"],
    "vit": [
        "model=vit3d",
        "model.net.name=vit3d_tiny",
        "+model.net.patch_size=8",
        "model.net.drop_path_rate=0.0",
    ],
    "pk": ["model=summary_mlp", "model.summaries=[power_spectrum]"],
    "xi_0_130": ["model=summary_mlp", "model.summaries=[correlation_function]", "model.xi_range=[0.0,0.5]"],
    "xi_10_130": ["model=summary_mlp", "model.summaries=[correlation_function]", "model.xi_range=[0.04,0.5]"],
}
BASELINES = ("pk", "xi_0_130", "xi_10_130")
# (numerator, denominator) of the ratios of errors: below 1, the numerator is better
PAIRS = (("cnn", "pk"), ("cnn", "xi_0_130"), ("cnn", "xi_10_130"), ("vit", "cnn"), ("efficientnet", "cnn"))


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--solver", choices=("pm", "lpt"), default="pm", help="mock dynamics (pm needs the PM merge)"
    )
    p.add_argument("--n-sims", type=int, default=128)
    p.add_argument("--grid", type=int, default=64, help="cells (and particles) per side")
    p.add_argument("--box", type=float, default=256.0, help="Mpc/h")
    p.add_argument("--redshift", type=float, default=0.0)
    p.add_argument("--pm-steps", type=int, default=10)
    p.add_argument("--crop", type=int, default=32, help="sub-volume side, cells")
    p.add_argument("--targets", default="Omega_m,sigma_8")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument(
        "--efficientnet-epochs",
        type=int,
        default=4,
        help="depthwise 3D convolutions are slow on CPUs: fewer epochs",
    )
    p.add_argument("--crops-per-sim", type=int, default=16, help="random training crops per box and epoch")
    p.add_argument("--models", default=",".join(m for m in MODELS if m != "efficientnet"))
    p.add_argument(
        "--efficientnet", action="store_true", help="add EfficientNet-3D-b0 to --models (slow on CPUs)"
    )
    p.add_argument("--store", default=None, help="default: data/mocks/bench_params_<solver>_<n>x<grid>")
    p.add_argument(
        "--seed", type=int, default=7, help="master seed of the mock store (not the training seed)"
    )
    p.add_argument("--report", default=None, help="print the tables of a seeds.json")
    add_seed_args(p)
    args = p.parse_args(argv)
    if args.efficientnet and "efficientnet" not in args.models.split(","):
        args.models += ",efficientnet"
    if args.smoke:  # the whole code path in a few minutes: tiny store, 1 epoch, 2 seeds
        args.n_sims, args.grid, args.box, args.crop, args.pm_steps = 16, 32, 128.0, 16, 5
        args.epochs, args.efficientnet_epochs, args.crops_per_sim = 1, 1, 2
        args.seeds = min(args.seeds, 2)
    return args


def data_overrides(args: argparse.Namespace, store: Path) -> list[str]:
    generate = [
        f"data.generate.n_sims={args.n_sims}",
        f"data.generate.grid={args.grid}",
        f"data.generate.particles={args.grid}",
        f"data.generate.box_size={args.box}",
        f"data.generate.redshift={args.redshift}",
        f"data.generate.seed={args.seed}",
        "data.generate.fields=[density]",
        "data.generate.prior=quijote_lh",
    ]
    if args.solver == "pm":
        base = ["data=pm_lh", f"data.generate.pm.steps={args.pm_steps}"]
    else:
        base = ["data=mocks_lh", "data.generate.solver=lpt", "data.generate.power=eh"]
    return [
        *base,
        *generate,
        f"data.store={store}",
        "data.inputs=[density]",
        f"data.targets=[{args.targets}]",
        f"data.crop={args.crop}",
        "data.pad=0",
        "data.batch_size=16",
        "data.num_workers=1",
        f"data.train_crops_per_sim={args.crops_per_sim}",
        "data.split={train: 0.75, val: 0.125, test: 0.125, seed: 0}",
    ]


def run_model(name: str, seed: int, args: argparse.Namespace, store: Path, out: Path) -> dict:
    run_dir = out / f"{name}_seed{seed}"
    overrides = [
        *MODELS[name],
        *data_overrides(args, store),
        f"trainer.max_epochs={args.efficientnet_epochs if name == 'efficientnet' else args.epochs}",
        "model.loss=moment",
        "model.optimizer.lr=1.0e-3",
        "callbacks=default",
        "~callbacks.progress_bar",
        "~callbacks.model_summary",
        "evaluation.posterior.enabled=true",
        "evaluation.attention=true",
        *(["evaluation.posterior.epochs=5", "evaluation.posterior.samples=100"] if args.smoke else []),
        f"seed={seed}",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*overrides, f"paths.output_dir={run_dir}"])
    train(cfg)
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    metrics = {k: v for k, v in metrics.items() if k != "per_simulation"}
    metrics |= {"_epochs": cfg.trainer.max_epochs, "_overrides": overrides, "seed": seed, "dir": str(run_dir)}
    return metrics


def _f(x, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _get(run: dict, *keys):
    for k in keys:
        if not isinstance(run, dict) or k not in run:
            return None
        run = run[k]
    return run


def _ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def report(runs: dict[str, list[dict]], names: list[str]) -> bool:
    """runs: {model: [metrics of each seed]} (the same seeds, in the same order, for every model)."""
    models = list(runs)
    n = len(runs[models[0]])
    print(f"\nErrors of the box estimates on the test boxes, mean ± std over {n} seeds\n")
    print("| parameter | metric | " + " | ".join(models) + " |\n|---|---|" + "---|" * len(models))
    for p in names:
        for key, label, digits in (
            ("relative_error", "mean relative error", 4),
            ("rmse", "RMSE", 4),
            ("r2", "R^2", 3),
        ):
            cells = [mean_std([r["summary"][p][key] for r in runs[m]], digits) for m in models]
            print(f"| {p} | {label} | " + " | ".join(cells) + " |")
    print(
        "\nRatios of errors a / b per seed, then mean ± std over the seeds (below 1: a is better), and the seeds in "
        "which a < b\n"
    )
    print(
        "| parameter | a / b | relative error ratio | seeds a < b | RMSE ratio | seeds a < b |\n|---|---|---|---|---|---|"
    )
    for p in names:
        for a, b in PAIRS:
            if a not in runs or b not in runs:
                continue
            cells = []
            for key in ("relative_error", "rmse"):
                ra = [r["summary"][p][key] for r in runs[a]]
                rb = [r["summary"][p][key] for r in runs[b]]
                ratios = [_ratio(x, y) for x, y in zip(ra, rb, strict=True)]
                cells += [
                    mean_std(ratios, 2),
                    count(x is not None and y is not None and x < y for x, y in zip(ra, rb, strict=True)),
                ]
            print(f"| {p} | {a} / {b} | " + " | ".join(cells) + " |")
    print(
        "\nCoverage on the test sub-volumes, 68% / 95%, mean over seeds: moment network sigma | flow posterior; "
        "TARP p (mean over seeds)\n"
    )
    print(
        "| model | parameter | moment 68 / 95 | flow 68 / 95 | TARP p (moment, flow) |\n|---|---|---|---|---|"
    )
    for m in models:
        for p in names:
            cal = [_get(r, "calibration", "parameters", p) or {} for r in runs[m]]
            flow = [_get(r, "posterior", "calibration", "parameters", p) or {} for r in runs[m]]
            tarp = [
                mean_std([_get(r, *path, "tarp", "p_value") for r in runs[m]], 3)
                for path in (("calibration",), ("posterior", "calibration"))
            ]
            print(
                f"| {m} | {p} | {mean_std([c.get('coverage_68') for c in cal], 2)} / "
                f"{mean_std([c.get('coverage_95') for c in cal], 2)} | {mean_std([f.get('coverage_68') for f in flow], 2)} / "
                f"{mean_std([f.get('coverage_95') for f in flow], 2)} | {tarp[0]}, {tarp[1]} |"
            )
    print(
        "\n| model | parameters | epochs | s / epoch (median; fastest), mean ± std over seeds | train samples / s "
        "| eval samples / s | train + eval min per seed |\n|---|---|---|---|---|---|---|"
    )
    for m in models:
        rm = [r["model"] for r in runs[m]]
        print(
            f"| {m} | {rm[0]['parameters']:,} | {runs[m][0]['_epochs']} | "
            f"{mean_std([r['seconds_per_epoch'] for r in rm], 1)}; {mean_std([r.get('fastest_seconds_per_epoch') for r in rm], 1)} | "
            f"{mean_std([r['train_samples_per_second'] for r in rm], 0)} | "
            f"{mean_std([r['eval_samples_per_second'] for r in rm], 0)} | {mean_std([r['_minutes'] for r in runs[m]], 1)} |"
        )
    if "cnn" not in runs or "pk" not in runs:
        return True
    wins = {
        p: [
            c["summary"][p]["relative_error"] < k["summary"][p]["relative_error"]
            for c, k in zip(runs["cnn"], runs["pk"], strict=True)
        ]
        for p in ("Omega_m", "sigma_8")
        if p in names
    }
    ok = all(all(w) for w in wins.values())
    print(
        "\nCNN beats the P(k) baseline (mean relative error), seeds: "
        + ", ".join(f"{p} {count(w)}" for p, w in wins.items())
        + f" -> {'yes, in every seed' if ok else 'NO'}"
    )
    return ok


def main(argv: list[str]) -> int:
    args = parse(argv)
    names = [t.strip() for t in args.targets.split(",")]
    if args.report:
        data = json.loads(Path(args.report).read_text())
        return 0 if report(data["runs"], data["targets"]) else 1
    store = (
        Path(args.store)
        if args.store
        else REPO_ROOT / "data" / "mocks" / f"bench_params_{args.solver}_{args.n_sims}x{args.grid}"
    )
    out = REPO_ROOT / "bench" / "results" / f"params_{args.solver}_{time.strftime('%Y%m%d-%H%M%S')}"
    seeds = [args.seed_base + i for i in range(args.seeds)]
    start = time.perf_counter()
    results = over_seeds(
        args.models.split(","), seeds, lambda name, seed: run_model(name, seed, args, store, out)
    )
    minutes = (time.perf_counter() - start) / 60
    runs = {m: list(by_seed.values()) for m, by_seed in results.items()}
    first = runs[next(iter(runs))][0]
    print(
        f"\n{args.n_sims} {args.solver.upper()} boxes of {args.box:g} Mpc/h, {args.grid}^3 cells, z = {args.redshift:g}; "
        f"{args.crop}^3 sub-volumes; {len(first['simulations'])} test boxes; "
        f"{args.epochs} epochs ({args.efficientnet_epochs} for EfficientNet) x {args.crops_per_sim} random crops "
        f"per training box; {len(seeds)} seeds {seeds}; total {minutes:.1f} min ({minutes / len(seeds):.1f} per seed)"
    )
    print(f"command: bench/bench_params.py {' '.join(argv)}")
    ok = report(runs, names)
    out.mkdir(parents=True, exist_ok=True)
    (out / "seeds.json").write_text(
        json.dumps(
            {"command": ["bench/bench_params.py", *argv], "seeds": seeds, "targets": names, "runs": runs},
            indent=1,
        )
    )
    print(f"\nper-seed numbers: {out / 'seeds.json'} (reprint: --report); runs and metrics: {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    sys.exit(main(sys.argv[1:]))
