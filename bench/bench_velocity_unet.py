"""Velocity reconstruction on held-out mocks: the Wu 2021 U-net against linear theory.

Trains `experiment=wu2021` (particle-mesh mocks of 256 Mpc/h, 128^3 cells of 2 Mpc/h, 24 training /
4 validation / 4 test boxes; add `data.generate.solver=lpt data.store=data/mocks/wu2021_lpt` for 2LPT mocks)
with CPU-sized overrides, evaluates the best checkpoint on the 4 held-out test boxes, and
prints r(k) and T(k) of the velocity at k = 0.1, 0.3, 0.5, 1.0 h/Mpc for the U-net and for linear theory
v = i a H f delta k / k^2 from the same density, side by side. Passes if the U-net's r(k) beats linear
theory at every k >= 0.3 h/Mpc.
Run: .venv/bin/python bench/bench_velocity_unet.py [extra Hydra overrides]   (~25 min on 2 CPU cores, store included)
     .venv/bin/python bench/bench_velocity_unet.py --report <run>/eval/metrics.json   (the table of a run)
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

from lss_lightning.config import CONF_DIR, REPO_ROOT
from lss_lightning.run import train

CPU_OVERRIDES = [
    "experiment=wu2021",
    "model.net.width=16",  # the experiment's width 32 is for GPUs
    "trainer.max_epochs=10",
    "data.train_crops_per_sim=48",
    "+trainer.limit_val_batches=16",  # 256 validation crops per epoch: a monitor, not the test
    "data.num_workers=1",
    "callbacks=default",
    "~callbacks.progress_bar",
]


def table(metrics: dict) -> bool:
    """Print r(k), T(k) and the error power P_err / P_true = T^2 + 1 - 2 T r of both; True if the U-net's r
    beats linear theory at every k >= 0.3 h/Mpc."""
    summary = metrics["summary"]
    print(
        "\n| k [h/Mpc] | r U-net | r linear | T U-net | T linear | P_err/P_true U-net | P_err/P_true linear |"
        "\n|---|---|---|---|---|---|---|"
    )
    ok = True
    for k in metrics["report_k"]:
        u, lin = summary["unet"]["vector"][f"{k:g}"], summary["linear"]["vector"][f"{k:g}"]
        err_u, err_l = (e["T"] ** 2 + 1 - 2 * e["T"] * e["r"] for e in (u, lin))
        print(
            f"| {k:g} | {u['r']:.3f} | {lin['r']:.3f} | {u['T']:.3f} | {lin['T']:.3f} | {err_u:.3f} | {err_l:.3f} |"
        )
        if k >= 0.3:
            ok &= u["r"] > lin["r"]
    print(f"\nU-net beats linear theory in r(k) at every k >= 0.3 h/Mpc: {'yes' if ok else 'NO'}")
    return ok


def main(extra: list[str]) -> int:
    if extra[:1] == ["--report"]:  # print the table of an earlier run: --report <run>/eval/metrics.json
        return 0 if table(json.loads(Path(extra[1]).read_text())) else 1
    out = REPO_ROOT / "bench" / "results" / f"velocity_unet_{time.strftime('%Y%m%d-%H%M%S')}"
    overrides = [*CPU_OVERRIDES, *extra, f"paths.output_dir={out}"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    start = time.perf_counter()
    train(cfg)
    minutes = (time.perf_counter() - start) / 60
    metrics = json.loads((Path(out) / "eval" / "metrics.json").read_text())
    print(
        f"\nvelocity reconstruction on {len(metrics['simulations'])} held-out {metrics['source']} boxes "
        f"({metrics['box_size']:g} Mpc/h, {metrics['grid']}^3, z = {metrics['redshift']:g}); "
        f"train + eval {minutes:.1f} min, peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
    )
    print(f"overrides: {' '.join(overrides[:-1])}")
    ok = table(metrics)
    print(f"metrics, plots and predictions: {out / 'eval'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
