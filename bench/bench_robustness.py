"""Robustness of the networks to the galaxy model and to redshift errors (issue 19): each network is trained on
one store and evaluated on stores of the same boxes under a shifted galaxy model or survey, beside its own
in-distribution numbers and (velocity) linear theory from the same galaxies.

Shifts (--shift, each a store parameter varied over --values, the network trained at --train-value):
- ``hod`` (experiment=robustness_hod): the hybrid U-net on real-space galaxies -> matter velocity, trained at
  log M_min = 13.3, tested at 13.0 / 13.3 / 13.6;
- ``zerr`` (experiment=robustness_zerr_velocity): the hybrid U-net on redshift-space galaxies, trained without
  redshift errors, tested with Gaussian errors sigma_z (1 + z) = 0.001 / 0.002 / 0.005 (data.generate.
  redshift_errors: a line-of-sight shift of c sigma_z N / (aH), 3 Mpc/h per 0.001);
- ``hod_params`` (experiment=robustness_hod_params): the 3D CNN on redshift-space galaxies of a Latin
  hypercube of cosmologies -> Omega_m, sigma_8, trained at log M_min = 13.3, tested at 13.0 / 13.3 / 13.6.
Every store holds the same boxes (same seeds: the dark matter and the haloes are identical; only the galaxies
or their redshifts differ). The velocity table gives, per test value, r(k) and the error power P_err/P_true of
the U-net and of linear theory (its r(k) does not depend on the bias), the U-net's amplitude T(k) and the shifts
of r, error power and T against the same seed's in-distribution numbers; the parameter table gives R^2, bias
(mean of estimate - truth) and RMSE per parameter and their shifts. bench/results/robustness_<shift>_<time>/
holds the runs, results.json and error_vs_<shift>.png (the errors against the shifted parameter).

Run: .venv/bin/python bench/bench_robustness.py [--shift hod|zerr|hod_params] [--values ...] [--train-value v]
     [--epochs n] [--seeds 3]
     (hod, zerr: ~1 min per store on 2 cores, ~2 min of training per seed, seconds per evaluation;
      hod_params: ~3 min per store of 128 boxes, ~1 min of training per seed)

Over an HOD prior (``--prior-runs <a --shift hod_params results dir> --test-prior log_M_min=13.0:13.6,...``): that
run's checkpoints on the same boxes with each box's HOD drawn from the prior (the store's hod_prior); R^2, bias
and RMSE against the in-distribution numbers, and each box's error against each HOD parameter
(error_vs_hod_prior.png).

robustness_zerr for the light-cone networks (``--zerr-runs <bench_lightcone results dir> --zerr-clean-store <its
store> --zerr-store <store> --sigma-z 0.005``): the networks a bench_lightcone.py run trained (ViT, CNN; every
seed) are evaluated on the test cones of their own store and of a store of the same boxes and cones whose tracers
carry Gaussian redshift errors sigma_z (1 + z) (the mock config's lightcone.survey.sigma_z; same seeds, so the
same haloes on the same cones). The table: R^2 per parameter without and with errors, mean ± std over the seeds,
and the shift.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import mean, stdev

from _harness import mean_std, train_seed

REPO_ROOT = Path(__file__).resolve().parents[1]
K_REPORT = ("0.1", "0.3", "0.5", "1")


@dataclass(frozen=True)
class Shift:
    """One robustness experiment: the store parameter it shifts and the network it tests."""

    experiment: str
    override: str  # the data.generate key the value sets
    store_prefix: str  # stores data/mocks/<prefix>_<value>
    task: str  # velocity | parameters
    label: str  # the plot's x axis
    values: str  # default test values
    train_value: float
    epochs: int

    def store(self, value: float) -> str:
        return f"${{paths.data_dir}}/mocks/{self.store_prefix}_{value:g}"

    def overrides(self, value: float) -> list[str]:
        return [
            f"experiment={self.experiment}",
            f"data.store={self.store(value)}",
            f"{self.override}={value}",
        ]


SHIFTS = {
    "hod": Shift(
        "robustness_hod", "data.generate.hod.log_M_min", "robustness_hod", "velocity",
        "log10 M_min [Msun/h] of the test galaxies", "13.0,13.3,13.6", 13.3, 6,
    ),
    "zerr": Shift(
        "robustness_zerr_velocity", "data.generate.redshift_errors.sigma_z", "robustness_zerr", "velocity",
        "sigma_z of the test galaxies' redshifts", "0,0.001,0.002,0.005", 0.0, 6,
    ),
    "hod_params": Shift(
        "robustness_hod_params", "data.generate.hod.log_M_min", "robustness_hod_params", "parameters",
        "log10 M_min [Msun/h] of the test galaxies", "13.0,13.3,13.6", 13.3, 60,
    ),
}  # fmt: skip


def cpu_overrides(epochs: int) -> list[str]:
    return [
        f"trainer.max_epochs={epochs}",
        "data.num_workers=1",
        "callbacks=default",
        "~callbacks.progress_bar",
    ]


def build_store(shift: Shift, value: float, run_dir: Path) -> None:
    """The store of one value (train=false evaluate=false: only the store is built, if absent)."""
    compose_and_train(run_dir, [*shift.overrides(value), "train=false", "evaluate=false"])


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


def galaxies_per_box(shift: Shift, value: float) -> float:
    from hydra import compose, initialize_config_dir

    from lss_lightning.config import CONF_DIR
    from lss_lightning.store.reader import FieldStore

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=shift.overrides(value))
    store = FieldStore(cfg.data.store)
    return sum(len(store.read_galaxies(s)) for s in store.simulation_ids) / len(store.simulation_ids)


def velocity_row(metrics: dict, label: str) -> dict:
    vector = metrics["summary"][label]["vector"]
    return {k: {q: vector[k][q] for q in ("r", "error_power", "T")} for k in K_REPORT}


def parameter_row(metrics: dict) -> dict:
    names = metrics.get("targets") or [p for p in metrics["summary"] if "r2" in metrics["summary"][p]]
    return {p: {q: metrics["summary"][p][q] for q in ("r2", "bias", "rmse")} for p in names}


def print_velocity_table(results: dict, shift: Shift) -> None:
    """Per value: the U-net's r(k) and error power (mean over seeds), its r(0.5) and its shifts against the same
    seed's in-distribution numbers (mean ± std over seeds), T(0.1), and linear theory from the same galaxies."""
    base = results[f"{shift.train_value:g}"]["unet"]
    name = shift.override.rsplit(".", 1)[1]
    print(
        f"\n| {name} | galaxies per box | r(k) U-net, k = 0.1 / 0.3 / 0.5 / 1 (mean) | r(k) linear | P_err/P_true "
        "U-net (mean) | r(0.5) U-net | delta r(0.5) | error power(0.5) / in-distribution | T(0.1) U-net | "
        "delta T(0.1) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for value, res in results.items():
        seeds, lin = res["unet"], res["linear"]
        mean_r = " / ".join(f"{mean(s[k]['r'] for s in seeds):.3f}" for k in K_REPORT)
        mean_e = " / ".join(f"{mean(s[k]['error_power'] for s in seeds):.3f}" for k in K_REPORT)
        r05 = [s["0.5"]["r"] for s in seeds]
        delta = [s["0.5"]["r"] - b["0.5"]["r"] for s, b in zip(seeds, base, strict=True)]
        ratio = [s["0.5"]["error_power"] / b["0.5"]["error_power"] for s, b in zip(seeds, base, strict=True)]
        t01 = [s["0.1"]["T"] for s in seeds]
        dt01 = [s["0.1"]["T"] - b["0.1"]["T"] for s, b in zip(seeds, base, strict=True)]
        lin_r = " / ".join(f"{lin[k]['r']:.3f}" for k in K_REPORT)
        mark = " (train)" if value == f"{shift.train_value:g}" else ""
        print(
            f"| {value}{mark} | {res['galaxies_per_box']:.0f} | {mean_r} | {lin_r} | {mean_e} | {mean_std(r05)} | "
            f"{mean_std(delta)} | {mean_std(ratio, 2)} | {mean_std(t01)} | {mean_std(dt01)} |"
        )


def print_parameter_table(results: dict, shift: Shift) -> None:
    """Per value and parameter: R^2, bias and RMSE (mean ± std over seeds) and the shifts of bias and RMSE
    against the same seed's in-distribution numbers."""
    base = results[f"{shift.train_value:g}"]["net"]
    name = shift.override.rsplit(".", 1)[1]
    print(
        f"\n| {name} | galaxies per box | parameter | R^2 | bias | RMSE | delta bias | RMSE / in-distribution |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for value, res in results.items():
        seeds = res["net"]
        mark = " (train)" if value == f"{shift.train_value:g}" else ""
        for p in seeds[0]:
            r2 = [s[p]["r2"] for s in seeds]
            bias = [s[p]["bias"] for s in seeds]
            rmse = [s[p]["rmse"] for s in seeds]
            dbias = [s[p]["bias"] - b[p]["bias"] for s, b in zip(seeds, base, strict=True)]
            ratio = [s[p]["rmse"] / b[p]["rmse"] for s, b in zip(seeds, base, strict=True)]
            print(
                f"| {value}{mark} | {res['galaxies_per_box']:.0f} | {p} | {mean_std(r2)} | {mean_std(bias, 4)} | "
                f"{mean_std(rmse, 4)} | {mean_std(dbias, 4)} | {mean_std(ratio, 2)} |"
            )


def _mean_std(values: list[float]) -> tuple[float, float]:
    return mean(values), (stdev(values) if len(values) > 1 else 0.0)


def plot_velocity(results: dict, shift: Shift, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [float(v) for v in results]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for label, style in (("unet", "o-"), ("linear", "s--")):
        for ax, key in zip(axes, ("r", "error_power"), strict=True):
            rows = [results[v][label] for v in results]
            values = [[r["0.5"][key] for r in (row if isinstance(row, list) else [row])] for row in rows]
            values = [[1 - x for x in vs] if key == "r" else vs for vs in values]
            stats = [_mean_std(v) for v in values]
            ax.errorbar(
                xs, [m for m, _ in stats], yerr=[s for _, s in stats], fmt=style, capsize=3, label=label
            )
    for ax, name in zip(axes, ("1 - r(k = 0.5)", "P_err / P_true (k = 0.5)"), strict=True):
        ax.axvline(shift.train_value, color="grey", lw=0.8, ls=":")
        ax.set_xlabel(shift.label)
        ax.set_ylabel(name)
        ax.set_yscale("log")
    axes[0].legend()
    fig.suptitle(f"{shift.experiment}: velocity from galaxies, trained at {shift.train_value:g} (dotted)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_parameters(results: dict, shift: Shift, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [float(v) for v in results]
    names = list(next(iter(results.values()))["net"][0])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for p in names:
        for ax, key in zip(axes, ("bias", "rmse"), strict=True):
            stats = [_mean_std([s[p][key] for s in results[v]["net"]]) for v in results]
            ax.errorbar(xs, [m for m, _ in stats], yerr=[s for _, s in stats], fmt="o-", capsize=3, label=p)
    for ax, name in zip(axes, ("bias (estimate - truth)", "RMSE"), strict=True):
        ax.axvline(shift.train_value, color="grey", lw=0.8, ls=":")
        ax.set_xlabel(shift.label)
        ax.set_ylabel(name)
    axes[0].axhline(0, color="k", lw=0.6)
    axes[0].legend()
    fig.suptitle(f"{shift.experiment}: parameters from galaxies, trained at {shift.train_value:g} (dotted)")
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


def plot_zerr(results: dict, sigma_z: float, path: Path) -> None:
    """R^2 per parameter against sigma_z (without errors and with), one line per network, seeds' spread."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parameters = sorted({p for by_parameter in results.values() for p in by_parameter})
    fig, axes = plt.subplots(1, len(parameters), figsize=(3.2 * len(parameters), 3.2), squeeze=False)
    for ax, p in zip(axes[0], parameters, strict=True):
        for model, by_parameter in results.items():
            cases = by_parameter[p]
            stats = [_mean_std(cases["no errors"]), _mean_std(cases[f"sigma_z = {sigma_z:g}"])]
            ax.errorbar(
                [0.0, sigma_z],
                [m for m, _ in stats],
                yerr=[e for _, e in stats],
                fmt="o-",
                capsize=3,
                label=model,
            )
        ax.set_title(p)
        ax.set_xlabel("sigma_z of the test cones")
        ax.set_ylabel("R^2")
    axes[0][0].legend()
    fig.suptitle("robustness_zerr: light-cone networks trained without redshift errors")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def print_zerr(results: dict, runs_dir: Path, sigma_z: float) -> None:
    print(
        f"\nrobustness to redshift errors: the light-cone networks of {runs_dir} (trained without errors), R^2 on "
        f"the test cones of the same boxes without and with Gaussian errors sigma_z (1 + z), sigma_z = {sigma_z:g}"
    )
    print("| model | parameter | R^2 no errors | R^2 with errors | shift |\n|---|---|---|---|---|")
    for model, by_parameter in results.items():
        for p, cases in by_parameter.items():
            clean, shifted = cases["no errors"], cases[f"sigma_z = {sigma_z:g}"]
            delta = [b - a for a, b in zip(clean, shifted, strict=True)]
            print(f"| {model} | {p} | {mean_std(clean)} | {mean_std(shifted)} | {mean_std(delta)} |")


def run_shift(shift_name: str, values: str | None, train_value: float | None, epochs: int | None, seeds: int,
              seed_base: int, argv: list[str]) -> None:  # fmt: skip
    shift = SHIFTS[shift_name]
    train_value = shift.train_value if train_value is None else train_value
    shift = replace(shift, train_value=train_value)
    epochs = epochs or shift.epochs
    tests = sorted({float(v) for v in (values or shift.values).split(",")} | {train_value})
    out = REPO_ROOT / "bench" / "results" / f"robustness_{shift_name}_{time.strftime('%Y%m%d-%H%M%S')}"
    start = time.perf_counter()
    for value in tests:
        build_store(shift, value, out / f"store_{value:g}")
    stores = (time.perf_counter() - start) / 60
    key = "unet" if shift.task == "velocity" else "net"
    results = {f"{v:g}": {"galaxies_per_box": galaxies_per_box(shift, v), key: []} for v in tests}
    for seed in range(seed_base, seed_base + seeds):
        train_dir = out / f"train_{train_value:g}_seed{seed}"
        train_seed(train_dir, [*shift.overrides(train_value), *cpu_overrides(epochs), f"seed={seed}"])
        ckpt = best_checkpoint(train_dir)
        for value in tests:
            metrics = evaluate_on(ckpt, shift.store(value), out / f"eval_{value:g}_seed{seed}")
            res = results[f"{value:g}"]
            if shift.task == "velocity":
                res["unet"].append(velocity_row(metrics, "unet"))
                res["linear"] = velocity_row(metrics, "linear")  # the same for every seed
            else:
                res["net"].append(parameter_row(metrics))
    minutes = (time.perf_counter() - start) / 60
    (out / "results.json").write_text(
        json.dumps({"command": ["bench/bench_robustness.py", *argv], "results": results}, indent=1)
    )
    print(
        f"\n{shift.experiment}: trained at {shift.override} = {train_value:g}, {epochs} epochs, {seeds} seeds, "
        f"tested on the test boxes of each store; stores {stores:.1f} min, total {minutes:.1f} min"
    )
    plot_path = out / f"error_vs_{shift_name}.png"
    if shift.task == "velocity":
        print_velocity_table(results, shift)
        plot_velocity(results, shift, plot_path)
    else:
        print_parameter_table(results, shift)
        plot_parameters(results, shift, plot_path)
    print(f"\nruns, results.json and {plot_path.name}: {out}")


def parse_prior(text: str) -> dict[str, list[float]]:
    """'log_M_min=13.0:13.6,alpha=0.8:1.2' -> {log_M_min: [13.0, 13.6], alpha: [0.8, 1.2]}."""
    prior = {}
    for item in text.split(","):
        name, _, bounds = item.partition("=")
        lo, _, hi = bounds.partition(":")
        prior[name.strip()] = [float(lo), float(hi)]
    return prior


def prior_table(runs_dir: Path, prior: dict[str, list[float]], out: Path) -> dict:
    """robustness_hod_params over an HOD prior: the checkpoints of a ``--shift hod_params`` run (<runs>/train_*)
    evaluated on the same boxes with each box's HOD drawn from ``prior`` (data.generate.hod_prior; the other HOD
    parameters at the training values), against their in-distribution numbers; per box the estimate's error
    against each HOD parameter (error_vs_hod_prior.png)."""
    import csv

    from hydra import compose, initialize_config_dir

    from lss_lightning.config import CONF_DIR
    from lss_lightning.store.reader import FieldStore

    shift = SHIFTS["hod_params"]
    store = f"${{paths.data_dir}}/mocks/{shift.store_prefix}_prior_" + "_".join(
        f"{k}{lo:g}-{hi:g}" for k, (lo, hi) in sorted(prior.items())
    )
    spelled = "{" + ",".join(f"{k}:[{lo},{hi}]" for k, (lo, hi) in prior.items()) + "}"
    overrides = [
        f"experiment={shift.experiment}",
        f"data.store={store}",
        f"data.generate.hod_prior={spelled}",
    ]
    compose_and_train(out / "store_prior", [*overrides, "train=false", "evaluate=false"])
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        root = compose(config_name="train", overrides=overrides).data.store
    hods = {s: FieldStore(root).hod(s) for s in FieldStore(root).simulation_ids}
    results: dict = {"prior": prior, "in_distribution": [], "prior_test": [], "boxes": {}}
    for train_dir in sorted(runs_dir.glob(f"train_{shift.train_value:g}_seed*")):
        ckpt = best_checkpoint(train_dir)
        seed = train_dir.name.rsplit("seed", 1)[1]
        base_dir = runs_dir / f"eval_{shift.train_value:g}_seed{seed}"
        results["in_distribution"].append(
            parameter_row(json.loads(next(base_dir.rglob("metrics.json")).read_text()))
        )
        eval_dir = out / f"eval_prior_seed{seed}"
        results["prior_test"].append(parameter_row(evaluate_on(ckpt, store, eval_dir)))
        with open(next(eval_dir.rglob("estimates.csv"))) as fh:
            for row in csv.DictReader(fh):
                box = results["boxes"].setdefault(row["sim_id"], {"hod": hods[row["sim_id"]], "error": {}})
                for p in results["in_distribution"][0]:
                    box["error"].setdefault(p, []).append(float(row[f"{p}_mean"]) - float(row[f"{p}_true"]))
    print(f"\nrobustness_hod_params over an HOD prior {prior} (the other HOD parameters at the training values): "
          f"the checkpoints of {runs_dir} on {len(results['boxes'])} test boxes, each with its own HOD")  # fmt: skip
    print("| parameter | R^2 in-distribution | R^2 over the prior | bias in-distribution | bias over the prior | "
          "RMSE in-distribution | RMSE over the prior |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for p in results["in_distribution"][0]:
        cells = []
        for q in ("r2", "bias", "rmse"):
            for case in ("in_distribution", "prior_test"):
                cells.append(mean_std([r[p][q] for r in results[case]], 3 if q == "r2" else 4))
        print(f"| {p} | {cells[0]} | {cells[1]} | {cells[2]} | {cells[3]} | {cells[4]} | {cells[5]} |")
    plot_prior(results, out / "error_vs_hod_prior.png")
    return results


def plot_prior(results: dict, path: Path) -> None:
    """Per box (mean over seeds) the error of each parameter against each HOD parameter of the prior."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(results["prior"])
    targets = list(next(iter(results["boxes"].values()))["error"])
    fig, axes = plt.subplots(
        len(targets), len(names), figsize=(3.2 * len(names), 2.8 * len(targets)), squeeze=False
    )
    for i, p in enumerate(targets):
        for j, h in enumerate(names):
            x = np.array([b["hod"][h] for b in results["boxes"].values()])
            y = np.array([np.mean(b["error"][p]) for b in results["boxes"].values()])
            r = np.corrcoef(x, y)[0, 1] if len(x) > 2 else float("nan")
            ax = axes[i][j]
            ax.scatter(x, y, s=12)
            ax.axhline(0, color="k", lw=0.6)
            ax.set_title(f"{p}: corr {r:+.2f}", fontsize=9)
            ax.set_xlabel(h)
            ax.set_ylabel(f"{p} estimate - truth")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shift", choices=sorted(SHIFTS), default="hod")
    parser.add_argument(
        "--values", help="the test values of the shifted parameter (default: the shift's own)"
    )
    parser.add_argument("--train-value", type=float, help="the training value (default: the shift's own)")
    parser.add_argument("--epochs", type=int, help="default: 6 for the U-nets, 60 for the CNN")
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
    parser.add_argument(
        "--prior-runs",
        type=Path,
        help="a --shift hod_params results directory: its checkpoints over --test-prior",
    )
    parser.add_argument(
        "--test-prior",
        default="log_M_min=13.0:13.6,log_M1=13.7:14.3,alpha=0.8:1.2",
        help="the HOD prior of the test boxes, name=lo:hi,...",
    )
    args = parser.parse_args(argv)
    if args.prior_runs:
        out = REPO_ROOT / "bench" / "results" / f"robustness_hod_prior_{time.strftime('%Y%m%d-%H%M%S')}"
        results = prior_table(args.prior_runs, parse_prior(args.test_prior), out)
        record = {"command": ["bench/bench_robustness.py", *argv], "results": results}
        (out / "results.json").write_text(json.dumps(record, indent=1))
        print(f"\nruns, results.json and error_vs_hod_prior.png: {out}")
        return 0
    if args.zerr_runs:
        out = REPO_ROOT / "bench" / "results" / f"robustness_zerr_{time.strftime('%Y%m%d-%H%M%S')}"
        results = zerr_table(args.zerr_runs, args.zerr_clean_store, args.zerr_store, args.sigma_z, out)
        record = {"command": ["bench/bench_robustness.py", *argv], "results": results}
        (out / "results.json").write_text(json.dumps(record, indent=1))
        plot_zerr(results, args.sigma_z, out / "r2_vs_sigma_z.png")
        print(f"\nruns, results.json and r2_vs_sigma_z.png: {out}")
        return 0
    run_shift(args.shift, args.values, args.train_value, args.epochs, args.seeds, args.seed_base, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
