"""ckpt_path=last resumes a run in place; its offline W&B run holds the metrics and plots and continues
under the same id."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

from run_configs import compose_config, tiny_training

from lss_lightning.run import checkpoints, train

STEPS_PER_EPOCH = 4


def wandb_records(path: Path):
    """Records of a W&B run's transaction log (``run-<id>.wandb``), read by hand (wandb has no public
    reader): a 7-byte file header, then 32 KiB blocks of chunks, each with a 7-byte header (CRC-32, uint16
    length, uint8 type: 1 whole record, 2 first, 3 middle, 4 last part), as in LevelDB's log format."""
    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # the block's tail is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def finished_log(run: Path, timeout: float = 30.0) -> Path:
    """The transaction log of an offline run once its exit record is written (the W&B service writes
    asynchronously, a moment after wandb.finish() returns)."""
    log = next(run.glob("run-*.wandb"))
    deadline = time.monotonic() + timeout
    while not any(r.HasField("exit") for r in wandb_records(log)):
        assert time.monotonic() < deadline, f"{log} has no exit record after {timeout} s"
        time.sleep(0.2)
    return log


def offline_runs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*"))


def history_rows(log: Path) -> list[dict[str, float]]:
    """Every history row (one wandb.log call) of a W&B run."""
    return [
        {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
        for record in wandb_records(log)
        if record.HasField("history")
    ]


def history(log: Path) -> dict[str, float]:
    """The last logged value of every metric of a W&B run."""
    return {key: value for row in history_rows(log) for key, value in row.items()}


def test_ckpt_path_last_resumes_the_run_and_its_offline_wandb_run(tiny_store, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"

    def config(epochs: int, evaluate: bool):
        overrides = [
            *tiny_training(tiny_store.root, epochs=epochs),
            f"paths.output_dir={run}",
            "logger=wandb",
            "trainer.log_every_n_steps=1",
            "experiment_name=resume_check",
            "tags=[velocity,test]",
            f"evaluate={str(evaluate).lower()}",
            "evaluation.batch_size=16",
        ]
        return compose_config("train", overrides)

    first = train(config(epochs=1, evaluate=True))
    (log,) = [finished_log(d) for d in offline_runs(run)]
    logged = history(log)
    assert logged["val/loss"] == first["val/loss"]
    assert {"train/loss_step", "train/loss_epoch", "test/unet/vector/0.3/r"} <= logged.keys()
    assert logged["test/unet/vector/0.3/r"] == first["test/unet/vector/0.3/r"]
    assert list(log.parent.glob("files/media/images/eval/spectra_*.png"))  # eval plots as images
    (meta,) = [r.run for r in wandb_records(log) if r.HasField("run")][:1]
    assert (meta.display_name, meta.run_group, meta.job_type) == ("resume_check", "resume_check", "train")
    assert list(meta.tags) == ["velocity", "test"]
    assert checkpoints.load(run / "checkpoints" / "last.ckpt")["global_step"] == STEPS_PER_EPOCH

    # the same run directory, two epochs: ckpt_path=last (the default) continues from epoch 1
    train(config(epochs=2, evaluate=False))
    assert checkpoints.load(run / "checkpoints" / "last.ckpt")["global_step"] == 2 * STEPS_PER_EPOCH
    ids = {d.name.rsplit("-", 1)[-1] for d in offline_runs(run)}
    assert len(offline_runs(run)) == 2 and ids == {meta.run_id}  # one W&B run, resumed
    second = finished_log(next(d for d in offline_runs(run) if next(d.glob("run-*.wandb")) != log))
    steps = [row["trainer/global_step"] for row in history_rows(second) if "trainer/global_step" in row]
    assert steps and min(steps) >= STEPS_PER_EPOCH - 1  # it logs on from where the first part stopped
