"""Two CPU processes (DDP, gloo) read every training crop once per epoch and measure the validation loss
of one process exactly: no crop repeated to even out the ranks."""

from __future__ import annotations

import json

import lightning as L
import pytest
from run_configs import compose_config, tiny_training

from lss_lightning.run import train
from lss_lightning.run.assemble import build_data, load_model


def test_two_processes_read_each_crop_once_and_validate_like_one(tiny_store, tmp_path):
    overrides = [
        *tiny_training(tiny_store.root, epochs=2, batch_size=2),
        "trainer=ddp_cpu",
        "data.crop=16",  # one tile per box: 3 validation crops, which 2 processes cannot share evenly
        "data.split={train: 0.25, val: 0.75, test: 0.0, seed: 0}",
        "data.train_crops_per_sim=5",  # 5 training crops per epoch: uneven too
        "~trainer.limit_val_batches",
        f"paths.output_dir={tmp_path / 'run'}",
        "+callbacks.items._target_=training_probes.RecordTrainingItems",
        f"+callbacks.items.out_dir={tmp_path / 'items'}",
    ]
    cfg = compose_config("train", overrides)
    two = train(cfg)

    seen = {
        rank: [json.loads(line) for line in open(tmp_path / "items" / f"items_rank{rank}.jsonl")]
        for rank in (0, 1)
    }
    assert len(seen[0]) == len(seen[1])  # the same number of steps on both ranks
    for epoch in (0, 1):
        read = [
            i for rank in (0, 1) for batch in seen[rank] if batch["epoch"] == epoch for i in batch["index"]
        ]
        assert sorted(read) == list(range(5))  # every crop once

    # the same weights, one process
    model = load_model(tmp_path / "run" / "checkpoints" / "last.ckpt")
    dm = build_data(cfg)
    one = L.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    (validated,) = one.validate(model, datamodule=dm, verbose=False)
    assert len(dm.val_set) == 3
    assert two["val/loss"] == pytest.approx(validated["val/loss"], rel=1e-5)
