"""A two-trial Optuna sweep (hydra-optuna-sweeper) runs train.py twice and records the best value."""

from __future__ import annotations

import csv
import json

import yaml
from run_configs import run_train_py, tiny_training


def test_two_trial_optuna_sweep_records_its_best_validation_loss(tiny_store, tmp_path):
    done = run_train_py(
        [
            "-m",
            "hparams_search=unet_optuna",
            "hydra.sweeper.n_trials=2",
            "model.net.width=4",  # fixed on the command line: Optuna searches lr and weight decay only
            *[o for o in tiny_training(tiny_store.root, epochs=1) if "width" not in o],
            "+trainer.limit_train_batches=2",
            f"paths.log_dir={tmp_path}",
        ]
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(result["best_params"]) == {"model.optimizer.lr", "model.optimizer.weight_decay"}
    # each trial returned its best val/loss (one epoch: its only one); the sweep kept the smaller
    trial_losses = [
        float(
            next(
                r["val/loss"]
                for r in csv.DictReader(open(sweep / str(n) / "csv" / "metrics.csv"))
                if r["val/loss"]
            )
        )
        for n in (0, 1)
    ]
    assert result["best_value"] == min(trial_losses)
    lrs = {yaml.safe_load((sweep / str(n) / ".hydra" / "overrides.yaml").read_text())[0] for n in (0, 1)}
    assert len(lrs) == 2  # two different trials
    # every finished trial is also recorded as it finishes (what is left if a sweep is stopped half way)
    trials = [json.loads(line) for line in (sweep / "trials.jsonl").read_text().splitlines()]
    assert sorted(t["trial"] for t in trials) == [0, 1] and {t["status"] for t in trials} == {"completed"}
    assert sorted(t["value"] for t in trials) == sorted(trial_losses)
