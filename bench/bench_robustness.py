"""Robustness to the galaxy model: the hybrid U-net of experiment=robustness_hod trained on the galaxies of one HOD
(log M_min = 13.3) and evaluated on the same boxes populated with other HODs, beside linear theory from the
same galaxies.

For each log M_min of --hods the script builds a store of the default mock boxes (the same 16 seeds, so the dark
matter and the haloes are identical; only the galaxies differ) with the HOD's galaxies, trains once on the
training HOD's store, and evaluates that checkpoint on the test boxes of every store (eval's
data_overrides.store). The table gives, per HOD: galaxies per box, r(k) and the error power P_err/P_true of the
U-net and of linear theory (its r(k) does not depend on the bias; evaluation.linear_bias stays 1), and the
shift of the U-net's numbers against the in-distribution row; bench/results/robustness_<time>/ holds the runs,
results.json and error_vs_hod.png (1 - r and the error power at k = 0.5 against log M_min).

Run: .venv/bin/python bench/bench_robustness.py [--hods 13.0,13.3,13.6] [--train-hod 13.3] [--epochs 6]
     (~1 min per store on 2 cores, ~2 min of training, seconds per evaluation)

robustness_zerr (``--zerr-runs <bench_lightcone results dir> --zerr-clean-store <its store> --zerr-store <store>
--sigma-z 0.005``): the light-cone
networks a bench_lightcone.py run trained (ViT, CNN; every seed) are evaluated on the test cones of their own store
and of a store of the same boxes and cones whose tracers carry Gaussian redshift errors sigma_z (1 + z) (the mock
config's lightcone.survey.sigma_z; same seeds, so the same haloes on the same cones). The table: R^2 per parameter
without and with errors, mean ± std over the seeds, and the shift.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _harness import train_seed

REPO_ROOT = Path(__file__).resolve().parents[1]
K_REPORT = ("0.1", "0.3", "0.5", "1")


def store_path(hod: float) -> str:
    return f"${{paths.data_dir}}/mocks/robustness_hod_{hod:g}"


def hod_overrides(hod: float) -> list[str]:
    return [
        "experiment=robustness_hod",
        f"data.store={store_path(hod)}",
        f"data.generate.hod.log_M_min={hod}",
    ]


def cpu_overrides(epochs: int) -> list[str]:
    return [
        f"trainer.max_epochs={epochs}",
        "data.num_workers=1",
        "callbacks=default",
        "~callbacks.progress_bar",
    ]


def build_store(hod: float, run_dir: Path) -> None:
    """The store of one HOD (train=false evaluate=false: only the store is built, if absent)."""
    compose_and_train(run_dir, [*hod_overrides(hod), "train=false", "evaluate=false"])


def compose_and_train(run_dir: Path, overrides: list[str]) -> None:
    from hydra import compose, initialize_config_dir

    from lss_lightning.config import CONF_DIR
    from lss_lightning.run import train

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*overrides, f"paths.output_dir={run_dir}"])
    train(cfg)


def evaluate_on(ckpt: Path, store: str, out_dir: Path) -> dict:
    """The checkpoint on the test boxes of ``store`` (eval's data_overrides.store); that run's metrics.json."""
    from hydra import compose, initialize_config_dir

    from lss_lightning.config import CONF_DIR
    from lss_lightning.run import evaluate

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name="eval",
            overrides=[
                f"ckpt_path={ckpt}",
                f"data_overrides.store={store}",
                f"paths.output_dir={out_dir}",
            ],
        )
    evaluate(cfg)
    return json.loads(next(out_dir.rglob("metrics.json")).read_text())


def best_checkpoint(run_dir: Path) -> Path:
    """The checkpoint of the lowest validation loss (named epochNNN-val_loss<value>.ckpt), as train evaluates."""
    found = sorted(
        run_dir.glob("checkpoints/epoch*-val_loss*.ckpt"), key=lambda p: float(p.stem.split("val_loss")[1])
    )
    return found[0]


def galaxies_per_box(hod: float) -> float:
    from hydra import compose, initialize_config_dir

    from lss_lightning.config import CONF_DIR
    from lss_lightning.store.reader import FieldStore

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=hod_overrides(hod))
    store = FieldStore(cfg.data.store)
    return sum(len(store.read_galaxies(s)) for s in store.simulation_ids) / len(store.simulation_ids)


def row(metrics: dict, label: str) -> dict:
    vector = metrics["summary"][label]["vector"]
    return {k: {"r": vector[k]["r"], "error_power": vector[k]["error_power"]} for k in K_REPORT}


def _spread(values: list[float], digits: int = 3) -> str:
    from statistics import mean, stdev

    return (
        f"{mean(values):.{digits}f} ± {stdev(values):.{digits}f}"
        if len(values) > 1
        else f"{values[0]:.{digits}f}"
    )


def print_table(results: dict, train_hod: float) -> None:
    """Per HOD: the U-net's r(k) and error power (mean over seeds), its r(0.5) and its shifts against the same
    seed's in-distribution numbers (mean ± std over seeds), and linear theory from the same galaxies."""
    base = results[f"{train_hod:g}"]["unet"]
    print(
        "\n| log M_min | galaxies per box | r(k) U-net, k = 0.1 / 0.3 / 0.5 / 1 (mean) | r(k) linear | P_err/P_true "
        "U-net (mean) | r(0.5) U-net | delta r(0.5) | error power(0.5) / in-distribution |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for hod, res in results.items():
        seeds, lin = res["unet"], res["linear"]
        mean_r = " / ".join(f"{sum(s[k]['r'] for s in seeds) / len(seeds):.3f}" for k in K_REPORT)
        mean_e = " / ".join(f"{sum(s[k]['error_power'] for s in seeds) / len(seeds):.3f}" for k in K_REPORT)
        r05 = [s["0.5"]["r"] for s in seeds]
        delta = [s["0.5"]["r"] - b["0.5"]["r"] for s, b in zip(seeds, base, strict=True)]
        ratio = [s["0.5"]["error_power"] / b["0.5"]["error_power"] for s, b in zip(seeds, base, strict=True)]
        lin_r = " / ".join(f"{lin[k]['r']:.3f}" for k in K_REPORT)
        mark = " (train)" if hod == f"{train_hod:g}" else ""
        print(
            f"| {hod}{mark} | {res['galaxies_per_box']:.0f} | {mean_r} | {lin_r} | {mean_e} | {_spread(r05)} | "
            f"{_spread(delta)} | {_spread(ratio, 2)} |"
        )


def plot(results: dict, train_hod: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    hods = [float(h) for h in results]

    def curve(label: str, key: str) -> tuple[np.ndarray, np.ndarray]:
        rows = [results[f"{h:g}"][label] for h in hods]
        values = [[r["0.5"][key] for r in (row if isinstance(row, list) else [row])] for row in rows]
        values = [[1 - v for v in vs] if key == "r" else vs for vs in values]
        return np.array([np.mean(v) for v in values]), np.array(
            [np.std(v, ddof=1) if len(v) > 1 else 0 for v in values]
        )

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for label, style in (("unet", "o-"), ("linear", "s--")):
        for ax, key in zip(axes, ("r", "error_power"), strict=True):
            mean, std = curve(label, key)
            ax.errorbar(hods, mean, yerr=std, fmt=style, capsize=3, label=label)
    for ax, name in zip(axes, ("1 - r(k = 0.5)", "P_err / P_true (k = 0.5)"), strict=True):
        ax.axvline(train_hod, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("log10 M_min [Msun/h] of the test galaxies")
        ax.set_ylabel(name)
        ax.set_yscale("log")
    axes[0].legend()
    fig.suptitle(f"velocity from galaxies, trained at log M_min = {train_hod:g}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


ZERR_PARAMETERS = ("Omega_m", "w0", "n_s")


def zerr_table(runs_dir: Path, clean: str, shifted: str, sigma_z: float, out: Path) -> dict:
    """robustness_zerr: each light-cone checkpoint of a bench_lightcone.py run (<runs>/<model>/seed<k>) on the test
    cones of the store it was trained on (``clean``) and of the same boxes' cones with redshift errors."""
    results: dict = {}
    cases = (("no errors", clean), (f"sigma_z = {sigma_z:g}", shifted))
    for model_dir in sorted(d for d in runs_dir.iterdir() if d.is_dir() and d.name in ("vit", "cnn")):
        for seed_dir in sorted(model_dir.glob("seed*")):
            ckpt = best_checkpoint(seed_dir)
            for case, store in cases:
                metrics = evaluate_on(
                    ckpt, store, out / f"{model_dir.name}_{seed_dir.name}_{case.split()[0]}"
                )
                for p in ZERR_PARAMETERS:
                    by_case = results.setdefault(model_dir.name, {}).setdefault(p, {})
                    by_case.setdefault(case, []).append(metrics["summary"][p]["r2"])
    print_zerr(results, runs_dir, sigma_z)
    return results


def print_zerr(results: dict, runs_dir: Path, sigma_z: float) -> None:
    from statistics import mean, stdev

    def spread(values: list[float]) -> str:
        return f"{mean(values):.3f} ± {stdev(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"

    print(
        f"\nrobustness to redshift errors: the light-cone networks of {runs_dir} (trained without errors), R^2 on "
        f"the test cones of the same boxes without and with Gaussian errors sigma_z (1 + z), sigma_z = {sigma_z:g}"
    )
    print("| model | parameter | R^2 no errors | R^2 with errors | shift |\n|---|---|---|---|---|")
    for model, by_parameter in results.items():
        for p, cases in by_parameter.items():
            clean, shifted = cases["no errors"], cases[f"sigma_z = {sigma_z:g}"]
            delta = [b - a for a, b in zip(clean, shifted, strict=True)]
            print(f"| {model} | {p} | {spread(clean)} | {spread(shifted)} | {spread(delta)} |")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hods", default="13.0,13.3,13.6", help="log M_min of the test HODs")
    parser.add_argument("--train-hod", type=float, default=13.3)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seeds", type=int, default=3, help="training seeds (mean ± std over them)")
    parser.add_argument("--seed-base", type=int, default=12345)
    parser.add_argument(
        "--zerr-runs", type=Path, help="a bench_lightcone.py results directory: robustness_zerr"
    )
    parser.add_argument("--zerr-clean-store", help="the store those light-cone networks were trained on")
    parser.add_argument(
        "--zerr-store", help="the same boxes' cones with redshift errors (lightcone.survey.sigma_z)"
    )
    parser.add_argument("--sigma-z", type=float, default=0.005)
    args = parser.parse_args(argv)
    if args.zerr_runs:
        out = REPO_ROOT / "bench" / "results" / f"robustness_zerr_{time.strftime('%Y%m%d-%H%M%S')}"
        results = zerr_table(args.zerr_runs, args.zerr_clean_store, args.zerr_store, args.sigma_z, out)
        record = {"command": ["bench/bench_robustness.py", *argv], "results": results}
        (out / "results.json").write_text(json.dumps(record, indent=1))
        return 0
    hods = sorted({float(h) for h in args.hods.split(",")} | {args.train_hod})
    out = REPO_ROOT / "bench" / "results" / f"robustness_{time.strftime('%Y%m%d-%H%M%S')}"
    start = time.perf_counter()
    for hod in hods:
        build_store(hod, out / f"store_{hod:g}")
    stores = (time.perf_counter() - start) / 60
    results = {f"{hod:g}": {"galaxies_per_box": galaxies_per_box(hod), "unet": []} for hod in hods}
    for seed in range(args.seed_base, args.seed_base + args.seeds):
        train_dir = out / f"train_{args.train_hod:g}_seed{seed}"
        train_seed(train_dir, [*hod_overrides(args.train_hod), *cpu_overrides(args.epochs), f"seed={seed}"])
        ckpt = best_checkpoint(train_dir)
        for hod in hods:
            metrics = evaluate_on(ckpt, store_path(hod), out / f"eval_{hod:g}_seed{seed}")
            results[f"{hod:g}"]["unet"].append(row(metrics, "unet"))
            results[f"{hod:g}"]["linear"] = row(metrics, "linear")  # the same for every seed
    minutes = (time.perf_counter() - start) / 60
    (out / "results.json").write_text(
        json.dumps({"command": ["bench/bench_robustness.py", *argv], "results": results}, indent=1)
    )
    print(
        f"\nrobustness to the HOD: trained at log M_min = {args.train_hod:g}, {args.epochs} epochs, {args.seeds} seeds, "
        f"tested on the 2 test boxes of each store; stores {stores:.1f} min, total {minutes:.1f} min"
    )
    print_table(results, args.train_hod)
    plot(results, args.train_hod, out / "error_vs_hod.png")
    print(f"\nruns, results.json and error_vs_hod.png: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
