"""Every table an evaluation prints (rich), and the flat ``name/sub/key -> float`` view of nested metrics
that loggers and Hydra sweepers take."""

from __future__ import annotations

from pathlib import Path

import torch


def flat_metrics(metrics: dict, prefix: str = "") -> dict[str, float]:
    """Numbers of a nested dict as ``prefix + a/b/c`` keys; keys starting with ``_`` are left out."""
    out = {}
    for key, value in metrics.items():
        if key.startswith("_"):
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_metrics(value, name + "/"))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = float(value)
        elif isinstance(value, torch.Tensor) and value.numel() == 1:
            out[name] = float(value)
    return out


def rich_console():
    """rich console; logs (SLURM output, pipes) get 160 columns instead of rich's 80, so tables stay whole."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=160)


def print_reconstruction_summary(metrics: dict, out_dir: Path) -> None:
    from rich.table import Table

    table = Table(
        title=f"{metrics['target']} reconstruction on the test boxes: r(k), T(k) and the error power P_err/P_true"
    )
    table.add_column("k [h/Mpc]")
    for label in ("unet", "linear"):
        table.add_column(f"r {label}")
        table.add_column(f"T {label}")
        table.add_column(f"P_err/P_true {label}")
    for k in metrics["report_k"]:
        row = [f"{k:g}"]
        for label in ("unet", "linear"):
            entry = metrics["summary"][label]["vector"][f"{k:g}"]
            row += [fmt(entry["r"]), fmt(entry["T"]), fmt(entry.get("error_power"))]
        table.add_row(*row)
    rich_console().print(table)
    if "halos" in metrics:
        print_halo_summary(metrics["halos"])
    rich_console().print(f"metrics, predictions and plots: {out_dir}")


def print_halo_summary(halos: dict) -> None:
    from rich.table import Table

    table = Table(title="velocities at the haloes [km/s]: line-of-sight rms and bias, 3D rms, correlation")
    for column in (
        "mass bin",
        "haloes",
        "true v_los rms",
        *(f"{c} {lab}" for lab in ("unet", "linear") for c in ("rms", "bias", "3D", "r")),
    ):
        table.add_column(column)
    for name, unet in halos["velocities"]["unet"].items():
        if not unet["n_halos"]:
            continue
        linear = halos["velocities"]["linear"][name]
        row = [name, str(unet["n_halos"]), fmt(unet["true_los_rms"], 0)]
        for entry in (unet, linear):
            row += [
                fmt(entry["los_rms"], 0),
                fmt(entry["los_bias"], 1),
                fmt(entry["rms_3d"], 0),
                fmt(entry["los_correlation"]),
            ]
        table.add_row(*row)
    rich_console().print(table)
    residual = halos["quadrupole_residual"]
    rich_console().print(
        "halo xi_2 left after moving back (0 = real space restored, 1 = as in redshift space): "
        f"U-net {residual['unet']:.3f}, linear theory {residual['linear']:.3f}"
    )


def print_parameter_summary(metrics: dict, out_dir: Path) -> None:
    from rich.table import Table

    table = Table(
        title=f"parameters of {len(metrics['simulations'])} test boxes ({metrics['subvolumes_per_box']} sub-volumes each)"
    )
    for column in (
        "parameter",
        "RMSE",
        "relative error",
        "R^2",
        "mean sigma",
        "chi2/N",
        "cov. 68%",
        "cov. 95%",
    ):
        table.add_column(column)
    for name, s in metrics["summary"].items():
        table.add_row(
            name,
            fmt(s["rmse"], 4),
            fmt(s["relative_error"], 4),
            fmt(s["r2"]),
            fmt(s.get("mean_sigma"), 4),
            fmt(s.get("reduced_chi2"), 2),
            fmt(s.get("coverage_68"), 2),
            fmt(s.get("coverage_95"), 2),
        )
    console = rich_console()
    console.print(table)
    model = metrics.get("model", {})
    if model.get("parameters") is not None:
        console.print(
            f"{model['backbone']}: {model['parameters']:,} parameters; {model.get('epochs_timed', 0)} training epochs "
            f"up to the evaluated checkpoint in {fmt((model.get('training_seconds') or 0) / 60, 1)} min "
            f"({fmt(model.get('seconds_per_epoch'), 1)} s "
            f"per epoch, median), {fmt(model.get('train_samples_per_second'), 1)} samples/s"
        )
    console.print(f"metrics and plots: {out_dir}")


def fmt(x, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"
