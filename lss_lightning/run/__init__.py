"""train(cfg) and evaluate(cfg): what train.py and eval.py call (and tests call in-process).

train: seed, build the data module (making the mock store if it is absent), the task module with
channel layouts from the data, callbacks, loggers and trainer from the config; fit; then evaluate the
best checkpoint on the test split. evaluate: rebuild data and model from the configuration stored in a
checkpoint (``lss_config``), load its weights and statistics, and evaluate. Both return a flat dict of
metrics and write metrics.json and plots into the run directory.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

import lightning as L
import torch
from hydra.utils import get_class, instantiate
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from lss_lightning.config import register_resolvers, resolve_device
from lss_lightning.data.datamodule import parameter_name
from lss_lightning.run import checkpoints
from lss_lightning.run.checkpoints import resolve_checkpoint
from lss_lightning.run.preemption import EXIT_PREEMPTED, stop_on_sigterm
from lss_lightning.run.preflight import check_training_config
from lss_lightning.run.wandb import assign_run_ids

log = logging.getLogger(__name__)
register_resolvers()


# -- assembly -------------------------------------------------------------------------------------
def instantiate_group(cfg: DictConfig | None) -> list:
    """Instantiate every entry with a ``_target_`` of a config group such as callbacks or logger."""
    if not cfg:
        return []
    if "_target_" in cfg:
        return [instantiate(cfg)]
    return [instantiate(c) for c in cfg.values() if isinstance(c, DictConfig) and "_target_" in c]


def _global_rank() -> int:
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if var in os.environ:
            return int(os.environ[var])
    return 0


def build_data(cfg: DictConfig, build_missing: bool = True):
    """The data module, with its store built (rank 0) or awaited (other ranks) when it is absent;
    ``build_missing=False`` (evaluation) only opens it: a missing or damaged store is reported, not rebuilt."""
    dm = instantiate(cfg.data)
    if not build_missing:
        dm.open_store()
        return dm
    if _global_rank() == 0:
        dm.prepare_data()
    else:
        deadline = time.monotonic() + float(cfg.get("store_wait_seconds", 3600))
        while not dm.store_ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"rank {_global_rank()} waited for rank 0 to build {dm.store_root}")
            time.sleep(5)
    dm.open_store()
    return dm


def check_task_targets(task: type, target_names) -> str:
    """The kind of targets ("fields" or "parameters") that ``task`` predicts, checked against the names."""
    wanted = getattr(task, "target_kind", "fields")
    names = [str(n) for n in target_names]
    given = "parameters" if any(parameter_name(n) for n in names) else "fields"
    if wanted != given:
        raise ValueError(
            f"model {task.__name__} predicts {wanted} but data.targets {names} are {given}; "
            f"choose matching data.targets (e.g. [velocity] or [Omega_m, sigma_8]) or another model"
        )
    return wanted


def build_model(cfg: DictConfig, dm):
    """The task module, given the channel layouts (or parameter names) of the data it trains on."""
    task = get_class(cfg.model._target_)
    wanted = check_task_targets(task, dm.target_names)
    kwargs = {"input_layouts": [asdict(f) for f in dm.input_layouts]}
    if wanted == "fields":
        kwargs["target_layouts"] = [asdict(f) for f in dm.target_layouts]
    else:
        kwargs.update(parameter_names=dm.parameter_names, img_size=dm.geometry.input_size)
    return instantiate(cfg.model, **kwargs)


def _flat_metrics(metrics: dict, prefix: str = "") -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if key.startswith("_"):
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat_metrics(value, name + "/"))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = float(value)
        elif isinstance(value, torch.Tensor) and value.numel() == 1:
            out[name] = float(value)
    return out


def _best_scores(trainer) -> dict[str, float]:
    """``<monitor>_best``: the best monitored value of the run (e.g. val/loss_best), from ModelCheckpoint."""
    callback = trainer.checkpoint_callback
    score = getattr(callback, "best_model_score", None)
    if score is None or not getattr(callback, "monitor", None):
        return {}
    return {f"{callback.monitor}_best": float(score)}


# -- entry points ---------------------------------------------------------------------------------
def train(cfg: DictConfig) -> dict[str, float]:
    """Fit the configured model and (cfg.evaluate) evaluate its best checkpoint; returns metrics.

    Resumes from ``cfg.ckpt_path`` (``last``: this run's newest checkpoint, see ``checkpoints``). Stopped
    by SIGTERM, it saves a checkpoint and exits with ``EXIT_PREEMPTED`` (see ``preemption``).
    """
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    out_dir = Path(cfg.paths.output_dir)
    resume = resolve_checkpoint(cfg.get("ckpt_path"), out_dir) if cfg.get("train", True) else None
    check_training_config(cfg, resume)  # before any data is read or generated
    assign_run_ids(cfg, resume)  # a resumed training continues its W&B run
    out_dir.mkdir(parents=True, exist_ok=True)
    fiducial = (cfg.get("evaluation") or {}).get("fiducial_store")
    if cfg.get("evaluate", True) and fiducial and not (Path(fiducial) / "manifest.json").exists():
        raise FileNotFoundError(
            f"evaluation.fiducial_store={fiducial} is not a field store: build it first (a design=seeds mock set, "
            "e.g. data=pm_fiducial; see the experiment's header) or set evaluation.fiducial_store=null"
        )
    dm = build_data(cfg)
    model = build_model(cfg, dm)
    model.run_config = OmegaConf.to_container(cfg, resolve=True)
    store = dm.open_store()
    model.run_config["cell_size"] = store.box_size / store.grid  # Mpc/h, checked when evaluated elsewhere
    loggers = instantiate_group(cfg.get("logger"))
    trainer = instantiate(
        cfg.trainer, callbacks=instantiate_group(cfg.get("callbacks")), logger=loggers or False
    )
    for logger in loggers:
        logger.log_hyperparams(model.run_config)
    metrics: dict[str, float] = {}
    exit_code = 1  # what W&B records if training does not return normally
    try:
        if cfg.get("train", True):
            if resume is not None:
                log.info("resuming training from %s", resume)
            try:
                trainer.fit(model, datamodule=dm, ckpt_path=resume, weights_only=True)
            except SIGTERMException as stop:  # Lightning's is a SystemExit with code 0
                raise SystemExit(EXIT_PREEMPTED) from stop
            metrics.update(_flat_metrics(dict(trainer.callback_metrics)))
            metrics.update(_best_scores(trainer))
        if cfg.get("evaluate", True) and trainer.is_global_zero:
            best = (
                getattr(trainer.checkpoint_callback, "best_model_path", "")
                if trainer.checkpoint_callback
                else ""
            )
            if best:
                log.info("evaluating the best checkpoint %s", best)
                model = load_model(best, map_location="cpu")
            with stop_on_sigterm("evaluation"):
                metrics.update(run_evaluation(cfg, model, dm, out_dir / "eval", loggers))
        exit_code = 0
    except SystemExit as stop:
        exit_code = stop.code if isinstance(stop.code, int) else 1
        raise
    finally:
        _finish_loggers(loggers, exit_code)
    return metrics


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Evaluate ``cfg.ckpt_path`` on its training configuration's test split (``data_overrides`` merge in)."""
    if not cfg.get("ckpt_path"):
        raise ValueError("eval needs ckpt_path=/path/to/checkpoint.ckpt (a checkpoint written by train.py)")
    ckpt_path = Path(cfg.ckpt_path).expanduser()
    if not ckpt_path.exists():
        raise FileNotFoundError(f"checkpoint {ckpt_path} does not exist")
    model = load_model(ckpt_path, map_location="cpu")
    train_cfg = OmegaConf.create(model.run_config)
    overrides = {k: v for k, v in (cfg.get("data_overrides") or {}).items() if v is not None}
    if overrides:
        train_cfg.data = OmegaConf.merge(train_cfg.data, overrides)
    try:  # before any data is read
        check_task_targets(type(model), train_cfg.data.targets)
    except ValueError as err:
        raise ValueError(f"{ckpt_path}: {err} (check data_overrides)") from None
    train_cfg.evaluation = OmegaConf.merge(train_cfg.get("evaluation", {}), cfg.get("evaluation", {}))
    dm = build_data(train_cfg, build_missing=False)  # evaluation never writes into a store
    warn_if_cell_size_differs(model, dm)
    out_dir = Path(cfg.paths.output_dir)
    loggers = instantiate_group(cfg.get("logger"))
    try:
        with stop_on_sigterm("evaluation"):
            return run_evaluation(train_cfg, model, dm, out_dir, loggers)
    finally:
        _finish_loggers(loggers)


def warn_if_cell_size_differs(model, dm) -> None:
    """A network learns on cells of one size (Mpc/h): on a store of another the same crop is another
    volume, and velocities from density differ with the smoothing scale."""
    trained = (model.run_config or {}).get("cell_size")
    store = dm.open_store()
    here = store.box_size / store.grid
    if trained and abs(here / float(trained) - 1) > 1e-6:
        log.warning(
            "this checkpoint was trained on cells of %.4g Mpc/h but %s has cells of %.4g Mpc/h (box %g / %d): "
            "the network sees another physical scale; expect worse results",
            float(trained),
            store.root,
            here,
            store.box_size,
            store.grid,
        )


def load_model(ckpt_path: str | os.PathLike, map_location="cpu"):
    """Rebuild a task module from the configuration inside its checkpoint and load its state."""
    checkpoint = checkpoints.load(ckpt_path, map_location=map_location)
    config = checkpoint.get("lss_config")
    if config is None:
        raise ValueError(f"{ckpt_path} holds no lss_config: it was not written by lss-lightning's train.py")
    cfg = OmegaConf.create(config)
    hparams = checkpoint["hyper_parameters"]
    saved = ("input_layouts", "target_layouts", "parameter_names", "img_size")  # what the data told the task
    model = instantiate(cfg.model, **{k: hparams[k] for k in saved if k in hparams})
    model.load_state_dict(checkpoint["state_dict"])
    model.on_load_checkpoint(checkpoint)  # the run config (and what else the task keeps in checkpoints)
    return model


def run_evaluation(cfg: DictConfig, model, dm, out_dir: Path, loggers=()) -> dict[str, float]:
    """Task-specific evaluation on the test split; writes metrics.json, plots (and predictions)."""
    settings = cfg.get("evaluation", {}) or {}
    store = dm.open_store()
    sims = dm.splits["test"] or dm.splits["val"]
    model = model.to(resolve_device(settings.get("device", "auto")))
    common = {
        "crop": dm.geometry.crop,
        "pad": dm.geometry.pad,
        "out_dir": out_dir,
        "batch_size": int(settings.get("batch_size", 8)),
        "input_names": dm.input_names,
    }
    if dm.target_kind == "parameters":
        from lss_lightning.evaluate.parameters import evaluate_inference, plot_parameters

        metrics = evaluate_inference(
            model,
            store,
            sims,
            parameter_names=dm.parameter_names,
            settings=settings,
            splits=dm.splits,
            **common,
        )
        figures = (
            {"parameters": plot_parameters(metrics, out_dir / "parameters.png")}
            if settings.get("plots", True)
            else {}
        )
        flat = {f"test/{k}": v for k, v in _flat_metrics(metrics["summary"]).items()}
        _print_parameter_summary(metrics, out_dir)
    else:
        from lss_lightning.evaluate.plots import plot_slices, plot_spectra
        from lss_lightning.evaluate.reconstruction import evaluate_reconstruction

        metrics = evaluate_reconstruction(
            model,
            store,
            sims,
            target_names=dm.target_names,
            linear_smoothing=float(settings.get("linear_smoothing", 0.0)),
            linear_bias=float(settings.get("linear_bias", 1.0)),
            save_predictions=bool(settings.get("save_predictions", True)),
            halos=settings.get("halos"),
            symmetrise=bool(settings.get("symmetrise", False)),
            **common,
        )
        figures = {}
        if settings.get("plots", True):
            title = f"{metrics['target']} from {', '.join(dm.input_names)}: {len(sims)} test boxes of {store.box_size:g} Mpc/h"
            figures["spectra"] = plot_spectra(metrics["_sums"], out_dir / "spectra.png", title)
            figures["slices"] = plot_slices(metrics["_slices"], store.box_size, out_dir / "slices.png")
            if "halos" in metrics:
                from lss_lightning.evaluate.plots import plot_halo_clustering

                figures["halos"] = plot_halo_clustering(
                    metrics["halos"], out_dir / "halo_clustering.png", title
                )
        flat = {
            f"test/{k}": v
            for k, v in _flat_metrics(metrics["summary"]).items()
            if k.endswith(("/T", "/r", "/error_power"))
        }
        if "halos" in metrics:
            flat.update(
                _flat_metrics(metrics["halos"]["quadrupole_residual"], "test/halos/quadrupole_residual/")
            )
        _print_summary(metrics, out_dir)
    from lightning.pytorch.loggers import CSVLogger

    for logger in loggers:
        if isinstance(logger, CSVLogger):
            continue  # metrics.json is the file record; a CSV written by DDP ranks cannot take new columns here
        logger.log_metrics(flat)
        for name, path in figures.items():
            log_figure(logger, f"eval/{name}", path)
        logger.save()
    log.info("evaluation written to %s", out_dir)
    return flat


def log_figure(logger, name: str, path: Path) -> None:
    """Send a PNG to loggers that take images (TensorBoard, Weights & Biases); others keep the file."""
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    if isinstance(logger, WandbLogger):
        logger.log_image(key=name, images=[str(path)])
    elif isinstance(logger, TensorBoardLogger):
        import matplotlib.image as mpimg

        logger.experiment.add_image(name, mpimg.imread(path)[..., :3], dataformats="HWC")


def _finish_loggers(loggers, exit_code: int = 0) -> None:
    """Close W&B runs (the trainer already finalised the loggers it used); a non-zero exit code marks
    the W&B run as failed (e.g. preempted: it resumes under the same id)."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            wandb.finish(exit_code=exit_code)  # otherwise the next multirun job logs into this run


def _console():
    """rich console; logs (SLURM output, pipes) get 160 columns instead of rich's 80, so tables stay whole."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=160)


def _print_summary(metrics: dict, out_dir: Path) -> None:
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
            row += [_fmt(entry["r"]), _fmt(entry["T"]), _fmt(entry.get("error_power"))]
        table.add_row(*row)
    _console().print(table)
    if "halos" in metrics:
        _print_halo_summary(metrics["halos"])
    _console().print(f"metrics, predictions and plots: {out_dir}")


def _print_halo_summary(halos: dict) -> None:
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
        row = [name, str(unet["n_halos"]), _fmt(unet["true_los_rms"], 0)]
        for entry in (unet, linear):
            row += [
                _fmt(entry["los_rms"], 0),
                _fmt(entry["los_bias"], 1),
                _fmt(entry["rms_3d"], 0),
                _fmt(entry["los_correlation"]),
            ]
        table.add_row(*row)
    _console().print(table)
    residual = halos["quadrupole_residual"]
    _console().print(
        "halo xi_2 left after moving back (0 = real space restored, 1 = as in redshift space): "
        f"U-net {residual['unet']:.3f}, linear theory {residual['linear']:.3f}"
    )


def _print_parameter_summary(metrics: dict, out_dir: Path) -> None:
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
            _fmt(s["rmse"], 4),
            _fmt(s["relative_error"], 4),
            _fmt(s["r2"]),
            _fmt(s.get("mean_sigma"), 4),
            _fmt(s.get("reduced_chi2"), 2),
            _fmt(s.get("coverage_68"), 2),
            _fmt(s.get("coverage_95"), 2),
        )
    console = _console()
    console.print(table)
    model = metrics.get("model", {})
    if model.get("parameters") is not None:
        console.print(
            f"{model['backbone']}: {model['parameters']:,} parameters; {model.get('epochs_timed', 0)} training epochs "
            f"up to the evaluated checkpoint in {_fmt((model.get('training_seconds') or 0) / 60, 1)} min "
            f"({_fmt(model.get('seconds_per_epoch'), 1)} s "
            f"per epoch, median), {_fmt(model.get('train_samples_per_second'), 1)} samples/s"
        )
    console.print(f"metrics and plots: {out_dir}")


def _fmt(x, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"
