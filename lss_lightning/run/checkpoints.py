"""Checkpoint files: plain contents (loadable with torch's safe loading), and finding the one to resume.

A checkpoint written by lss-lightning holds only tensors and plain Python containers (dict, list,
tuple, str, numbers, None), so ``torch.load(path, weights_only=True)`` reads it: Hydra's DictConfig and
ListConfig in the hyper-parameters are turned into dicts and lists when it is saved.

Resuming: ``ckpt_path=last`` means the newest of this run's own checkpoints, i.e. in the run directory
``<run>/checkpoints/*.ckpt`` (``last.ckpt`` and the monitored ones at the end of epochs, ``preempted.ckpt``
written on SIGTERM mid-epoch) and ``<run>/hpc_ckpt_<n>.ckpt`` (written by Lightning on SLURM's warning signal). Written here
rather than left to Lightning's ``ckpt_path="last"`` because Lightning's choice ignores the SLURM
checkpoints and happens inside ``fit``, after the loggers (which need the resumed W&B run id) exist.
Each candidate is verified (zip CRCs, a weights-only load) newest first, so a truncated file (a full disk,
a killed copy) is skipped with a warning naming it and the previous good checkpoint resumes.

Writing: ``AtomicCheckpointIO`` (the trainer's checkpoint plugin, conf/trainer/default.yaml) writes every
checkpoint to a temporary file beside its final name, fsyncs it and renames it, so a checkpoint is whole
or absent; a full disk ends with one error naming the directory, the size needed and the space free.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import pickle
import shutil
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from lss_lightning.config import plain

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"  # inside the run directory (conf/callbacks/default.yaml)
PREEMPTED_NAME = "preempted"  # <run>/checkpoints/preempted.ckpt, written on SIGTERM


class CheckpointError(ValueError):
    """A file that is not a usable checkpoint; the message names it and what to do."""


def damage(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not a whole torch checkpoint (not a zip archive, truncated, a failed CRC), or None."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        return "it is not a torch checkpoint (no zip archive: truncated, or another kind of file)"
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        return f"its zip archive is damaged ({err})"
    return f"its member {bad} fails its CRC (the file is damaged)" if bad else None


def load(path: str | os.PathLike, map_location="cpu", mmap: bool = False) -> dict:
    """A checkpoint read with torch's safe (weights-only) unpickler; ``mmap``: tensors read lazily.
    Raises ``CheckpointError`` naming the file when it is not a whole checkpoint or not a plain one."""
    if not zipfile.is_zipfile(path):  # cheap (the archive's end); the full CRC pass only on a failed load
        raise CheckpointError(f"{path} cannot be loaded: {damage(path)}; give another checkpoint file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile) as err:
        problem = damage(path) or str(err).splitlines()[0]
        raise CheckpointError(f"{path} cannot be loaded: {problem}; give another checkpoint file") from err
    except pickle.UnpicklingError as err:
        if "omegaconf" not in str(err):  # not one of our old checkpoints: never suggest unpickling it
            raise CheckpointError(
                f"{path} holds objects other than tensors and plain containers ({str(err).splitlines()[0]}); "
                "it was not written by lss-lightning's train.py and is not loaded"
            ) from err
        raise CheckpointError(
            f"{path} is an lss-lightning checkpoint from before checkpoints were plain (it holds Hydra "
            "containers), so it cannot be loaded safely. If you wrote it yourself, convert it once: "
            f"python -c \"from lss_lightning.run.checkpoints import upgrade; upgrade('{path}')\""
        ) from err


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO, written as temp file + fsync + rename in the target directory."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        write_atomic(Path(path), buffer.getbuffer())


def write_atomic(path: Path, data) -> None:
    """Write bytes to ``path`` whole or not at all (temp file in its directory, fsync, rename, fsync dir);
    a full disk raises ``OSError(ENOSPC)`` naming the directory, the bytes needed and the space free."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.errno != errno.ENOSPC:
            raise
        free = shutil.disk_usage(path.parent).free
        raise OSError(
            errno.ENOSPC,
            f"no space left on the device of {path.parent} to write {path.name}: it needs "
            f"{len(data) / 2**20:.1f} MiB and {free / 2**20:.1f} MiB are free. Nothing was half-written; free "
            "space (or move logs with LSS_LOG_DIR) and resume with ckpt_path=last",
        ) from None
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


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
    # last*.ckpt (end of epoch), preempted.ckpt (SIGTERM), the monitored epoch*.ckpt (also end of epoch:
    # the fallback when a newer file is damaged), hpc_ckpt_<n>.ckpt (SLURM's warning signal)
    return list((run_dir / CHECKPOINT_DIR).glob("*.ckpt")) + list(run_dir.glob("hpc_ckpt_*.ckpt"))


def resolve_checkpoint(spec: str | os.PathLike | None, run_dir: str | os.PathLike) -> Path | None:
    """The checkpoint file that ``ckpt_path=spec`` means for the run in ``run_dir``.

    None or "none": start from scratch. "last": the newest checkpoint of this run (None if it has none
    yet, so ``last`` can stay set for a first start). A run directory: its newest checkpoint. A file: itself.
    """
    if spec is None or str(spec).lower() in ("", "none", "null"):
        return None
    if str(spec) == "last":
        newest = newest_whole(run_candidates(Path(run_dir)))
        if newest is None:
            log.info("ckpt_path=last: %s has no usable checkpoint yet, training from scratch", run_dir)
        return newest
    path = Path(spec).expanduser().resolve()
    if path.is_dir():
        newest = newest_whole(run_candidates(path))
        if newest is None:
            raise FileNotFoundError(
                f"ckpt_path={spec}: the directory holds no whole checkpoint (looked for {CHECKPOINT_DIR}/*.ckpt "
                "and hpc_ckpt_*.ckpt; damaged ones are named in the warnings above); give a .ckpt file, or "
                "ckpt_path=null to start from scratch"
            )
        return newest
    if not path.is_file():
        raise FileNotFoundError(
            f"ckpt_path={spec} does not exist; give an existing .ckpt file or run directory, ckpt_path=last "
            "(this run's own newest checkpoint) or ckpt_path=null (from scratch)"
        )
    return path


def newest_whole(paths: list[Path]) -> Path | None:
    """The newest of ``paths`` that is a whole checkpoint; damaged newer ones are skipped with a warning."""
    existing = sorted((p for p in paths if p.is_file()), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for path in existing:
        problem = damage(path)
        if problem is None:
            return path
        log.warning("skipping checkpoint %s: %s; resuming from an older one if there is one", path, problem)
    return None
