"""Hwang & Sabiu on particle-mesh light cones: construction cost, and ViT / CNN over training seeds at CPU size.

1. Construction: one box of data=lightcone_w0wa stage by stage (ICs, PM steps with the snapshot outputs,
   FoF per snapshot, placing the box's cones on the tiled light cone + histograms), wall and CPU seconds,
   per box and per cone. ``--options`` also times the alternatives the CPU preset was chosen from
   (``OPTIONS``: PM steps, snapshots, force mesh, particles, box size, mass threshold).
2. Builds (or reuses) the Latin-hypercube store (data=lightcone_w0wa: 256 boxes x 3 cones = 768 cones over
   the talk's w0-wa prior; split by box, 192 / 32 / 32 boxes = 576 / 96 / 96 cones) and the fiducial store
   (32 boxes x 3 cones at Planck 2018), then trains experiment=hwang2022_vit, hwang2022_cnn and
   hwang2022_summaries (``--models``) on the same split for each of ``--seeds`` training seeds (the top-level
   ``seed``: weights, crop order, mirrors), evaluates each run on the test cones (eval/metrics.json of the
   run: ``summary`` RMSE and R^2 per parameter, ``fiducial`` scatter, ``model`` parameters and timing) and
   prints mean and spread (sample standard deviation over seeds) of RMSE and R^2 per parameter, the
   networks side by side, the talk's beside. The ViT and the CNN see log(1 + counts) and, in their heads,
   the counts per redshift slice (the experiments' ``slice_means``); the summary MLP sees only those.
   CPU sizes (``--vit`` / ``--cnn``): vit3d_tiny (192 wide, 4 blocks, 8^3-cell patches: 64 tokens of a
   32^3 cone, 1.9M parameters), because the talk's 22.4M ViT costs ~10x more per epoch (``--vit
   vit3d_hwang_sabiu`` runs it), and the generic cnn3d (1.2M, dropout 0.5 before the head) because the
   talk's 9.2M CNN (``--cnn cnn3d_hwang_sabiu``) overfits 576 cones.
Run: .venv/bin/python bench/bench_lightcone.py [--epochs 40] [--seeds 3] [--options] [--skip-training]
     Store: 256 boxes took 22 min on 2 cores shared with other jobs (two shards); fiducial 32 boxes ~2 min.
   Before training it prints a summary baseline (``summary_baseline``: ridge regression on log counts in
   16 redshift slices and clustering in 4, same split), the floor the networks must beat.
     Tiny check: --n-sims 12 --n-fiducial 2 --store /tmp/s --fiducial /tmp/f --epochs 2 --seeds 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir

from lss_lightning.config import CONF_DIR, REPO_ROOT

TALK = {  # Hwang & Sabiu's talk: errors, parameters, training time (GPU)
    "vit": {"Omega_m": 0.0043, "w0": 0.012, "n_s": 0.0063, "parameters": "22.4M", "time": "~90 min"},
    "cnn": {"Omega_m": 0.0058, "w0": 0.019, "n_s": 0.0075, "parameters": "9.2M", "time": "~40 min"},
}
PARAMETERS = ("Omega_m", "w0", "n_s")
FIDUCIAL = ["data=lightcone_fiducial"]
G = "data.generate"
OLD = [  # the preset before cones_per_box: 96^3 in 384 Mpc/h, 10 PM steps, 6 FoF snapshots, 64^3, 1.5e14
    f"{G}.grid=64",
    f"{G}.particles=96",
    f"{G}.box_size=384",
    f"{G}.lightcone.cones_per_box=6",
    f"{G}.pm.steps=10",
    f"{G}.lightcone.snapshots=6",
    f"{G}.lightcone.mass_min=1.5e14",
]
OPTIONS = {  # data=lightcone_w0wa overrides; 6 cones per box but for the preset (3)
    "old preset (96^3, 384 Mpc/h, 10 steps, 6 snapshots, > 1.5e14)": OLD,
    "  10 -> 5 PM steps": [*OLD, f"{G}.pm.steps=5"],
    "  5 steps, 6 -> 3 snapshots": [*OLD, f"{G}.pm.steps=5", f"{G}.lightcone.snapshots=3"],
    "  5 steps, 3 snapshots, force mesh 192^3 -> 96^3": [
        *OLD,
        f"{G}.pm.steps=5",
        f"{G}.lightcone.snapshots=3",
        f"{G}.pm.mesh_factor=1",
    ],
    "  64^3 in 256 Mpc/h, 5 steps, 3 snapshots, > 1.5e14": [
        *OLD,
        f"{G}.particles=64",
        f"{G}.box_size=256",
        f"{G}.pm.steps=5",
        f"{G}.lightcone.snapshots=3",
    ],
    "  96^3 in 288 Mpc/h, 5 steps, 3 snapshots, > 6e13": [
        *OLD,
        f"{G}.box_size=288",
        f"{G}.pm.steps=5",
        f"{G}.lightcone.snapshots=3",
        f"{G}.lightcone.mass_min=6e13",
    ],
    "  64^3 in 192 Mpc/h, 5 steps, 3 snapshots, > 6e13": [
        *OLD,
        f"{G}.particles=64",
        f"{G}.box_size=192",
        f"{G}.pm.steps=5",
        f"{G}.lightcone.snapshots=3",
        f"{G}.lightcone.mass_min=6e13",
    ],
    "CPU preset (data=lightcone_w0wa)": [],
}


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def construction(data_overrides: list[str], threads: int = 2) -> dict:
    """Wall and CPU seconds per stage of one box (same process, after CAMB) with all its cones, haloes per
    cone, replicas used."""
    import torch

    from lss_lightning.cosmology import Cosmology
    from lss_lightning.mocks.config import MockConfig
    from lss_lightning.mocks.design import design
    from lss_lightning.mocks.fof import particle_mass
    from lss_lightning.mocks.lightcone import histogram, place_on_lightcone
    from lss_lightning.mocks.simulate import find_haloes, initial_particles, lightcone_snapshots

    torch.set_num_threads(threads)
    cfg = _compose(["data=lightcone_w0wa", *data_overrides])
    mock = MockConfig.from_mapping(cfg.data.generate, store="unused", device="cpu")
    sim = design(mock)[0]
    cosmo = Cosmology.from_mapping(sim["params"])
    cosmo.linear_power([0.1])
    cone = mock.lightcone_settings
    wall, cpu = {"FoF (all snapshots)": 0.0}, {"FoF (all snapshots)": 0.0}

    def clocks():
        return time.perf_counter(), time.process_time()

    def add(name, start):
        now = clocks()
        wall[name] = wall.get(name, 0.0) + now[0] - start[0]
        cpu[name] = cpu.get(name, 0.0) + now[1] - start[1]

    t = clocks()
    particles, _ = initial_particles(mock, cosmo, sim["seed"], "cpu")
    add("ICs", t)

    def timed_find(*args):
        start = clocks()
        found = find_haloes(*args)
        add("FoF (all snapshots)", start)
        return found

    t = clocks()
    catalogues = lightcone_snapshots(mock, cosmo, particles, find=timed_find)
    add("PM steps", t)
    wall["PM steps"] -= wall["FoF (all snapshots)"]
    cpu["PM steps"] -= cpu["FoF (all snapshots)"]
    t = clocks()
    haloes = {d: place_on_lightcone(catalogues, cosmo, mock.box_size, cone, d) for d in cone.directions}
    counts = {d: histogram(h, cone, mock.grid) for d, h in haloes.items()}
    add(f"{len(cone.directions)} cones + histograms", t)
    limit = mock.fof_settings.min_particles * particle_mass(
        Cosmology(Omega_m=0.4), mock.box_size, mock.n_particles
    )
    return {
        "seconds": wall,
        "cpu_seconds": cpu,
        "cones": len(cone.directions),
        "haloes_on_cone": [len(h) for h in haloes.values()],
        "in_histogram": [int(c.sum()) for c in counts.values()],
        "replicas": len({tuple(r) for r in haloes["+x"].replica}),
        "snapshots": [round(float(z), 3) for z in cone.snapshot_redshifts()],
        "mass_min": cone.mass_min,
        "fof_limit_at_Omega_m_0.4": limit,
        "cosmology": {k: round(v, 4) for k, v in sim["params"].items()},
    }


def print_construction(name: str, built: dict) -> None:
    wall, cpu, k = built["seconds"], built["cpu_seconds"], built["cones"]
    print(f"\n{name}:")
    for stage in wall:
        print(f"  {stage:<26} {wall[stage]:7.2f} s wall {cpu[stage]:7.2f} s CPU")
    total, total_cpu = sum(wall.values()), sum(cpu.values())
    print(
        f"  per box {total:.2f} s wall ({total_cpu:.2f} s CPU), per cone {total / k:.2f} s wall "
        f"({total_cpu / k:.2f} s CPU); haloes per cone {built['haloes_on_cone']}, in the z range "
        f"{built['in_histogram']}; {built['replicas']} replicas (+x cone); mass_min {built['mass_min']:.3g} "
        f"(FoF limit at Omega_m = 0.4: {built['fof_limit_at_Omega_m_0.4']:.3g}); snapshots z = {built['snapshots']}"
    )


EXPERIMENTS = {"vit": "hwang2022_vit", "cnn": "hwang2022_cnn", "summary": "hwang2022_summaries"}


def run(model: str, seed: int, args: argparse.Namespace, out: Path) -> dict:
    from lss_lightning.run import train

    run_dir = out / model / f"seed{seed}"
    net = {"vit": [f"model.net.name={args.vit}"], "cnn": [f"model.net.name={args.cnn}"]}.get(model, [])
    if model == "cnn":
        net.append(f"model.net.dropout={args.cnn_dropout}")
    overrides = [
        f"experiment={EXPERIMENTS[model]}",
        f"data.generate.n_sims={args.n_sims}",
        f"data.store={args.store}",
        "data.num_workers=1",
        f"trainer.max_epochs={args.epochs}",
        *net,
        "callbacks=default",
        "~callbacks.progress_bar",
        "~callbacks.model_summary",
        f"evaluation.fiducial_store={args.fiducial}",
        "evaluation.posterior.enabled=false",
        f"paths.output_dir={run_dir}",
        f"seed={seed}",
    ]
    start = time.perf_counter()
    train(_compose(overrides))
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    metrics["_minutes"] = (time.perf_counter() - start) / 60
    return metrics


def build_store(data_overrides: list[str], path: str) -> float:
    """Build (or finish) a light-cone store; minutes taken."""

    from lss_lightning.mocks.config import MockConfig
    from lss_lightning.mocks.generate import generate_store

    cfg = _compose([*data_overrides, f"data.store={path}"])
    start = time.perf_counter()
    generate_store(MockConfig.from_mapping(cfg.data.generate, store=path))
    return (time.perf_counter() - start) / 60


def summary_features(counts: np.ndarray) -> np.ndarray:
    """Hand-made summaries of one (1, N, N, N) cone (N divisible by 16): log counts in 16 redshift slices
    and the excess variance over Poisson of counts in (N/4)^3-cell sky cells, in 4 redshift ranges."""
    c = counts[0].astype(float)
    n = c.shape[0]
    features = list(np.log1p(c.sum((0, 1)).reshape(16, -1).sum(1)))
    for part in np.split(c, 4, axis=2):
        q = n // 4
        cells = part.reshape(n // q, q, n // q, q, 1, -1).sum((1, 3, 5))
        features.append(cells.var() / max(cells.mean(), 1e-9) - 1)
    return np.array(features)


def summary_baseline(store_path: str, lam: float = 0.1) -> dict:
    """Ridge regression of the parameters on ``summary_features``, fitted on the training and validation
    cones of the data module's split (by box) and scored on its test cones: the floor the networks must beat."""
    from lss_lightning.data.splits import load_or_make_splits
    from lss_lightning.store.reader import FieldStore

    cfg = _compose(["data=lightcone_w0wa"])
    split = dict(cfg.data.split)
    store = FieldStore(store_path)
    splits = load_or_make_splits(
        store, {k: v for k, v in split.items() if k != "seed"}, int(split.get("seed", 0))
    )

    def table(ids):
        x = np.stack([summary_features(store.read(i, "lightcone")) for i in ids])
        y = np.array([[store.simulation(i)["params"][p] for p in PARAMETERS] for i in ids])
        return x, y

    x, y = table(splits["train"] + splits["val"])
    xt, yt = table(splits["test"])
    mu, sd = x.mean(0), x.std(0) + 1e-12
    a = np.c_[np.ones(len(x)), (x - mu) / sd]
    w = np.linalg.solve(a.T @ a + lam * np.diag([0.0] + [1.0] * x.shape[1]), a.T @ y)
    pred = np.c_[np.ones(len(xt)), (xt - mu) / sd] @ w
    out = {}
    for j, p in enumerate(PARAMETERS):
        mse = float(np.mean((pred[:, j] - yt[:, j]) ** 2))
        var = float(np.var(yt[:, j]))
        out[p] = {"rmse": mse**0.5, "r2": 1 - mse / var if var > 0 else None}
    return out


def _spread(values: list) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return (
        f"{np.mean(values):.3f} ± {sd:.3f}"
        if abs(np.mean(values)) >= 0.1
        else f"{np.mean(values):.4f} ± {sd:.4f}"
    )


def report(results: dict[str, list[dict]], args: argparse.Namespace, baseline: dict | None = None) -> None:
    models = list(results)
    first = results[models[0]]
    print(
        f"\nHwang & Sabiu at CPU size: {args.n_sims} boxes x {args.cones} cones, RMSE and R^2 on the test cones "
        f"({len(first[0]['simulations'])}, of held-out boxes), "
        f"{args.epochs} epochs; mean ± standard deviation over {len(first)} training seeds\n"
    )
    print(
        "| parameter | "
        + " | ".join(f"{m} RMSE | {m} R^2 | {m} fid. scatter" for m in models)
        + " | talk ViT / CNN |"
    )
    print("|---|" + "---|---|---|" * len(models) + "---|")
    for p in PARAMETERS:
        cells = []
        for m in models:
            cells += [_spread([r["summary"][p][key] for r in results[m]]) for key in ("rmse", "r2")]
            fid = [r.get("fiducial", {}).get("parameters", {}).get(p, {}).get("scatter") for r in results[m]]
            cells.append(_spread(fid))
        print(f"| {p} | " + " | ".join(cells) + f" | {TALK['vit'][p]} / {TALK['cnn'][p]} |")
    if baseline:
        print(
            "\nsummary baseline (ridge on log counts in 16 z slices + clustering in 4, same split): "
            + ", ".join(
                f"{p} RMSE {baseline[p]['rmse']:.4f} R^2 {_spread([baseline[p]['r2']])}" for p in PARAMETERS
            )
        )
    print(
        "\n| model | net | parameters | s / epoch (median) | train + eval min per seed |\n|---|---|---|---|---|"
    )
    for m in models:
        rs = results[m]
        print(
            f"| {m} | {rs[0]['model']['backbone']} | {rs[0]['model']['parameters']:,} | "
            f"{np.median([r['model']['seconds_per_epoch'] for r in rs]):.1f} | {np.mean([r['_minutes'] for r in rs]):.1f} |"
        )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per network (seed=1..N)")
    parser.add_argument(
        "--n-sims",
        type=int,
        default=None,
        help="boxes (PM runs; default: the config's); cones = boxes x cones_per_box",
    )
    parser.add_argument("--n-fiducial", type=int, default=None, help="fiducial boxes (default: the config's)")
    parser.add_argument("--vit", default="vit3d_tiny", help="ViT preset (the talk's size: vit3d_hwang_sabiu)")
    parser.add_argument("--cnn", default="cnn3d", help="CNN preset (the talk's size: cnn3d_hwang_sabiu)")
    parser.add_argument("--cnn-dropout", type=float, default=0.5, help="dropout before the CNN's head")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the construction timing")
    parser.add_argument("--store", default=None, help="default: data=lightcone_w0wa's data.store")
    parser.add_argument("--fiducial", default=None, help="default: data=lightcone_fiducial's data.store")
    parser.add_argument("--options", action="store_true", help="also time the alternatives in OPTIONS")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument(
        "--models", default="vit,cnn,summary", help="networks to train, comma-separated (vit, cnn, summary)"
    )
    args = parser.parse_args(argv)
    data = _compose(["data=lightcone_w0wa"]).data
    args.store = args.store or str(data.store)
    args.n_sims = args.n_sims or int(data.generate.n_sims)
    args.cones = int(data.generate.lightcone.get("cones_per_box", 1))
    args.fiducial = args.fiducial or str(_compose(FIDUCIAL).data.store)
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    for name, overrides in OPTIONS.items() if args.options else [("CPU preset (data=lightcone_w0wa)", [])]:
        print_construction(name, construction(overrides, args.threads))
    if args.skip_training:
        return 0
    out = REPO_ROOT / "bench" / "results" / f"lightcone_{time.strftime('%Y%m%d-%H%M%S')}"
    minutes = build_store(["data=lightcone_w0wa", f"{G}.n_sims={args.n_sims}"], args.store)
    print(f"\nlight-cone store ready ({minutes:.1f} min, 0 if it existed): {args.store}")
    fiducial = [f"{G}.n_sims={args.n_fiducial}"] if args.n_fiducial else []
    minutes = build_store([*FIDUCIAL, *fiducial], args.fiducial)
    print(f"fiducial store ready ({minutes:.1f} min, 0 if it existed): {args.fiducial}")
    baseline = summary_baseline(args.store)
    print("summary baseline on the test cones: " + json.dumps(baseline))
    models = args.models.split(",")
    results = {m: [run(m, seed, args, out) for seed in range(1, args.seeds + 1)] for m in models}
    report(results, args, baseline)
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}; runs and metrics: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
