"""Where the Hydra configs live, the resolvers they use and plain() containers; no paths depend on the working directory.

``${lss_root:}`` is the repository root (the folder holding ``conf/`` beside the installed package),
so ``paths.data_dir`` and ``paths.log_dir`` are absolute wherever a command starts. ``${run_name:}``
names run directories (resolved once per process and cached, like Hydra's ``${now:}``).
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

REPO_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = REPO_ROOT / "conf"


def _repo_root() -> str:
    if not CONF_DIR.is_dir():
        raise RuntimeError(
            f"lss-lightning's conf/ folder was not found at {CONF_DIR}; install the repository in editable mode "
            "(`pip install -e .`) or set LSS_DATA_DIR and LSS_LOG_DIR"
        )
    return str(REPO_ROOT)


def _unique_name() -> str:
    """``<date>_<time>_<6 random hex digits>``: a name no other job takes (sweep directories)."""
    return time.strftime("%Y-%m-%d_%H-%M-%S") + "_" + secrets.token_hex(3)


def _run_name() -> str:
    """The run directory's name: stable across a SLURM requeue, unique otherwise.

    In a SLURM batch job: ``slurm-<job id>[_<array task id>]``, shared by every rank that srun starts and
    found again by the requeued job (so ``ckpt_path=last`` resumes it). Elsewhere, and in interactive
    allocations (job name ``bash`` or ``interactive``, which Lightning does not treat as SLURM jobs
    either): ``<date>_<time>_<6 random hex digits>``.
    """
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    if not job or os.environ.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return _unique_name()
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"slurm-{job}" + (f"_{task}" if task else "")


# command-line overrides that say where things are, not what is trained: left out of run labels
_UNLABELLED = ("paths.", "data.store", "ckpt_path", "logger", "hydra", "trainer.devices", "trainer.num_nodes")


def _overrides_label() -> str:
    """``[key=value,...]`` of this job's command-line overrides (sweep parameters included), without paths
    and launch settings; "" outside a Hydra app or without such overrides. Used in W&B run names."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return ""
    kept = [o for o in HydraConfig.get().overrides.task if not o.lstrip("+~").startswith(_UNLABELLED)]
    return f"[{','.join(kept)}]" if kept else ""


def resolve_device(name: str | None) -> torch.device:
    """``auto`` (or None): the first CUDA device if there is one, else the CPU; otherwise torch's name."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _default_inputs(task_target: str, field_inputs, parameter_inputs) -> list:
    """``${default_inputs:${model._target_},[...],[...]}``: the first list for tasks that predict fields
    (velocity reconstruction: density + linear theory of the whole box), the second for tasks that predict
    parameters (which have no use for a linear velocity), so one data config serves both kinds of model."""
    from hydra.utils import get_class

    kind = getattr(get_class(task_target), "target_kind", "fields")
    return list(field_inputs if kind == "fields" else parameter_inputs)


def register_resolvers() -> None:
    resolvers = (
        ("lss_root", _repo_root),
        ("run_name", _run_name),
        ("unique_name", _unique_name),
        ("overrides_label", _overrides_label),
        ("default_inputs", _default_inputs),
    )
    for name, fn in resolvers:
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn, use_cache=True)


register_resolvers()


def plain(value: Any) -> Any:
    """``value`` with every OmegaConf container (at any depth) turned into dicts and lists."""
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(plain(v) for v in value)
    return value
