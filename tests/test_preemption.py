"""Preemption: SIGTERM mid-epoch saves a checkpoint and exits non-zero; the resumed run ends where an
uninterrupted one does, having read the same crops; SLURM's warning signal requeues through Lightning."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch
from run_configs import finish, run_train_py, start_train_py, tiny_training

from lss_lightning.run import checkpoints
from lss_lightning.run.preemption import EXIT_PREEMPTED

STEPS_PER_EPOCH = 4  # 2 training boxes x 8 tiles of 8^3 cells, batches of 4
EPOCHS = 3


def _items(probe_dir: Path) -> list[tuple[int, list[int]]]:
    """(epoch, crop indices) of every training batch, in order."""
    lines = (probe_dir / "items_rank0.jsonl").read_text().splitlines()
    return [(r["epoch"], r["index"]) for r in map(json.loads, lines)]


def _probe(name: str, target: str, **kwargs) -> list[str]:
    out = [f"+callbacks.{name}._target_=training_probes.{target}"]
    return out + [f"+callbacks.{name}.{k}={v}" for k, v in kwargs.items()]


def test_sigterm_mid_epoch_checkpoints_exits_nonzero_and_resumes_to_the_same_step(tiny_store, tmp_path):
    run, whole = tmp_path / "run", tmp_path / "uninterrupted"
    common = tiny_training(tiny_store.root, epochs=EPOCHS)
    uninterrupted = start_train_py(  # alongside, for comparison
        [
            *common,
            f"hydra.run.dir={whole}",
            *_probe("items", "RecordTrainingItems", out_dir=tmp_path / "whole"),
        ]
    )
    stopped = run_train_py(
        [
            *common,
            f"hydra.run.dir={run}",
            *_probe("items", "RecordTrainingItems", out_dir=tmp_path / "first"),
            *_probe("kill", "SignalAtStep", step=6, signal_name="SIGTERM"),
        ]
    )
    assert stopped.returncode == EXIT_PREEMPTED, stopped.stderr[-2000:]
    preempted = checkpoints.load(run / "checkpoints" / "preempted.ckpt")  # weights-only loading
    assert preempted["global_step"] == 6 and preempted["epoch"] == 1  # mid-epoch: 6 = 4 + 2

    resumed = run_train_py(
        [
            *common,
            f"hydra.run.dir={run}",
            *_probe("items", "RecordTrainingItems", out_dir=tmp_path / "second"),
        ]
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming training from" in resumed.stdout + resumed.stderr
    assert not (run / "checkpoints" / "preempted.ckpt").exists()  # superseded once the run finished
    assert finish(uninterrupted).returncode == 0

    final = checkpoints.load(run / "checkpoints" / "last.ckpt")["global_step"]
    assert (
        final
        == checkpoints.load(whole / "checkpoints" / "last.ckpt")["global_step"]
        == EPOCHS * STEPS_PER_EPOCH
    )
    # the resumed epoch went on with the crops it had not read yet
    assert _items(tmp_path / "first") + _items(tmp_path / "second") == _items(tmp_path / "whole")


def test_slurm_warning_signal_requeues_and_sigterm_stops_in_the_jobs_own_run_dir(tiny_store, tmp_path):
    """Lightning's SLURM environment: SIGUSR1 saves hpc_ckpt and calls `scontrol requeue <job>` (a fake one
    here); SLURM's SIGTERM that follows stops the job with a newer checkpoint, in runs/slurm-<job id>."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol_calls.txt"
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    scontrol.chmod(0o755)
    slurm = {
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": "train",
        "SLURM_NTASKS": "1",
        "SLURM_NTASKS_PER_NODE": "1",
        "SLURM_NNODES": "1",
        "SLURM_NODEID": "0",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    }
    done = run_train_py(
        [
            *tiny_training(tiny_store.root, epochs=EPOCHS),
            f"paths.log_dir={tmp_path / 'logs'}",
            *_probe("warn", "SignalAtStep", step=5, signal_name="SIGUSR1"),
            *_probe("kill", "SignalAtStep", step=6, signal_name="SIGTERM"),
        ],
        env=slurm,
    )
    assert done.returncode == EXIT_PREEMPTED, done.stderr[-2000:]
    run = tmp_path / "logs" / "train" / "runs" / "slurm-4242"  # found again by the requeued job
    assert calls.read_text().split() == ["requeue", "4242"]
    assert checkpoints.load(run / "hpc_ckpt_1.ckpt")["global_step"] == 5
    assert checkpoints.resolve_checkpoint("last", run) == run / "checkpoints" / "preempted.ckpt"


def test_last_means_the_newest_checkpoint_of_the_run(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    paths = [tmp_path / "checkpoints" / "last.ckpt", tmp_path / "hpc_ckpt_2.ckpt"]
    for age, path in enumerate(paths):
        torch.save(
            {"global_step": age}, path
        )  # whole checkpoints (damaged ones are skipped: test_reliability)
        os.utime(path, ns=(time.time_ns(), time.time_ns() - (2 - age) * 10**9))
    assert checkpoints.resolve_checkpoint("last", tmp_path) == paths[-1]
    assert checkpoints.resolve_checkpoint(str(tmp_path), tmp_path / "elsewhere") == paths[-1]
    assert checkpoints.resolve_checkpoint("last", tmp_path / "empty") is None  # a first start
    assert checkpoints.resolve_checkpoint(None, tmp_path) is None


def test_checkpoint_with_hydra_containers_is_refused_with_the_upgrade_command(tmp_path):
    from omegaconf import OmegaConf

    old = tmp_path / "old.ckpt"
    torch.save({"hyper_parameters": {"metric_k": OmegaConf.create([0.1, 0.3])}, "lss_config": {}}, old)
    with pytest.raises(ValueError, match=r"upgrade\('.*old\.ckpt'\)"):
        checkpoints.load(old)
    checkpoints.upgrade(old)
    assert checkpoints.load(old)["hyper_parameters"]["metric_k"] == [0.1, 0.3]
