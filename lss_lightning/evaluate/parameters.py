"""Whole-box evaluation of parameter estimation: every sub-volume of each test box, combined per box.

Each test box is tiled with the training crop size and every tile (sub-volume) is estimated. Box level
(``summary``, ``estimates.csv``, ``parameters.png``): the box estimate is the mean of its sub-volume
means. Its sigma depends on how the sub-volume errors correlate, which a network does not say
(``box_combination``): "correlated" (default) takes sigma^2 = mean_i sigma_i^2, as if the sub-volumes
carried the same information (an upper bound: their errors share the box's large-scale modes and the
network's bias at the box's cosmology); "independent" combines them as independent measurements,
mu = sum w_i mu_i / sum w_i, sigma = (sum w_i)^-1/2 with w_i = sigma_i^-2 (a lower bound). The box
coverage says which holds. An MSE network has no sigma (NaN). Per parameter: RMSE, mean relative
error |pred - true| / |true|, R^2, reduced chi^2 = mean ((pred - true) / sigma)^2 and the 68% / 95%
coverage.

Sub-volume level (``calibration``): the network's own claim, each tile's N(mu_i, sigma_i^2) against the
truth: coverage, rank (PIT) test and TARP (``evaluate.calibration``).

Optional, from ``settings`` (the run's ``evaluation`` config):
- ``posterior.enabled``: a conditional normalizing flow on the network's outputs (``evaluate.posterior``),
  fitted on the tiles of the training simulations, stopped on the validation ones, with the same
  calibration checks on the test tiles;
- ``fiducial_store``: a store of many seeds at one cosmology (``design=seeds``): the box estimates'
  mean, scatter and mean sigma per parameter, as in Hwang & Sabiu (``fiducial.json``, ``fiducial.png``);
- ``attention``: for a ViT3D, the attention rollout over a slice of the first test tile (``attention.png``).
Always: the number of parameters, training seconds per epoch and samples per second (from the
checkpoint) and evaluation samples per second.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lss_lightning.data.crops import tile_batches, tile_corners
from lss_lightning.evaluate import Tiles, test_boxes
from lss_lightning.evaluate.calibration import LEVELS, calibration_report, gaussian_coverage
from lss_lightning.evaluate.plots import plot_attention, plot_fiducial, plot_parameters
from lss_lightning.evaluate.report import flat_metrics, print_parameter_summary
from lss_lightning.store.reader import FieldStore
from lss_lightning.store.writer import write_json_atomic


@dataclass
class CropEstimates:
    """Per-tile estimates of several boxes: box index into ``sim_ids``, truth, mean and std (n_tiles, P)."""

    sim_ids: list[str]
    box: np.ndarray
    truth: np.ndarray
    mean: np.ndarray
    std: np.ndarray | None
    seconds: float  # wall clock of the network's forward passes


@torch.no_grad()
def predict_simulation(model, inputs: np.ndarray, crop: int, pad: int, batch_size: int = 8):
    """Per-sub-volume estimates (n_tiles, n_params) of mean and std (std None without a std)."""
    device = next(model.parameters()).device
    means, stds = [], []
    for _, batch in tile_batches(inputs, crop, pad, batch_size):
        mean, std = model.predict_parameters(torch.from_numpy(batch).to(device))
        means.append(mean.float().cpu().numpy())
        if std is not None:
            stds.append(std.float().cpu().numpy())
    return np.concatenate(means), (np.concatenate(stds) if stds else None)


def estimate_crops(
    model,
    store: FieldStore,
    sim_ids: Sequence[str],
    tiles: Tiles,
    progress=False,
    description="estimating boxes",
) -> CropEstimates:
    """Tile every box of ``sim_ids`` and estimate each tile."""
    from rich.progress import track

    model.eval()
    box, truth, means, stds, seconds = [], [], [], [], 0.0
    for i, sim in enumerate(track(sim_ids, description=description, disable=not progress)):
        inputs = np.concatenate([store.read(sim, n) for n in tiles.input_names])
        start = time.perf_counter()
        mean, std = predict_simulation(model, inputs, tiles.crop, tiles.pad, tiles.batch_size)
        seconds += time.perf_counter() - start
        params = store.cosmology(sim).to_dict()
        box.append(np.full(len(mean), i))
        truth.append(np.tile([params[p] for p in tiles.parameter_names], (len(mean), 1)))
        means.append(mean)
        if std is not None:
            stds.append(std)
    return CropEstimates(
        list(sim_ids),
        np.concatenate(box),
        np.concatenate(truth).astype(np.float64),
        np.concatenate(means).astype(np.float64),
        np.concatenate(stds).astype(np.float64) if stds else None,
        seconds,
    )


BOX_COMBINATIONS = ("correlated", "independent")


def combine_boxes(est: CropEstimates, combination: str = "correlated") -> dict[str, np.ndarray | None]:
    """Box truth, mean, std (None without a std) and sub-volume scatter, each (n_boxes, P); see the
    module docstring for the two combinations."""
    if combination not in BOX_COMBINATIONS:
        raise ValueError(f"box_combination must be one of {BOX_COMBINATIONS}, got {combination!r}")
    truth, mean, std, scatter = [], [], [], []
    for i in range(len(est.sim_ids)):
        rows = est.box == i
        m = est.mean[rows]
        truth.append(est.truth[rows][0])
        scatter.append(m.std(0))
        if est.std is None or combination == "correlated":
            mean.append(m.mean(0))
            if est.std is not None:
                std.append(np.sqrt(np.mean(est.std[rows] ** 2, axis=0)))
        else:
            w = est.std[rows] ** -2
            mean.append((w * m).sum(0) / w.sum(0))
            std.append(w.sum(0) ** -0.5)
    return {
        "truth": np.array(truth),
        "mean": np.array(mean),
        "std": np.array(std) if est.std is not None else None,
        "scatter": np.array(scatter),
    }


def parameter_metrics(
    truth: np.ndarray, mean: np.ndarray, std: np.ndarray | None, names: Sequence[str]
) -> dict:
    """Per parameter RMSE, bias (mean of estimate - truth), relative error, R^2 and, with a std, reduced chi^2
    and coverage."""
    coverage = gaussian_coverage(mean, std, truth) if std is not None else None
    out = {}
    for j, name in enumerate(names):
        err = mean[:, j] - truth[:, j]
        var = np.var(truth[:, j])
        entry = {
            "rmse": float(np.sqrt(np.mean(err**2))),
            "bias": float(np.mean(err)),
            "relative_error": float(np.mean(np.abs(err) / np.abs(truth[:, j]))),
            "r2": float(1.0 - np.mean(err**2) / var) if var > 0 else None,
        }
        if std is not None:
            entry["mean_sigma"] = float(np.mean(std[:, j]))
            entry["reduced_chi2"] = float(np.mean((err / std[:, j]) ** 2))
            for c in LEVELS:
                entry[f"coverage_{round(100 * c)}"] = float(coverage[c][j])
        out[name] = entry
    return out


def write_estimates(path: Path, sim_ids: Sequence[str], names: Sequence[str], truth, mean, std) -> Path:
    """CSV, one row per box: sim_id, then <name>_true, <name>_mean, <name>_std per parameter (std NaN
    without one)."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["sim_id", *(f"{p}_{k}" for p in names for k in ("true", "mean", "std"))])
        for i, sim in enumerate(sim_ids):
            row = [sim]
            for j in range(len(names)):
                sigma = math.nan if std is None else float(std[i, j])
                row += [repr(float(truth[i, j])), repr(float(mean[i, j])), repr(sigma)]
            writer.writerow(row)
    return path


def read_estimates(path: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """(sim_ids, column -> values) of an estimates.csv."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    columns = [c for c in rows[0] if c != "sim_id"] if rows else []
    return [r["sim_id"] for r in rows], {c: np.array([float(r[c]) for r in rows]) for c in columns}


def model_report(model, eval_samples: int, eval_seconds: float) -> dict:
    """Parameters of the backbone, training seconds per epoch (median and fastest over the epochs the
    checkpoint recorded: on a shared machine the fastest is the least disturbed), training samples per
    second (median) and evaluation samples per second."""
    timing = getattr(model, "epoch_timing", []) or []
    return {
        "backbone": type(model.net).__name__,
        "parameters": int(sum(p.numel() for p in model.net.parameters())),
        "epochs_timed": len(timing),
        "seconds_per_epoch": float(np.median([t["seconds"] for t in timing])) if timing else None,
        "fastest_seconds_per_epoch": float(min(t["seconds"] for t in timing)) if timing else None,
        "training_seconds": float(sum(t["seconds"] for t in timing)) if timing else None,
        "train_samples_per_second": float(np.median([t["samples_per_second"] for t in timing]))
        if timing
        else None,
        "eval_samples_per_second": eval_samples / eval_seconds if eval_seconds > 0 else None,
    }


def evaluate_inference(
    model,
    store: FieldStore,
    sim_ids: Sequence[str],
    tiles: Tiles,
    out_dir: Path,
    *,
    progress=True,
    settings=None,
    splits=None,
) -> dict:
    """Estimate the parameters of every test box; write metrics.json and estimates.csv; return the metrics."""
    settings = dict(settings or {})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    estimates = estimate_crops(model, store, sim_ids, tiles, progress, "evaluating test boxes")
    combination = str(settings.get("box_combination", "correlated"))
    boxes = combine_boxes(estimates, combination)
    names = list(tiles.parameter_names)
    summary = parameter_metrics(boxes["truth"], boxes["mean"], boxes["std"], names)
    for j, name in enumerate(names):
        summary[name]["subvolume_scatter"] = float(np.mean(boxes["scatter"][:, j]))
    write_estimates(out_dir / "estimates.csv", sim_ids, names, boxes["truth"], boxes["mean"], boxes["std"])
    metrics = {
        "task": "parameters",
        "simulations": list(sim_ids),
        "parameters": names,
        "box_size": store.box_size,
        "grid": store.grid,
        "crop": tiles.crop,
        "subvolumes_per_box": len(tile_corners(store.grid, tiles.crop)),
        "box_combination": combination,
        "summary": summary,
        "per_simulation": {
            "truth": boxes["truth"].tolist(),
            "prediction": boxes["mean"].tolist(),
            "sigma": None if boxes["std"] is None else boxes["std"].tolist(),
        },
        "model": model_report(model, len(estimates.mean), estimates.seconds),
    }
    metrics.update(_optional_reports(model, store, sim_ids, estimates, settings, splits, tiles, out_dir))
    write_json_atomic(out_dir / "metrics.json", metrics)  # whole or absent (a kill mid-write)
    return metrics


def _optional_reports(
    model, store, sim_ids, estimates: CropEstimates, settings: Mapping, splits, tiles: Tiles, out_dir: Path
) -> dict:
    """Calibration (when the model gives errors), the flow posterior, the fiducial scatter and the ViT's
    attention map, as the settings ask."""
    metrics = {}
    names = list(tiles.parameter_names)
    if estimates.std is not None:
        metrics["calibration"] = calibration_report(
            estimates.truth, names, mean=estimates.mean, std=estimates.std
        )
    posterior = dict(settings.get("posterior") or {})
    if posterior.get("enabled", False) and splits:
        metrics["posterior"] = fit_flow_posterior(model, store, estimates, splits, posterior, tiles, out_dir)
    if settings.get("fiducial_store"):
        metrics["fiducial"] = evaluate_fiducial(model, FieldStore(settings["fiducial_store"]), tiles, out_dir)
    if settings.get("attention", True) and hasattr(model.net, "patch_embed"):
        path = out_dir / "attention.png"
        metrics["attention_map"] = str(
            plot_attention(model, store, sim_ids[0], tiles.input_names, tiles.crop, path)
        )
    return metrics


def fit_flow_posterior(
    model, store, tests: CropEstimates, splits, settings: Mapping, tiles: Tiles, out_dir: Path
) -> dict:
    """Fit the flow on training tiles, stop on validation tiles, check it on the test tiles (``tests``)."""
    from lss_lightning.evaluate.posterior import FlowPosterior, network_summaries

    limit = int(settings.get("max_sims", 64))
    train = estimate_crops(model, store, list(splits["train"])[:limit], tiles)
    val = estimate_crops(model, store, list(splits["val"] or splits["train"][:1])[:limit], tiles)
    names = list(tiles.parameter_names)
    flow = FlowPosterior(
        len(names),
        train.mean.shape[1] * (1 if train.std is None else 2),
        transforms=int(settings.get("transforms", 3)),
        hidden=list(settings.get("hidden", [64, 64])),
        seed=int(settings.get("seed", 0)),
    )
    flow.fit(
        network_summaries(train.mean, train.std),
        train.truth,
        network_summaries(val.mean, val.std),
        val.truth,
        epochs=int(settings.get("epochs", 200)),
        lr=float(settings.get("lr", 1e-3)),
    )
    samples = flow.sample(network_summaries(tests.mean, tests.std), int(settings.get("samples", 1000)))
    mean, std = samples.mean(0), samples.std(0)
    report = calibration_report(tests.truth, names, samples=samples)
    np.save(out_dir / "posterior_samples.npy", samples.astype(np.float32))
    return {
        "flow": "zuko NSF",
        "trained_on_tiles": len(train.mean),
        "validated_on_tiles": len(val.mean),
        "epochs": len(flow.history),
        "best_val_nll": float(min(v for _, v in flow.history)),
        "subvolume_summary": parameter_metrics(tests.truth, mean, std, names),
        "calibration": report,
    }


def evaluate_fiducial(
    model, store: FieldStore, tiles: Tiles, out_dir: Path, combination: str = "correlated"
) -> dict:
    """Every box of a fiducial store (one cosmology, many seeds): scatter of the box estimates."""
    names = list(tiles.parameter_names)
    store.require_fields(tiles.input_names)
    estimates = estimate_crops(model, store, store.simulation_ids, tiles, description="fiducial boxes")
    boxes = combine_boxes(estimates, combination)
    write_estimates(
        out_dir / "fiducial_estimates.csv",
        store.simulation_ids,
        names,
        boxes["truth"],
        boxes["mean"],
        boxes["std"],
    )
    out = {"store": str(store.root), "boxes": len(store.simulation_ids), "parameters": {}}
    for j, name in enumerate(names):
        est = boxes["mean"][:, j]
        entry = {
            "truth": float(boxes["truth"][0, j]),
            "mean": float(est.mean()),
            "scatter": float(est.std(ddof=1)) if len(est) > 1 else None,
            "bias": float(est.mean() - boxes["truth"][0, j]),
        }
        if boxes["std"] is not None:
            entry["mean_sigma"] = float(boxes["std"][:, j].mean())
        out["parameters"][name] = entry
    write_json_atomic(out_dir / "fiducial.json", out)
    plot_fiducial(boxes["mean"], boxes["truth"][0], names, out_dir / "fiducial.png")
    return out


def evaluate_task(model, dm, settings: Mapping, out_dir: Path) -> tuple[dict[str, float], dict[str, Path]]:
    """The evaluator of parameter targets (``lss_lightning.evaluate``): metrics, plots and tables of the test boxes."""
    tiles = Tiles.of(dm, settings)
    metrics = evaluate_inference(
        model, dm.open_store(), test_boxes(dm), tiles, out_dir, settings=settings, splits=dm.splits
    )
    figures = (
        {"parameters": plot_parameters(metrics, out_dir / "parameters.png")}
        if settings.get("plots", True)
        else {}
    )
    print_parameter_summary(metrics, out_dir)
    return {f"test/{k}": v for k, v in flat_metrics(metrics["summary"]).items()}, figures
