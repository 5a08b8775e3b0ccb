"""Config -> data module + task module: the one place that does it, for training, evaluation and preflight.

``build_data`` builds a missing mock store first (rank 0; the other ranks wait for it); ``build_model`` gives
the task what it needs from the data (``task_data``), the same keyword arguments a checkpoint saves and
``load_model`` rebuilds it from."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from lss_lightning.cosmology import parameter_name
from lss_lightning.mocks.config import MockConfig
from lss_lightning.mocks.generate import generate_store, generator_settings
from lss_lightning.run import checkpoints
from lss_lightning.store.reader import FieldStore
from lss_lightning.store.schema import MANIFEST, StoreError

log = logging.getLogger(__name__)


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
    """The data module, with its mock store built (rank 0) or awaited (other ranks) when it is absent;
    ``build_missing=False`` (evaluation) only opens it: a missing or damaged store is reported, not rebuilt."""
    dm = instantiate(cfg.data)
    if not build_missing:
        dm.open_store()
        return dm
    if _global_rank() == 0:
        ensure_mock_store(dm.store_root, dm.generate)
    else:
        deadline = time.monotonic() + float(cfg.get("store_wait_seconds", 3600))
        while not store_ready(dm.store_root):
            if time.monotonic() > deadline:
                raise TimeoutError(f"rank {_global_rank()} waited for rank 0 to build {dm.store_root}")
            time.sleep(5)
    dm.open_store()
    return dm


def store_ready(root: Path) -> bool:
    """True once the store exists and every simulation in it validates (for ranks waiting on rank 0)."""
    try:
        return not FieldStore(root).missing()
    except StoreError:
        return False


def ensure_mock_store(root: Path, generate: Mapping | None) -> None:
    """Build the mock store from ``data.generate`` when it is absent, or finish it when a run was killed
    while building it; a store built with other settings is used as it is (warned), never mixed."""
    if generate is None:
        return
    cfg = MockConfig.from_mapping({**generate, "store": str(root)})
    if not (root / MANIFEST).exists():
        log.info("field store %s is absent: generating it", root)
        generate_store(cfg)
        return
    store = FieldStore(root)
    built = store.manifest.get("generator", {})
    differ = sorted(k for k, v in generator_settings(cfg).items() if built.get(k) != v)
    missing = store.missing()
    if missing and differ:
        raise StoreError(
            f"{root}: simulations {missing[:5]} are missing or damaged, and the store was built "
            f"with other mock settings than data.generate ({', '.join(differ)}), so this run cannot remake "
            "them: rerun `python -m lss_lightning.mocks` with the store's own settings (its manifest's "
            "'generator' block), or delete the store to rebuild it from data.generate"
        )
    if differ:
        log.warning(
            "%s was built with other mock settings than data.generate (%s); it is used as it is. "
            "Delete it to rebuild it, or give data.store another path",
            root,
            ", ".join(differ),
        )
    if missing:
        log.info("field store %s: %d simulations missing or damaged, regenerating them", root, len(missing))
        generate_store(cfg)


# -- the task -------------------------------------------------------------------------------------
# what a task is built from beside its config: the data's channel layouts, or its parameter names and the
# sub-volume side; saved in the task's hyper-parameters, so a checkpoint rebuilds it without the data
TASK_DATA_KEYS = ("input_layouts", "target_layouts", "parameter_names", "img_size")


def task_data(kind: str, inputs, targets=(), parameter_names=(), input_size: int | None = None) -> dict:
    """The keyword arguments a task gets from its data (``TASK_DATA_KEYS``) for targets of ``kind``."""
    kwargs: dict = {"input_layouts": [asdict(f) for f in inputs]}
    if kind == "fields":
        kwargs["target_layouts"] = [asdict(f) for f in targets]
    else:
        kwargs.update(parameter_names=list(parameter_names), img_size=input_size)
    return kwargs


class TargetKindError(ValueError):
    """A model that predicts fields given parameter targets, or the reverse; ``fix`` names the remedy."""

    def __init__(self, problem: str, fix: str):
        super().__init__(f"{problem}; fix: {fix}")
        self.problem, self.fix = problem, fix


def check_task_targets(task: type, target_names, stored_fields=()) -> str:
    """The kind of targets ("fields" or "parameters") that ``task`` predicts, checked against the names (a
    name that is a stored field counts as a field even when it is also a parameter's name)."""
    wanted = getattr(task, "target_kind", "fields")
    names = [str(n) for n in target_names]
    given = "parameters" if any(parameter_name(n) and n not in stored_fields for n in names) else "fields"
    if wanted != given:
        fix = (
            "data.targets=[velocity] (a stored field), or a parameter model: model=cnn3d or model=vit3d"
            if wanted == "fields"
            else "data.targets=[Omega_m,sigma_8] (parameters that vary in the store), or model=unet"
        )
        raise TargetKindError(
            f"model {task.__name__} predicts {wanted} but data.targets {names} are {given}", fix
        )
    return wanted


def build_model(cfg: DictConfig, dm):
    """The task module, given the channel layouts (or parameter names) of the data it trains on."""
    kind = check_task_targets(get_class(cfg.model._target_), dm.target_names)
    data = task_data(
        kind,
        dm.input_layouts,
        dm.target_layouts if kind == "fields" else (),
        dm.parameter_names if kind == "parameters" else (),
        dm.geometry.input_size,
    )
    return instantiate(cfg.model, **data)


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


# ``_target_``s of configurations saved in checkpoints before the layout of release 0.x moved them
MOVED_TARGETS = {
    "lss_lightning.data.modules.FieldCropDataModule": "lss_lightning.data.datamodule.FieldCropDataModule",
    "lss_lightning.tasks.inference.ParameterInference": "lss_lightning.tasks.parameters.ParameterInference",
    "lss_lightning.models.unet.create_unet": "lss_lightning.models.create_model",
    "lss_lightning.models.cnn.create_cnn3d": "lss_lightning.models.create_model",
    "lss_lightning.models.vit.create_vit3d": "lss_lightning.models.create_model",
    "lss_lightning.models.efficientnet.create_efficientnet3d": "lss_lightning.models.create_model",
    "lss_lightning.models.summary_mlp.create_summary_mlp": "lss_lightning.models.create_model",
    "lss_lightning.channels_last.ChannelsLast3d": "lss_lightning.run.callbacks.ChannelsLast3d",
    "lss_lightning.checkpoints.AtomicCheckpointIO": "lss_lightning.run.checkpoints.AtomicCheckpointIO",
    "lss_lightning.csv_history.ResumableCSVLogger": "lss_lightning.run.loggers.ResumableCSVLogger",
    "lss_lightning.preemption.PreemptionCheckpoint": "lss_lightning.run.preemption.PreemptionCheckpoint",
    "lss_lightning.sweep_log.TrialLog": "lss_lightning.run.sweep_log.TrialLog",
}


def upgrade_targets(config: dict, where: str) -> dict:
    """``config`` (a plain dict, e.g. a checkpoint's ``lss_config``) with moved ``_target_``s renamed
    (``MOVED_TARGETS``), warning once per old name."""
    if isinstance(config, dict):
        out = {k: upgrade_targets(v, where) for k, v in config.items()}
        old = out.get("_target_")
        if old in MOVED_TARGETS:
            log.warning("%s: _target_ %s is now %s (read as the new name)", where, old, MOVED_TARGETS[old])
            out["_target_"] = MOVED_TARGETS[old]
        return out
    if isinstance(config, list):
        return [upgrade_targets(v, where) for v in config]
    return config


def load_model(ckpt_path: str | os.PathLike, map_location="cpu"):
    """Rebuild a task module from the configuration inside its checkpoint and load its state."""
    checkpoint = checkpoints.load(ckpt_path, map_location=map_location)
    config = checkpoint.get("lss_config")
    if config is None:
        raise ValueError(f"{ckpt_path} holds no lss_config: it was not written by lss-lightning's train.py")
    checkpoint["lss_config"] = config = upgrade_targets(config, str(ckpt_path))
    cfg = OmegaConf.create(config)
    hparams = checkpoint["hyper_parameters"]
    model = instantiate(cfg.model, **{k: hparams[k] for k in TASK_DATA_KEYS if k in hparams})
    model.load_state_dict(checkpoint["state_dict"])
    model.on_load_checkpoint(checkpoint)  # the run config (and what else the task keeps in checkpoints)
    return model
