"""Whole-box evaluation of parameter estimation: every sub-volume of each test box, averaged per box.

Each test box is tiled with the training crop size; the network's estimate for the box is the mean of
its sub-volume estimates (and, for a moment network, the mean predicted standard deviation, alongside
the scatter between sub-volumes). Per parameter: RMSE, mean relative error |pred - true| / |true|,
coefficient of determination R^2, and for moment networks the reduced chi^2 of the errors.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from lss_lightning.data.crops import tile_batches, tile_corners
from lss_lightning.data.store import FieldStore


@torch.no_grad()
def predict_simulation(model, inputs: np.ndarray, crop: int, pad: int, batch_size: int = 8):
    """Per-sub-volume estimates (n_tiles, n_params) of mean and std (std None without a moment network)."""
    device = next(model.parameters()).device
    means, stds = [], []
    for _, batch in tile_batches(inputs, crop, pad, batch_size):
        mean, std = model.predict_parameters(torch.from_numpy(batch).to(device))
        means.append(mean.float().cpu().numpy())
        if std is not None:
            stds.append(std.float().cpu().numpy())
    return np.concatenate(means), (np.concatenate(stds) if stds else None)


def evaluate_inference(
    model,
    store: FieldStore,
    sim_ids: Sequence[str],
    *,
    input_names: Sequence[str],
    parameter_names: Sequence[str],
    crop: int,
    pad: int,
    out_dir: Path,
    batch_size: int = 8,
    progress: bool = True,
) -> dict:
    """Estimate the parameters of every test box, write metrics.json, return the metrics."""
    from rich.progress import track

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    truth, pred, sigma, scatter = [], [], [], []
    for sim in track(sim_ids, description="evaluating test boxes", disable=not progress):
        inputs = np.concatenate([store.read(sim, n) for n in input_names])
        means, stds = predict_simulation(model, inputs, crop, pad, batch_size)
        truth.append([store.cosmology(sim).to_dict()[p] for p in parameter_names])
        pred.append(means.mean(0))
        scatter.append(means.std(0))
        if stds is not None:
            sigma.append(stds.mean(0))
    truth, pred, scatter = np.array(truth), np.array(pred), np.array(scatter)
    sigma = np.array(sigma) if sigma else None
    per_parameter = {}
    for j, name in enumerate(parameter_names):
        err = pred[:, j] - truth[:, j]
        var = np.var(truth[:, j])
        entry = {
            "rmse": float(np.sqrt(np.mean(err**2))),
            "relative_error": float(np.mean(np.abs(err) / np.abs(truth[:, j]))),
            "r2": float(1.0 - np.mean(err**2) / var) if var > 0 else None,
            "subvolume_scatter": float(np.mean(scatter[:, j])),
        }
        if sigma is not None:
            entry["mean_sigma"] = float(np.mean(sigma[:, j]))
            entry["reduced_chi2"] = float(np.mean((err / sigma[:, j]) ** 2))
        per_parameter[name] = entry
    metrics = {
        "task": "parameters",
        "simulations": list(sim_ids),
        "parameters": list(parameter_names),
        "box_size": store.box_size,
        "grid": store.grid,
        "crop": crop,
        "subvolumes_per_box": len(tile_corners(store.grid, crop)),
        "summary": per_parameter,
        "per_simulation": {
            "truth": truth.tolist(),
            "prediction": pred.tolist(),
            "sigma": None if sigma is None else sigma.tolist(),
        },
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def plot_parameters(metrics: dict, path: Path) -> Path:
    """Predicted against true value per parameter, with the identity line and error bars if any."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    axes[0, 0].set_ylabel("predicted (mean over sub-volumes)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
