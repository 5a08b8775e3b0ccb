"""Parameter estimation on one Latin-hypercube mock set: field networks against summary baselines.

Builds (or reuses) one Latin-hypercube store of mocks (particle mesh by default; ``--solver lpt`` for 2LPT)
and trains, on identical splits, crops, loss (moment network), optimiser and evaluation:

    cnn            3D CNN (model=cnn3d, preset cnn3d: four k3 s2 convolutions, global average pool)
    efficientnet   3D EfficientNet-B0 (model=efficientnet3d)
    vit            3D ViT (model=vit3d, preset vit3d_tiny with 8^3-cell patches)
    pk             MLP on each crop's P(k) (model=summary_mlp, summaries=[power_spectrum])
    xi_0_130       MLP on xi(r) over [0, 0.5] of the crop side (Pan et al.'s s in (0, 130) of 256 Mpc/h)
    xi_10_130      MLP on xi(r) over [0.04, 0.5] (Pan et al.'s s in (10, 130))

and prints, per parameter, each model's mean relative error on the held-out boxes and its ratio to the CNN's,
the 68% / 95% coverage of the moment network's sigma and of the flow posterior on the test sub-volumes,
and per model the parameters, seconds per training epoch and training samples per second. Passes if the
CNN beats the P(k) baseline on Omega_m and sigma_8.

Run: .venv/bin/python bench/bench_params.py [--solver lpt] [--epochs 15] [--models cnn,pk]   (<= 60 min on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
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
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--store", default=None, help="default: data/mocks/bench_params_<solver>_<n>x<grid>")
    p.add_argument("--seed", type=int, default=7)
    return p.parse_args(argv)


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


def run_model(name: str, args: argparse.Namespace, store: Path, out: Path) -> dict:
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
        f"paths.output_dir={out / name}",
        "seed=12345",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    start = time.perf_counter()
    train(cfg)
    metrics = json.loads((out / name / "eval" / "metrics.json").read_text())
    metrics["_minutes"] = (time.perf_counter() - start) / 60
    metrics["_epochs"] = cfg.trainer.max_epochs
    metrics["_overrides"] = overrides
    return metrics


def _f(x, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def report(results: dict[str, dict], names: list[str]) -> bool:
    models = list(results)
    print("\nMean relative error |pred - true| / true on the test boxes (ratio to the CNN in brackets)\n")
    print("| parameter | " + " | ".join(models) + " |\n|---|" + "---|" * len(models))
    for p in names:
        cnn = results.get("cnn", {}).get("summary", {}).get(p, {}).get("relative_error")
        cells = []
        for m in models:
            e = results[m]["summary"][p]["relative_error"]
            cells.append(f"{e:.4f}" + (f" ({e / cnn:.2f}x)" if cnn and m != "cnn" else ""))
        print(f"| {p} | " + " | ".join(cells) + " |")
    print(
        "\nCoverage on the test sub-volumes, 68% / 95%: moment network sigma | flow posterior; R^2 of the boxes\n"
    )
    print(
        "| model | parameter | moment 68 / 95 | flow 68 / 95 | TARP p (moment, flow) | R^2 |\n|---|---|---|---|---|---|"
    )
    for m in models:
        cal = results[m].get("calibration", {})
        flow = results[m].get("posterior", {}).get("calibration", {})
        for p in names:
            c, f = cal.get("parameters", {}).get(p, {}), flow.get("parameters", {}).get(p, {})
            tarp = (
                f"{_f(cal.get('tarp', {}).get('p_value'), 3)}, {_f(flow.get('tarp', {}).get('p_value'), 3)}"
            )
            print(
                f"| {m} | {p} | {_f(c.get('coverage_68'), 2)} / {_f(c.get('coverage_95'), 2)} | "
                f"{_f(f.get('coverage_68'), 2)} / {_f(f.get('coverage_95'), 2)} | {tarp} | "
                f"{_f(results[m]['summary'][p]['r2'], 3)} |"
            )
    print(
        "\n| model | parameters | epochs | s / epoch (median, fastest) | train samples / s | eval samples / s "
        "| train + eval min |\n|---|---|---|---|---|---|---|"
    )
    for m in models:
        r = results[m]["model"]
        print(
            f"| {m} | {r['parameters']:,} | {results[m]['_epochs']} | {_f(r['seconds_per_epoch'], 1)}, "
            f"{_f(r.get('fastest_seconds_per_epoch'), 1)} | "
            f"{_f(r['train_samples_per_second'], 0)} | "
            f"{_f(r['eval_samples_per_second'], 0)} | {results[m]['_minutes']:.1f} |"
        )
    if "cnn" not in results or "pk" not in results:
        return True
    wins = {
        p: results["cnn"]["summary"][p]["relative_error"] < results["pk"]["summary"][p]["relative_error"]
        for p in ("Omega_m", "sigma_8")
        if p in names
    }
    print(f"\nCNN beats the P(k) baseline: {wins} -> {'yes' if all(wins.values()) else 'NO'}")
    return all(wins.values())


def main(argv: list[str]) -> int:
    args = parse(argv)
    names = [t.strip() for t in args.targets.split(",")]
    store = (
        Path(args.store)
        if args.store
        else REPO_ROOT / "data" / "mocks" / f"bench_params_{args.solver}_{args.n_sims}x{args.grid}"
    )
    out = REPO_ROOT / "bench" / "results" / f"params_{args.solver}_{time.strftime('%Y%m%d-%H%M%S')}"
    start = time.perf_counter()
    results = {}
    for name in args.models.split(","):
        results[name] = run_model(name, args, store, out)
        print(f"{name}: {results[name]['_minutes']:.1f} min", flush=True)
    minutes = (time.perf_counter() - start) / 60
    print(
        f"\n{args.n_sims} {args.solver.upper()} boxes of {args.box:g} Mpc/h, {args.grid}^3 cells, z = {args.redshift:g}; "
        f"{args.crop}^3 sub-volumes; {len(results[next(iter(results))]['simulations'])} test boxes; "
        f"{args.epochs} epochs ({args.efficientnet_epochs} for EfficientNet) x {args.crops_per_sim} random crops "
        f"per training box; total {minutes:.1f} min"
    )
    print(f"command: bench/bench_params.py {' '.join(argv)}")
    ok = report(results, names)
    (out / "summary.json").write_text(
        json.dumps(
            {m: {k: v for k, v in r.items() if k != "per_simulation"} for m, r in results.items()}, indent=1
        )
    )
    print(f"runs and metrics: {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    sys.exit(main(sys.argv[1:]))
