"""Figures for evaluation: spectra with residual and correlation panels, and field slices."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

QUANTITY_LABELS = {
    "vector": r"$\mathbf{v}$",
    "magnitude": r"$|\mathbf{v}|$",
    "divergence": r"$\nabla\cdot\mathbf{v}$",
    "vorticity": r"$\nabla\times\mathbf{v}$",
    "momentum": r"$(1+\delta)\,\mathbf{v}$",
}
STYLES = {
    "unet": {"color": "C0", "label": "U-net"},
    "linear": {"color": "C1", "label": "linear theory", "ls": "--"},
}


def plot_spectra(sums: Mapping, path: Path, title: str = "") -> Path:
    """Columns: quantities. Rows: P(k) (truth, U-net, linear); P_pred / P_true - 1; r(k)."""
    names = [n for n in QUANTITY_LABELS if n in sums["unet"].sums]
    fig, axes = plt.subplots(
        3,
        len(names),
        figsize=(3.4 * len(names), 8),
        sharex=True,
        squeeze=False,
        gridspec_kw={"height_ratios": [2, 1, 1]},
    )
    for col, name in enumerate(names):
        top, mid, bottom = axes[:, col]
        truth = sums["unet"].statistics(name)
        top.loglog(truth.k, truth.power_true, "k-", lw=1.5, label="truth")
        for label, s in sums.items():
            stats = s.statistics(name)
            with np.errstate(divide="ignore", invalid="ignore"):
                top.loglog(stats.k, stats.power_pred, **STYLES[label])
                mid.semilogx(stats.k, stats.power_pred / stats.power_true - 1, **STYLES[label])
                bottom.semilogx(stats.k, stats.correlation, **STYLES[label])
        top.set_title(QUANTITY_LABELS[name])
        mid.axhline(0, color="k", lw=0.5)
        mid.set_ylim(-1, 1)
        bottom.axhline(1, color="k", lw=0.5)
        bottom.set_ylim(-0.1, 1.05)
        bottom.set_xlabel(r"$k\ [h\,\mathrm{Mpc}^{-1}]$")
    axes[0, 0].set_ylabel(r"$P(k)$")
    axes[1, 0].set_ylabel(r"$P_\mathrm{pred}/P_\mathrm{true}-1$")
    axes[2, 0].set_ylabel(r"$r(k)$")
    axes[0, 0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_slices(slices: Mapping[str, np.ndarray], box_size: float, path: Path, component: int = 0) -> Path:
    """One cell-thick slice (middle of the z axis) of the input density, v_component of the truth,
    the U-net, linear theory, and both errors, in km/s."""
    n = slices["truth"].shape[-1]
    cut = n // 2
    extent = (0, box_size, 0, box_size)
    panels = [
        (
            "input density " + r"$\log_{10}(2+\delta)$",
            np.log10(np.clip(2 + slices["input"][0, :, :, cut], 1e-3, None)),
            "viridis",
            None,
        ),
        ("truth", slices["truth"][component, :, :, cut], "RdBu_r", "v"),
        ("U-net", slices["unet"][component, :, :, cut], "RdBu_r", "v"),
        ("linear theory", slices["linear"][component, :, :, cut], "RdBu_r", "v"),
        (
            "U-net - truth",
            slices["unet"][component, :, :, cut] - slices["truth"][component, :, :, cut],
            "RdBu_r",
            "v",
        ),
        (
            "linear - truth",
            slices["linear"][component, :, :, cut] - slices["truth"][component, :, :, cut],
            "RdBu_r",
            "v",
        ),
    ]
    vmax = float(np.percentile(np.abs(slices["truth"][component, :, :, cut]), 99)) or 1.0
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 3.6))
    for ax, (title, image, cmap, kind) in zip(axes, panels, strict=True):
        kwargs = {"vmin": -vmax, "vmax": vmax} if kind == "v" else {}
        im = ax.imshow(image.T, origin="lower", extent=extent, cmap=cmap, **kwargs)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(r"$x\ [h^{-1}\mathrm{Mpc}]$")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="km/s" if kind == "v" else None)
    axes[0].set_ylabel(r"$y\ [h^{-1}\mathrm{Mpc}]$")
    fig.suptitle(f"slice z = {cut * box_size / n:.0f} Mpc/h, component {'xyz'[component]}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


HALO_CASES = {
    "real space": {"color": "k", "label": "real space"},
    "redshift space": {"color": "C3", "label": "redshift space", "ls": ":"},
    "unet": {"color": "C0", "label": "moved back: U-net"},
    "linear": {"color": "C1", "label": "moved back: linear theory", "ls": "--"},
}


def plot_halo_clustering(halos: Mapping, path: Path, title: str = "") -> Path:
    """Top: s^2 xi_0, s^2 xi_2, s^2 xi_4 and xi_1D(mu) of the haloes in real space, redshift space and moved
    back by each reconstruction; bottom: the difference from real space."""
    cases = halos["clustering"]
    real = cases["real space"]
    s = np.asarray(real["s"])
    fig, axes = plt.subplots(2, 4, figsize=(15, 6.5), sharex="col", gridspec_kw={"height_ratios": [2, 1]})
    for col, ell in enumerate((0, 2, 4)):
        top, bottom = axes[:, col]
        for case, style in HALO_CASES.items():
            if case not in cases:
                continue
            xi = np.asarray(cases[case][f"xi{ell}"])
            top.plot(s, s**2 * xi, **style)
            bottom.plot(s, s**2 * (xi - np.asarray(real[f"xi{ell}"])), **style)
        top.set_title(rf"$s^2\xi_{ell}(s)$")
        bottom.axhline(0, color="k", lw=0.5)
        bottom.set_xlabel(r"$s\ [h^{-1}\mathrm{Mpc}]$")
    top, bottom = axes[:, 3]
    mu = np.asarray(real["mu"])
    for case, style in HALO_CASES.items():
        if case in cases:
            xi_mu = np.asarray(cases[case]["xi_1d_mu"])
            top.plot(mu, xi_mu, **style)
            bottom.plot(mu, xi_mu - np.asarray(real["xi_1d_mu"]), **style)
    top.set_title(r"$\xi_{1D}(\mu)=\int\xi(s,\mu)\,ds$")
    bottom.axhline(0, color="k", lw=0.5)
    bottom.set_xlabel(r"$\mu$")
    axes[0, 0].set_ylabel(r"$[h^{-2}\mathrm{Mpc}^2]$")
    axes[1, 0].set_ylabel("minus real space")
    axes[0, 0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
