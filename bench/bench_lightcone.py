"""Hwang & Sabiu on particle-mesh light cones: construction time, and the ViT / CNN table at CPU size.

1. One light cone of data=lightcone_w0wa (96^3 particles in 384 Mpc/h, PM to z = 0.3 with FoF haloes at 6
   redshifts, -20 < RA, DEC < 20 degrees, 0.3 < z < 0.8, haloes above 1.5e14 Msun/h, 64^3 histogram), stage
   by stage: ICs, PM steps (with the outputs), FoF per snapshot, placing on the tiled cone + histogram.
2. Builds (or reuses) the Latin-hypercube cone store (64 cones over the talk's w0-wa prior) and a fiducial
   store (16 seeds at Planck 2018), then trains experiment=hwang2022_vit and experiment=hwang2022_cnn (the
   talk's sizes: ViT 22.6M, CNN 9.2M parameters) on identical splits with CPU-sized epochs, and prints the
   talk's table: per parameter (Omega_m, w0, n_s) the RMSE on the test cones and the scatter of the estimates
   over the fiducial cones, the parameters and the training time, ViT and CNN side by side, the talk's beside.
Run: .venv/bin/python bench/bench_lightcone.py [--epochs 20] [--n-sims 64]   (~70 min on 2 CPU cores)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

from lss_lightning.config import CONF_DIR, REPO_ROOT

TALK = {  # Hwang & Sabiu's talk: errors, parameters, training time (GPU)
    "vit": {"Omega_m": 0.0043, "w0": 0.012, "n_s": 0.0063, "parameters": "22.4M", "time": "~90 min"},
    "cnn": {"Omega_m": 0.0058, "w0": 0.019, "n_s": 0.0075, "parameters": "9.2M", "time": "~40 min"},
}
FIDUCIAL = ["data=lightcone_fiducial"]


def construction(data_overrides: list[str]) -> dict:
    """Seconds per stage of one cone (same process, after CAMB), haloes on it, replicas used."""
    import torch

    from lss_lightning.cosmology import Cosmology
    from lss_lightning.mocks.generate import (
        MockConfig,
        design,
        find_haloes,
        initial_particles,
        lightcone_snapshots,
    )
    from lss_lightning.mocks.lightcone import histogram, place_on_lightcone

    torch.set_num_threads(2)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["data=lightcone_w0wa", *data_overrides])
    from omegaconf import OmegaConf

    mock = MockConfig(
        **{**OmegaConf.to_container(cfg.data.generate, resolve=True), "store": "unused", "device": "cpu"}
    )
    sim = design(mock)[0]
    cosmo = Cosmology.from_mapping(sim["params"])
    cosmo.linear_power([0.1])
    cone = mock.lightcone_settings
    redshifts = cone.snapshot_redshifts()
    seconds = {"FoF (all snapshots)": 0.0}
    t = time.perf_counter()
    particles, _ = initial_particles(mock, cosmo, sim["seed"], "cpu")
    seconds["ICs"] = time.perf_counter() - t

    def timed_find(*args):
        start = time.perf_counter()
        found = find_haloes(*args)
        seconds["FoF (all snapshots)"] += time.perf_counter() - start
        return found

    t = time.perf_counter()
    catalogues = lightcone_snapshots(mock, cosmo, particles, find=timed_find)
    seconds["PM steps"] = time.perf_counter() - t - seconds["FoF (all snapshots)"]
    t = time.perf_counter()
    haloes = place_on_lightcone(catalogues, cosmo, mock.box_size, cone)
    counts = histogram(haloes, cone, mock.grid)
    seconds["cone + histogram"] = time.perf_counter() - t
    return {
        "seconds": seconds,
        "haloes_on_cone": len(haloes),
        "in_histogram": int(counts.sum()),
        "replicas": len({tuple(r) for r in haloes.replica}),
        "snapshots": [round(float(z), 3) for z in redshifts],
        "cosmology": {k: round(v, 4) for k, v in sim["params"].items()},
    }


def run(model: str, args: argparse.Namespace, out: Path) -> dict:
    from lss_lightning.run import train

    overrides = [
        f"experiment=hwang2022_{model}",
        f"data.generate.n_sims={args.n_sims}",
        f"data.store={args.store}",
        "data.num_workers=1",
        f"trainer.max_epochs={args.epochs}",
        "callbacks=default",
        "~callbacks.progress_bar",
        "~callbacks.model_summary",
        f"evaluation.fiducial_store={args.fiducial}",
        "evaluation.posterior.enabled=false",
        f"paths.output_dir={out / model}",
        "seed=12345",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    start = time.perf_counter()
    train(cfg)
    metrics = json.loads((out / model / "eval" / "metrics.json").read_text())
    metrics["_minutes"] = (time.perf_counter() - start) / 60
    return metrics


def build_store(data_overrides: list[str], path: str) -> float:
    """Build (or finish) a light-cone store; minutes taken."""
    from omegaconf import OmegaConf

    from lss_lightning.mocks.generate import MockConfig, generate_store

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*data_overrides, f"data.store={path}"])
    values = OmegaConf.to_container(cfg.data.generate, resolve=True)
    start = time.perf_counter()
    generate_store(MockConfig(**{**values, "store": path}))
    return (time.perf_counter() - start) / 60


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--n-sims", type=int, default=64)
    parser.add_argument("--store", default=str(REPO_ROOT / "data" / "mocks" / "lightcone_w0wa"))
    parser.add_argument("--fiducial", default=str(REPO_ROOT / "data" / "mocks" / "lightcone_fiducial"))
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args(argv)
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    built = construction([])
    print("\none light cone (data=lightcone_w0wa), stage by stage:")
    for name, value in built["seconds"].items():
        print(f"  {name:<22} {value:7.2f} s")
    print(
        f"  {built['haloes_on_cone']} haloes on the cone from {built['replicas']} box replicas, {built['in_histogram']} in "
        f"0.3 < z_obs < 0.8; snapshots z = {built['snapshots']}; cosmology {built['cosmology']}"
    )
    if args.skip_training:
        return 0
    out = REPO_ROOT / "bench" / "results" / f"lightcone_{time.strftime('%Y%m%d-%H%M%S')}"
    minutes = build_store(["data=lightcone_w0wa", f"data.generate.n_sims={args.n_sims}"], args.store)
    print(f"\nlight-cone store ready ({minutes:.1f} min, 0 if it existed): {args.store}")
    minutes = build_store(FIDUCIAL, args.fiducial)
    print(f"fiducial store ready ({minutes:.1f} min, 0 if it existed): {args.fiducial}")
    results = {m: run(m, args, out) for m in ("vit", "cnn")}
    print(
        f"\nHwang & Sabiu at CPU size: {args.n_sims} PM light cones, {args.epochs} epochs; RMSE on the test cones, "
        "scatter over the fiducial cones (the talk's errors beside)\n"
    )
    print(
        "| parameter | ViT RMSE | ViT fiducial scatter | CNN RMSE | CNN fiducial scatter | talk ViT | talk CNN |"
    )
    print("|---|---|---|---|---|---|---|")
    for p in ("Omega_m", "w0", "n_s"):
        cells = []
        for m in ("vit", "cnn"):
            fid = results[m].get("fiducial", {}).get("parameters", {}).get(p, {}).get("scatter")
            cells += [f"{results[m]['summary'][p]['rmse']:.4f}", "-" if fid is None else f"{fid:.4f}"]
        print(f"| {p} | " + " | ".join(cells) + f" | {TALK['vit'][p]} | {TALK['cnn'][p]} |")
    print(
        "\n| model | parameters | s / epoch (median) | training min (to the evaluated checkpoint) | train + eval min | talk: parameters, time |\n|---|---|---|---|---|---|"
    )
    for m in ("vit", "cnn"):
        r = results[m]["model"]
        print(
            f"| {m.upper()} | {r['parameters']:,} | {r['seconds_per_epoch']:.1f} | {r['training_seconds'] / 60:.1f} | "
            f"{results[m]['_minutes']:.1f} | "
            f"{TALK[m]['parameters']}, {TALK[m]['time']} |"
        )
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}; runs and metrics: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
