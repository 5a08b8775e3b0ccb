"""Every figure of an evaluation: spectra with residual and correlation panels, field slices, halo clustering,
parameter estimates against truth, the fiducial scatter and a ViT's attention map."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from lss_lightning.data.crops import read_periodic
from lss_lightning.evaluate.attention import attention_rollout
from lss_lightning.store.reader import FieldStore


def save_figure(fig, path: Path, title: str = "", dpi: int = 110) -> Path:
    """Lay out, title, write (PNG) and close a figure; returns its path."""
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


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
    return save_figure(fig, path, title)


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
    return save_figure(fig, path, dpi=100)


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
    return save_figure(fig, path, title)


def plot_parameters(metrics: dict, path: Path) -> Path:
    """Predicted against true value per parameter, with the identity line and 1-sigma error bars."""
    names = metrics["parameters"]
    truth = np.array(metrics["per_simulation"]["truth"])
    pred = np.array(metrics["per_simulation"]["prediction"])
    sigma = metrics["per_simulation"]["sigma"]
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.3), squeeze=False)
    for j, (ax, name) in enumerate(zip(axes[0], names, strict=True)):
        yerr = None if sigma is None else np.array(sigma)[:, j]
        ax.errorbar(truth[:, j], pred[:, j], yerr=yerr, fmt="o", ms=3, lw=0.8)
        lo, hi = min(truth[:, j].min(), pred[:, j].min()), max(truth[:, j].max(), pred[:, j].max())
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        s = metrics["summary"][name]
        ax.set_title(f"{name}: rel. err {s['relative_error']:.3f}", fontsize=9)
        ax.set_xlabel("true")
    axes[0, 0].set_ylabel("predicted (box estimate, 1 sigma)")
    return save_figure(fig, path)


def plot_fiducial(estimates: np.ndarray, truth: np.ndarray, names: Sequence[str], path: Path) -> Path:
    """Histogram of the box estimates of a fiducial set per parameter, truth as a line."""
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.0), squeeze=False)
    for j, (ax, name) in enumerate(zip(axes[0], names, strict=True)):
        ax.hist(estimates[:, j], bins=max(5, len(estimates) // 4), alpha=0.7)
        ax.axvline(truth[j], color="k", ls="--", lw=1)
        ax.set_title(
            f"{name}: scatter {estimates[:, j].std(ddof=1) if len(estimates) > 1 else 0:.4f}", fontsize=9
        )
    return save_figure(fig, path)


def plot_attention(
    model, store: FieldStore, sim: str, input_names: Sequence[str], crop: int, path: Path
) -> Path:
    """The first channel of the first tile of ``sim`` and the ViT's attention rollout on its middle z slice."""
    inputs = np.concatenate([store.read(sim, n) for n in input_names])
    cube = torch.from_numpy(read_periodic(inputs, (0, 0, 0), crop))[None].to(next(model.parameters()).device)
    with torch.no_grad():
        x, _ = model.network_inputs(cube)
    rollout = attention_rollout(model.net, x)
    p = model.net.patch_size
    cells = np.repeat(np.repeat(np.repeat(rollout, p, 0), p, 1), p, 2)
    z = crop // 2
    fig, axes = plt.subplots(1, 2, figsize=(7.0, 3.3))
    axes[0].imshow(cube[0, 0, :, :, z].cpu().numpy().T, origin="lower", cmap="magma")
    axes[0].set_title(f"{input_names[0]}, z = {z} of {crop} cells", fontsize=9)
    axes[1].imshow(cells[:, :, z].T, origin="lower", cmap="viridis")
    axes[1].set_title("attention rollout (class token)", fontsize=9)
    for ax in axes:
        ax.set_xlabel("x [cells]")
    axes[0].set_ylabel("y [cells]")
    return save_figure(fig, path)
