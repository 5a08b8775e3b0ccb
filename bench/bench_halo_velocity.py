"""Wu et al. 2023 on particle-mesh haloes: velocities at the haloes and the redshift-space correction.

Trains `experiment=wu2023` (24 PM boxes of 250 Mpc/h with 128^3 particles, FoF haloes in six mass bins,
redshift space, 90^3 cells; 18 training / 3 validation / 3 test boxes) with CPU-sized overrides, then
evaluates on the held-out boxes at the haloes: per mass bin the rms and bias of the line-of-sight velocity
residual and the 3D rms, for the U-net and for linear theory from the haloes (divided by the haloes' linear
bias, measured here from the training boxes as sqrt(P_hh / P_mm) at k < 0.1 h/Mpc); and the halo
multipoles xi_0, xi_2 at s = 10-40 Mpc/h in real space, redshift space and moved back by each.
Run: .venv/bin/python bench/bench_halo_velocity.py [extra Hydra overrides]   (~25 min on 2 CPU cores, 8 of them building the store)
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir

from lss_lightning.config import CONF_DIR, REPO_ROOT
from lss_lightning.run import build_data, train

CPU_OVERRIDES = [
    "experiment=wu2023",
    "model.net.width=8",  # the experiment's width 16 is for GPUs
    "trainer.max_epochs=30",
    "data.train_crops_per_sim=12",
    "+trainer.limit_val_batches=8",
    "data.num_workers=1",
    "data.generate.fields=[halos_rsd,velocity_linear_halos_rsd,halo_velocity_rsd,density]",  # + matter, for the bias
    "data.store=${paths.data_dir}/mocks/wu2023_pm_bench",
    "callbacks=default",
    "~callbacks.progress_bar",
]
S_REPORT = (10.0, 20.0, 30.0, 40.0)


def halo_bias(store_root: str, sims: list[str]) -> float:
    """Linear bias of all haloes in the bins: sqrt(P_hh / P_mm) over k < 0.1 h/Mpc, real space."""
    import torch

    from lss_lightning.data.store import FieldStore
    from lss_lightning.fields.catalogue import in_any_bin, parse_mass_bins
    from lss_lightning.fields.mesh import cic_paint
    from lss_lightning.fields.spectra import power_spectrum

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


def main(extra: list[str]) -> int:
    out = REPO_ROOT / "bench" / "results" / f"halo_velocity_{time.strftime('%Y%m%d-%H%M%S')}"
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*CPU_OVERRIDES, *extra, f"paths.output_dir={out}"])
    start = time.perf_counter()
    dm = build_data(cfg)  # builds the store first, so the haloes' bias is measured on the training boxes
    store_minutes = (time.perf_counter() - start) / 60
    bias = halo_bias(str(dm.store_root), dm.splits["train"])
    overrides = [*CPU_OVERRIDES, *extra, f"paths.output_dir={out}", f"evaluation.linear_bias={bias:.3f}"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    start = time.perf_counter()
    train(cfg)
    minutes = (time.perf_counter() - start) / 60
    metrics = json.loads((Path(out) / "eval" / "metrics.json").read_text())
    halos = metrics["halos"]
    print(
        f"\nWu 2023 on {len(metrics['simulations'])} held-out {metrics['source']} boxes ({metrics['box_size']:g} Mpc/h, "
        f"{metrics['grid']}^3, z = {metrics['redshift']:g}); store {store_minutes:.1f} min, train + eval {minutes:.1f} min, "
        f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB; halo bias {bias:.2f}"
    )
    print(f"overrides: {' '.join(overrides[:-1])}")
    print("\nvelocities at the haloes [km/s] (line of sight: rms, bias; 3D rms; correlation with the truth)")
    print(
        "| mass bin [Msun/h] | haloes | true v_los rms | U-net rms | U-net bias | U-net 3D | U-net r | linear rms | linear bias | linear 3D | linear r |"
    )
    print("|---" * 11 + "|")
    for name, u in halos["velocities"]["unet"].items():
        lin = halos["velocities"]["linear"][name]
        print(
            f"| {name.removesuffix(' Msun/h')} | {u['n_halos']} | {u['true_los_rms']:.0f} | {u['los_rms']:.0f} | "
            f"{u['los_bias']:.1f} | {u['rms_3d']:.0f} | {u['los_correlation']:.3f} | {lin['los_rms']:.0f} | "
            f"{lin['los_bias']:.1f} | {lin['rms_3d']:.0f} | {lin['los_correlation']:.3f} |"
        )
    clustering = halos["clustering"]
    s = np.asarray(clustering["real space"]["s"])
    print(
        "\nhalo multipoles s^2 xi_l [(Mpc/h)^2]: real space, redshift space, moved back by U-net / linear theory"
    )
    print(
        "| s [Mpc/h] | "
        + " | ".join(f"xi_{ell} {case}" for ell in (0, 2) for case in ("real", "redshift", "U-net", "linear"))
        + " |"
    )
    print("|---" * 9 + "|")
    for target in S_REPORT:
        j = int(np.argmin(np.abs(s - target)))
        row = []
        for ell in (0, 2):
            for case in ("real space", "redshift space", "unet", "linear"):
                row.append(f"{s[j] ** 2 * clustering[case][f'xi{ell}'][j]:.1f}")
        print(f"| {s[j]:.1f} | " + " | ".join(row) + " |")
    residual = halos["quadrupole_residual"]
    print(
        f"\nxi_2 left after moving back (sum over s of |xi_2 - xi_2 real| s^2 over that of redshift space): "
        f"U-net {residual['unet']:.3f}, linear theory {residual['linear']:.3f}"
    )
    print(f"metrics and plots: {out / 'eval'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
