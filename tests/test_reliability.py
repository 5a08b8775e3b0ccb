"""Nothing lost, nothing silent: damaged stores found where they are read, training history and checkpoints
that survive resumes and full disks, concurrent writers, and settings checked before anything is built."""

from __future__ import annotations

import csv
import errno
import json
import logging
import multiprocessing
import os
import shutil
import subprocess
import time

import h5py
import numpy as np
import pytest
import torch
from run_configs import TINY as RUN_TINY
from run_configs import compose_config

from lss_lightning.data.datamodule import FieldCropDataModule
from lss_lightning.mocks.config import MockConfig
from lss_lightning.mocks.generate import generate_store
from lss_lightning.run import checkpoints, evaluate, train
from lss_lightning.run.preflight import ConfigError, check_training_config
from lss_lightning.store.reader import FieldStore
from lss_lightning.store.schema import StoreError

TINY = [*RUN_TINY, "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1"]
_cfg = compose_config


def _copy(store, tmp_path):
    root = tmp_path / "store"
    shutil.copytree(store.root, root)
    return FieldStore(root)


def _train_sim_outside_statistics(store: FieldStore) -> str:
    dm = FieldCropDataModule(store=str(store.root), crop=8, pad=2, stats_sims=1)
    dm.open_store()
    return dm.splits["train"][1]  # statistics come from train[0] only (stats_sims=1)


# -- damaged stores -------------------------------------------------------------------------------------
def test_nan_in_a_training_sim_outside_the_statistics_stops_training_naming_file_field_and_sim(
    tiny_store, tmp_path
):
    store = _copy(tiny_store, tmp_path)
    sim = _train_sim_outside_statistics(store)
    with h5py.File(store.path(sim), "r+") as f:  # as an old store without checksums would be
        f["fields/velocity"][1, 3, 4, 5] = np.nan
        del f["fields/velocity"].attrs["chunk_crc32"]
    cfg = _cfg(
        "train",
        [
            f"data.store={store.root}",
            f"paths.output_dir={tmp_path / 'run'}",
            *TINY,
            "data.stats_sims=1",
            "data.train_crops_per_sim=8",
            "trainer.max_epochs=1",
            "evaluate=false",
        ],
    )
    with pytest.raises(StoreError, match=rf"(?s){sim}\.h5: field 'velocity' holds NaN or inf.*delete it"):
        train(cfg)


def test_finite_garbage_written_into_a_stored_field_fails_its_checksum(tiny_store, tmp_path):
    store = _copy(tiny_store, tmp_path)
    sim = _train_sim_outside_statistics(store)
    with h5py.File(store.path(sim), "r+") as f:
        f["fields/density"][0, 1, 2, 3] = 3e38
    with pytest.raises(
        StoreError, match=rf"{sim}\.h5: field 'density' of simulation {sim} fails its checksum"
    ):
        store.validate(deep=True)
    dm = FieldCropDataModule(store=str(store.root), crop=8, pad=2, train_crops_per_sim=4, stats_sims=1)
    dm.setup("fit")
    index = dm.train_set.sim_ids.index(sim)
    with pytest.raises(StoreError, match=r"field 'density'.* fails its checksum"):
        dm.train_set[(0, index * 4)]


def test_nan_in_a_normalisation_sim_names_the_sim_and_field(tiny_store, tmp_path):
    store = _copy(tiny_store, tmp_path)
    dm = FieldCropDataModule(store=str(store.root), crop=8, pad=2, stats_sims=1)
    sim = dm.open_store() and dm.splits["train"][0]
    with h5py.File(store.path(sim), "r+") as f:
        f["fields/density"][0, 0, 0, 0] = np.inf
    with pytest.raises(StoreError, match=rf"{sim}\.h5: field 'density' of simulation {sim} holds NaN or inf"):
        FieldCropDataModule(store=str(store.root), crop=8, pad=2, stats_sims=1).setup("fit")


# -- training history and checkpoints ---------------------------------------------------------------
def _rows(run) -> list[dict]:
    with open(run / "csv" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_resume_keeps_the_training_history_and_a_truncated_last_checkpoint_is_skipped(
    tiny_store, tmp_path, caplog
):
    run = tmp_path / "run"
    base = [f"data.store={tiny_store.root}", f"paths.output_dir={run}", *TINY, "evaluate=false"]
    train(_cfg("train", [*base, "trainer.max_epochs=1"]))
    first = _rows(run)
    assert {r["epoch"] for r in first if r["epoch"]} == {"0"}
    train(_cfg("train", [*base, "trainer.max_epochs=2"]))  # ckpt_path=last resumes the run
    rows = _rows(run)
    assert rows[: len(first)] == [{k: r.get(k, "") for k in rows[0]} for r in first]  # kept, not deleted
    assert {r["epoch"] for r in rows if r["epoch"]} == {"0", "1"}
    # a disk that filled while last.ckpt was copied: the newest candidate is damaged
    last = run / "checkpoints" / "last.ckpt"
    whole = last.read_bytes()
    last.write_bytes(whole[: len(whole) // 2])
    with caplog.at_level(logging.WARNING):
        chosen = checkpoints.resolve_checkpoint("last", run)
    assert chosen is not None and chosen != last and checkpoints.damage(chosen) is None
    assert "skipping checkpoint" in caplog.text and "last.ckpt" in caplog.text
    with pytest.raises(checkpoints.CheckpointError, match=r"last\.ckpt cannot be loaded: .*truncated") as err:
        checkpoints.load(last)
    assert "upgrade" not in str(err.value)
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(checkpoints.CheckpointError, match=r"notes\.ckpt cannot be loaded") as err:
        checkpoints.load(text)
    assert "upgrade" not in str(err.value)


def test_eval_refuses_a_checkpoint_whose_task_does_not_match_the_targets(tiny_store, tmp_path):
    run = tmp_path / "run"
    train(
        _cfg(
            "train",
            [
                f"data.store={tiny_store.root}",
                f"paths.output_dir={run}",
                *TINY,
                "trainer.max_epochs=1",
                "evaluate=false",
            ],
        )
    )
    ckpt = next((run / "checkpoints").glob("epoch*.ckpt"))
    bad = _cfg(
        "eval",
        [f"ckpt_path={ckpt}", f"paths.output_dir={tmp_path / 'eval'}", "+data_overrides.targets=[Omega_m]"],
    )
    with pytest.raises(ValueError, match=r"predicts fields but data.targets \['Omega_m'\] are parameters"):
        evaluate(bad)
    # the override the docs show works as shown (no '+'), and evaluation writes its metrics
    other = _copy(tiny_store, tmp_path)
    good = _cfg(
        "eval",
        [f"ckpt_path={ckpt}", f"paths.output_dir={tmp_path / 'eval'}", f"data_overrides.store={other.root}"],
    )
    evaluate(good)
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["target"] == "velocity"


# -- full disks ---------------------------------------------------------------------------------------
@pytest.fixture
def small_tmpfs(tmp_path):
    """A 3 MiB tmpfs (root only; skipped where it cannot be mounted)."""
    mount = tmp_path / "full"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_ends_with_one_clear_error_and_leaves_nothing_half_written(small_tmpfs):
    path = small_tmpfs / "checkpoints" / "last.ckpt"
    checkpoints.write_atomic(path, b"x" * 1000)
    with pytest.raises(OSError, match=r"no space left on the device .* needs 4.0 MiB") as err:
        checkpoints.write_atomic(path, b"y" * (4 * 2**20))
    assert err.value.errno == errno.ENOSPC
    assert path.read_bytes() == b"x" * 1000 and [p.name for p in path.parent.iterdir()] == ["last.ckpt"]
    # a mock store of 16^3 cells x 7 fields x 4 sims (~1.8 MiB of fields) does not fit beside 2 MiB of filler
    (small_tmpfs / "filler").write_bytes(b"0" * (2 * 2**20))
    cfg = MockConfig(
        store=str(small_tmpfs / "store"), n_sims=4, grid=16, box_size=64.0, power="eh", device="cpu"
    )
    with pytest.raises(StoreError, match=r"no space left on the device of .*store: writing sim_0000\d needs"):
        generate_store(cfg, progress=False)
    store = FieldStore(small_tmpfs / "store")
    written = [s for s in store.simulation_ids if store.is_complete(s)]
    assert len(written) < 4 and not list((small_tmpfs / "store").glob("*.tmp"))
    (small_tmpfs / "filler").unlink()
    generate_store(cfg, progress=False)  # resumable: the same command finishes the store
    assert not FieldStore(small_tmpfs / "store").missing()


# -- concurrent writers ---------------------------------------------------------------------------------
def _generate(root: str) -> None:
    torch.set_num_threads(1)
    generate_store(
        MockConfig(store=root, n_sims=6, grid=16, box_size=64.0, power="eh", device="cpu"), progress=False
    )


def test_two_unsharded_generators_on_one_store_end_with_a_valid_store_and_no_crash(tmp_path):
    root = str(tmp_path / "store")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_generate, args=(root,)) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=300)
    assert [w.exitcode for w in workers] == [0, 0]
    store = FieldStore(root)
    assert not store.missing()
    store.validate(deep=True)


# -- settings checked before anything is built ---------------------------------------------------------
def test_a_light_cone_crop_smaller_than_the_histogram_is_refused_before_generation(tmp_path):
    start = time.monotonic()
    cfg = _cfg(
        "train",
        [
            "experiment=hwang2022_cnn",
            f"data.store={tmp_path / 'absent'}",
            "data.crop=16",
            f"paths.output_dir={tmp_path}",
        ],
    )
    with pytest.raises(ConfigError, match=r"(?s)light-cone histograms .*fix: data.crop=\d+ data.pad=0"):
        check_training_config(cfg)
    assert time.monotonic() - start < 15 and not (tmp_path / "absent").exists()


@pytest.mark.parametrize("z", ["-1", "-0.5"])
def test_a_negative_redshift_is_refused_naming_redshift(tmp_path, z):
    cfg = _cfg(
        "train",
        [f"data.store={tmp_path / 'absent'}", f"data.generate.redshift={z}", f"paths.output_dir={tmp_path}"],
    )
    with pytest.raises(ConfigError, match=rf"redshift must be >= 0 .*got {z}"):
        check_training_config(cfg)
    assert not (tmp_path / "absent").exists()


def test_the_store_lock_lets_other_writers_skip_then_wait(tmp_path):
    """While one process holds a simulation's lock, another writer is told so at once (non-blocking)."""
    from lss_lightning.store.writer import simulation_lock

    with simulation_lock(tmp_path, "sim_00000", wait=False) as mine:
        assert mine
        child = subprocess.run(
            [
                os.sys.executable,
                "-c",
                "import sys; from lss_lightning.store.writer import simulation_lock as l\n"
                f"with l({str(tmp_path)!r}, 'sim_00000', wait=False) as m: sys.exit(0 if not m else 1)",
            ]
        )
        assert child.returncode == 0


def test_sigterm_during_evaluation_exits_143_with_one_message(caplog):
    import signal

    from lss_lightning.run.preemption import EXIT_PREEMPTED, stop_on_sigterm

    with pytest.raises(SystemExit) as stop, caplog.at_level(logging.ERROR):
        with stop_on_sigterm("evaluation"):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises before this ends
    assert stop.value.code == EXIT_PREEMPTED and "evaluation stopped by SIGTERM" in caplog.text
    assert signal.getsignal(signal.SIGTERM) is not None  # the previous handler is back


def test_a_velocity_checkpoint_on_a_store_of_another_cell_size_is_warned(tiny_store, caplog):
    from types import SimpleNamespace

    from lss_lightning.run.assemble import warn_if_cell_size_differs

    dm = FieldCropDataModule(store=str(tiny_store.root), crop=8, pad=2)  # 64 Mpc/h / 16 = 4 Mpc/h cells
    with caplog.at_level(logging.WARNING):
        warn_if_cell_size_differs(SimpleNamespace(run_config={"cell_size": 2.0}), dm)
    assert "trained on cells of 2 Mpc/h" in caplog.text and "cells of 4 Mpc/h" in caplog.text
    caplog.clear()
    warn_if_cell_size_differs(SimpleNamespace(run_config={"cell_size": 4.0}), dm)
    assert not caplog.text
