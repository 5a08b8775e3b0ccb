"""Training samples per second per backbone and precision (CPU, and GPU when there is one), and DDP scaling.

Each case is a real training run of the project's task module and data module (mock stores of 64^3 cells
built in a temporary folder, or --store/--lh-store), timed by Lightning's ThroughputMonitor over the last
--measure steps after --warmup steps. Backbones, sized as in their configs: the Wu 2021 U-net (width 16,
20^3 crops padded by 6), the generic 3D CNN and the tiny 3D ViT (32^3 crops), batch 16. Precisions:
32-true and bf16-mixed; on a GPU also bf16-mixed with torch.compile (channels-last-3d is on for 3D
convolutions on CUDA). Last, the U-net at 32-true with DDP over 2 CPU processes (gloo, one thread each)
against 1 process (all threads, and one thread): the samples/s ratio, global batch 2 x 16 against 16.
Run: .venv/bin/python bench/bench_throughput.py [--measure 12] [--cases unet,cnn3d,vit3d] [--no-ddp]
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch.callbacks import ThroughputMonitor
from lightning.pytorch.loggers import CSVLogger
from omegaconf import OmegaConf

from lss_lightning.config import CONF_DIR
from lss_lightning.mocks.config import MockConfig
from lss_lightning.mocks.generate import generate_store
from lss_lightning.run.assemble import build_data, build_model

BACKBONES = {
    "unet": ["model=unet", "model.net.name=wu2021", "model.net.width=16", "data.crop=20", "data.pad=6"],
    "cnn3d": ["model=cnn3d", "model.net.name=cnn3d", "data.crop=32", "data.targets=[Omega_m,sigma_8]"],
    "vit3d": [
        "model=vit3d",
        "model.net.name=vit3d_tiny",
        "+model.net.patch_size=8",
        "data.crop=32",
        "data.targets=[Omega_m,sigma_8]",
    ],
}


def batch_items(batch) -> int:
    """Samples in a batch (ThroughputMonitor's batch_size_fn; module level so ddp_spawn can pickle it)."""
    return len(batch["input"])


def build_stores(root: Path) -> tuple[Path, Path]:
    common = {"n_sims": 8, "grid": 64, "box_size": 128.0, "power": "eh", "device": "cpu"}
    fields = generate_store(
        MockConfig(store=str(root / "fields"), fields=["density", "velocity"], **common), progress=False
    )
    lh = generate_store(
        MockConfig(store=str(root / "lh"), fields=["density"], design="latin_hypercube", **common),
        progress=False,
    )
    return fields.root, lh.root


def samples_per_second(
    backbone: str, store: Path, out: Path, precision: str, accelerator: str, args, devices=1, compile=False
):
    overrides = [
        *BACKBONES[backbone],
        f"data.store={store}",
        f"data.num_workers={args.workers}",
        "data.batch_size=16",
        "data.train_crops_per_sim=256",
        "data.split={train: 0.75, val: 0.25, test: 0.0, seed: 0}",
        f"paths.output_dir={out}",
        f"model.compile={str(compile).lower()}",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    dm = build_data(cfg)
    model = build_model(cfg, dm)
    model.run_config = OmegaConf.to_container(cfg, resolve=True)
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=devices,
        strategy="ddp_spawn" if devices > 1 else "auto",
        precision=precision,
        max_steps=args.warmup + args.measure,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=CSVLogger(out, name="", version=""),
        callbacks=[ThroughputMonitor(batch_size_fn=batch_items, window_size=args.measure + 1)],
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )
    trainer.fit(model, datamodule=dm)
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    key = "train/samples_per_sec" if devices > 1 else "train/device/samples_per_sec"  # all ranks together
    return float(next(r[key] for r in reversed(rows) if r.get(key)))  # over the last window


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", help="a store with density and velocity (default: 8 mocks of 64^3)")
    parser.add_argument("--lh-store", help="a store of varying cosmologies with density")
    parser.add_argument("--warmup", type=int, default=3, help="steps before timing")
    parser.add_argument("--measure", type=int, default=12, help="steps timed")
    parser.add_argument("--workers", type=int, default=None, help="loader workers (default: 0 CPU, 4 GPU)")
    parser.add_argument("--cases", default="unet,cnn3d,vit3d")
    parser.add_argument("--no-ddp", action="store_true", help="skip the 2-process CPU comparison")
    args = parser.parse_args()
    gpu = torch.cuda.is_available()
    args.workers = args.workers if args.workers is not None else (4 if gpu else 0)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, GPU: {gpu and torch.cuda.get_device_name()}; "
        f"load average {os.getloadavg()[0]:.1f} (other processes on the same cores slow every case down)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.store and args.lh_store:
            fields, lh = Path(args.store), Path(args.lh_store)
        else:
            start = time.perf_counter()
            fields, lh = build_stores(tmp)
            print(f"mock stores built in {time.perf_counter() - start:.1f} s")
        stores = {"unet": fields, "cnn3d": lh, "vit3d": lh}
        devices = [("cpu", "32-true", False), ("cpu", "bf16-mixed", False)]
        if gpu:
            devices += [("gpu", "32-true", False), ("gpu", "bf16-mixed", False), ("gpu", "bf16-mixed", True)]
        print(f"\n  {'backbone':<8} {'device':<6} {'precision':<22} {'samples/s':>10}")
        for backbone in filter(None, args.cases.split(",")):
            for accelerator, precision, compiled in devices:
                out = tmp / f"{backbone}_{accelerator}_{precision}_{compiled}"
                rate = samples_per_second(
                    backbone, stores[backbone], out, precision, accelerator, args, compile=compiled
                )
                label = precision + (" + torch.compile" if compiled else "")
                print(f"  {backbone:<8} {accelerator:<6} {label:<22} {rate:10.1f}", flush=True)
        if not args.no_ddp:
            threads = torch.get_num_threads()
            one = samples_per_second("unet", fields, tmp / "ddp1", "32-true", "cpu", args)
            torch.set_num_threads(1)  # the threads each DDP process gets on 2 cores
            one_thread = samples_per_second("unet", fields, tmp / "ddp1t", "32-true", "cpu", args)
            torch.set_num_threads(threads)
            two = samples_per_second("unet", fields, tmp / "ddp2", "32-true", "cpu", args, devices=2)
            print(
                f"\nU-net 32-true on CPU: 1 process ({threads} threads) {one:.1f} samples/s, 1 process (1 thread) "
                f"{one_thread:.1f}, 2 DDP processes (gloo, 1 thread each) {two:.1f}: "
                f"2 processes / 1 process = {two / one:.2f}"
            )


if __name__ == "__main__":
    main()
