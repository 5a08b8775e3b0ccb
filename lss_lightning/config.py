"""Where the Hydra configs live and the resolvers they use; no paths depend on the working directory.

``${lss_root:}`` is the repository root (the folder holding ``conf/`` beside the installed package),
so ``paths.data_dir`` and ``paths.log_dir`` are absolute wherever a command starts.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import torch
from omegaconf import OmegaConf

REPO_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = REPO_ROOT / "conf"


def _repo_root() -> str:
    if not CONF_DIR.is_dir():
        raise RuntimeError(
            f"lss-lightning's conf/ folder was not found at {CONF_DIR}; install the repository in editable mode "
            "(`pip install -e .`) or set LSS_DATA_DIR and LSS_LOG_DIR"
        )
    return str(REPO_ROOT)


def _job_tag() -> str:
    """A tag unique per launched job: the SLURM job (and array task) id when there is one, plus random hex."""
    slurm = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    parts = [p for p in (slurm, task) if p] + [secrets.token_hex(3)]
    return "-".join(parts)


def resolve_device(name: str | None) -> torch.device:
    """``auto`` (or None): the first CUDA device if there is one, else the CPU; otherwise torch's name."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def register_resolvers() -> None:
    for name, fn in (("lss_root", _repo_root), ("job_tag", _job_tag)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn, use_cache=True)


register_resolvers()
