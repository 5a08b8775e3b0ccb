"""train(cfg) and evaluate(cfg): what train.py and eval.py call (and tests call in-process).

train: seed, build the data module (making the mock store if it is absent), the task module with
channel layouts from the data, callbacks, loggers and trainer from the config; fit; then evaluate the
best checkpoint on the test split. evaluate: rebuild data and model from the configuration stored in a
checkpoint (``lss_config``), load its weights and statistics, and evaluate. Both return a flat dict of
metrics and write metrics.json and plots into the run directory.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from lss_lightning.config import register_resolvers, resolve_device
from lss_lightning.evaluate import evaluator
from lss_lightning.evaluate.report import flat_metrics
from lss_lightning.run.assemble import (
    build_data,
    build_model,
    check_task_targets,
    instantiate_group,
    load_model,
    warn_if_cell_size_differs,
)
from lss_lightning.run.checkpoints import resolve_checkpoint
from lss_lightning.run.loggers import finish_loggers, log_evaluation
from lss_lightning.run.preemption import EXIT_PREEMPTED, stop_on_sigterm
from lss_lightning.run.preflight import check_training_config
from lss_lightning.run.wandb import assign_run_ids

__all__ = [
    "build_data",
    "build_model",
    "check_task_targets",
    "evaluate",
    "load_model",
    "run_evaluation",
    "train",
]
log = logging.getLogger(__name__)
register_resolvers()


def _best_scores(trainer) -> dict[str, float]:
    """``<monitor>_best``: the best monitored value of the run (e.g. val/loss_best), from ModelCheckpoint."""
    callback = trainer.checkpoint_callback
    score = getattr(callback, "best_model_score", None)
    if score is None or not getattr(callback, "monitor", None):
        return {}
    return {f"{callback.monitor}_best": float(score)}


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
            metrics.update(flat_metrics(dict(trainer.callback_metrics)))
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
        finish_loggers(loggers, exit_code)
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
        finish_loggers(loggers)


def run_evaluation(cfg: DictConfig, model, dm, out_dir: Path, loggers=()) -> dict[str, float]:
    """The task's evaluator (``lss_lightning.evaluate``) on the test boxes; its metrics and figures go to the
    loggers. Returns the flat metrics."""
    settings = cfg.get("evaluation", {}) or {}
    model = model.to(resolve_device(settings.get("device", "auto")))
    flat, figures = evaluator(dm.target_kind)(model, dm, settings, out_dir)
    log_evaluation(loggers, flat, figures)
    log.info("evaluation written to %s", out_dir)
    return flat
