"""Composing train/eval configs in tests, and running train.py in a subprocess (for signals and exit codes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

from lss_lightning.config import CONF_DIR, REPO_ROOT

TESTS_DIR = Path(__file__).resolve().parent


# overrides that make a velocity run on the tiny store take seconds (in-process train/evaluate tests)
TINY = [
    "data.crop=8",
    "data.pad=6",
    "data.batch_size=4",
    "data.num_workers=0",
    "model.net.width=4",
    "evaluation.batch_size=16",
    "logger=csv",
    "callbacks=default",
    "~callbacks.progress_bar",
]


def compose_config(name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


def tiny_training(store_root, *, epochs: int = 3, batch_size: int = 4) -> list[str]:
    """A velocity run on the tiny store that takes seconds: 16 crops (4 steps) per epoch, one val batch."""
    return [
        f"data.store={store_root}",
        "data.crop=8",
        "data.pad=6",
        f"data.batch_size={batch_size}",
        "data.num_workers=0",
        "model.net.width=4",
        "logger=csv",
        "~callbacks.progress_bar",
        "~callbacks.model_summary",
        f"trainer.max_epochs={epochs}",
        "+trainer.limit_val_batches=1",
        "evaluate=false",
    ]


def start_train_py(overrides: list[str], env: dict | None = None) -> subprocess.Popen:
    """Start ``python train.py <overrides>`` from the repository root, with tests/ importable (probes)."""
    # one thread per subprocess: the runs are tiny, and two OpenMP threads fighting other processes for
    # two cores made each step ~30x slower on the shared test machine
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), str(TESTS_DIR), full_env.get("PYTHONPATH", "")])
    return subprocess.Popen(
        [sys.executable, "train.py", *overrides],
        cwd=REPO_ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen, timeout: float = 120) -> subprocess.CompletedProcess:
    """Wait for a started train.py; its return code and output."""
    out, err = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def run_train_py(
    overrides: list[str], env: dict | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run ``python train.py <overrides>`` to the end (see ``start_train_py``)."""
    return finish(start_train_py(overrides, env), timeout)
