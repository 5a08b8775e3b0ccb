"""Checkpoint files: plain contents (loadable with torch's safe loading), and finding the one to resume.

A checkpoint written by lss-lightning holds only tensors and plain Python containers (dict, list,
tuple, str, numbers, None), so ``torch.load(path, weights_only=True)`` reads it: Hydra's DictConfig and
ListConfig in the hyper-parameters are turned into dicts and lists when it is saved.

Resuming: ``ckpt_path=last`` means the newest of this run's own checkpoints, i.e. in the run directory
``<run>/checkpoints/last*.ckpt`` (end of epoch), ``<run>/checkpoints/preempted.ckpt`` (written on SIGTERM,
mid-epoch) and ``<run>/hpc_ckpt_<n>.ckpt`` (written by Lightning on SLURM's warning signal). Written here
rather than left to Lightning's ``ckpt_path="last"`` because Lightning's choice ignores the SLURM
checkpoints and happens inside ``fit``, after the loggers (which need the resumed W&B run id) exist.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"  # inside the run directory (conf/callbacks/default.yaml)
PREEMPTED_NAME = "preempted"  # <run>/checkpoints/preempted.ckpt, written on SIGTERM


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


def load(path: str | os.PathLike, map_location="cpu", mmap: bool = False) -> dict:
    """A checkpoint read with torch's safe (weights-only) unpickler; ``mmap``: tensors read lazily."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path} holds more than tensors and plain containers (an lss-lightning checkpoint from before "
            "they were plain, or not ours), so it cannot be loaded safely. If you trust the file, convert it "
            f"once: python -c \"from lss_lightning.checkpoints import upgrade; upgrade('{path}')\""
        ) from err


def load_config(path: str | os.PathLike) -> dict | None:
    """The run configuration (``lss_config``) saved in a checkpoint, without reading its tensors."""
    return load(path, mmap=True).get("lss_config")


def upgrade(path: str | os.PathLike) -> None:
    """Rewrite a trusted checkpoint whose hyper-parameters hold Hydra containers with plain ones, in place.
    Uses torch's full unpickler, which can run code stored in the file: only for your own checkpoints."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    for key in ("hyper_parameters", "lss_config"):
        if key in checkpoint:
            checkpoint[key] = plain(checkpoint[key])
    torch.save(checkpoint, path)


def run_candidates(run_dir: Path) -> list[Path]:
    """Every checkpoint of a run that ``last`` may resume from."""
    ckpt_dir = run_dir / CHECKPOINT_DIR
    found = list(ckpt_dir.glob("last*.ckpt")) + list(ckpt_dir.glob(f"{PREEMPTED_NAME}.ckpt"))
    return found + list(run_dir.glob("hpc_ckpt_*.ckpt"))


def resolve_checkpoint(spec: str | os.PathLike | None, run_dir: str | os.PathLike) -> Path | None:
    """The checkpoint file that ``ckpt_path=spec`` means for the run in ``run_dir``.

    None or "none": start from scratch. "last": the newest checkpoint of this run (None if it has none
    yet, so ``last`` can stay set for a first start). A run directory: its newest checkpoint. A file: itself.
    """
    if spec is None or str(spec).lower() in ("", "none", "null"):
        return None
    if str(spec) == "last":
        newest = _newest(run_candidates(Path(run_dir)))
        if newest is None:
            log.info("ckpt_path=last: %s has no checkpoint yet, training from scratch", run_dir)
        return newest
    path = Path(spec).expanduser().resolve()
    if path.is_dir():
        newest = _newest(run_candidates(path))
        if newest is None:
            raise FileNotFoundError(
                f"ckpt_path={spec}: the directory holds no checkpoint (looked for {CHECKPOINT_DIR}/last*.ckpt, "
                f"{CHECKPOINT_DIR}/{PREEMPTED_NAME}.ckpt, hpc_ckpt_*.ckpt); give a .ckpt file, or ckpt_path=null "
                "to start from scratch"
            )
        return newest
    if not path.is_file():
        raise FileNotFoundError(
            f"ckpt_path={spec} does not exist; give an existing .ckpt file or run directory, ckpt_path=last "
            "(this run's own newest checkpoint) or ckpt_path=null (from scratch)"
        )
    return path


def _newest(paths: list[Path]) -> Path | None:
    existing = [p for p in paths if p.is_file()]
    return max(existing, key=lambda p: p.stat().st_mtime_ns) if existing else None
