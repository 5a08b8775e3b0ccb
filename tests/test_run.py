"""train.py / eval.py in-process: fast_dev_run, a checkpoint evaluated by eval, helpful config errors."""

from __future__ import annotations

import json

import pytest
from hydra import compose, initialize_config_dir

from lss_lightning.config import CONF_DIR
from lss_lightning.run import evaluate, train

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


def _cfg(name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


def _train_overrides(store, out):
    return [f"data.store={store.root}", f"paths.output_dir={out}", *TINY]


def test_fast_dev_run_trains_and_evaluates(tiny_store, tmp_path):
    cfg = _cfg("train", [*_train_overrides(tiny_store, tmp_path), "debug=fast_dev_run"])
    metrics = train(cfg)
    assert "val/loss" in metrics and "test/unet/vector/0.3/r" in metrics
    summary = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert summary["target"] == "velocity" and summary["simulations"]
    assert (tmp_path / "eval" / "spectra.png").stat().st_size > 10_000
    assert (tmp_path / "eval" / "slices.png").stat().st_size > 10_000


def test_checkpoint_then_eval(tiny_store, tmp_path):
    train_dir = tmp_path / "train"
    cfg = _cfg(
        "train",
        [
            *_train_overrides(tiny_store, train_dir),
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=2",
            "+trainer.limit_val_batches=2",
            "evaluate=false",
        ],
    )
    train(cfg)
    ckpt = train_dir / "checkpoints" / "last.ckpt"
    assert ckpt.exists()
    eval_dir = tmp_path / "eval"
    metrics = evaluate(
        _cfg("eval", [f"ckpt_path={ckpt}", f"paths.output_dir={eval_dir}", "evaluation.batch_size=16"])
    )
    assert metrics and all(k.startswith("test/") for k in metrics)
    written = json.loads((eval_dir / "metrics.json").read_text())
    from lss_lightning.data.store import FieldStore

    predictions = FieldStore(eval_dir / "predictions")
    assert predictions.simulation_ids == written["simulations"]
    assert predictions.read(predictions.simulation_ids[0], "velocity").shape == (3, 16, 16, 16)


def test_crop_padding_mismatch_names_the_needed_padding(tiny_store, tmp_path):
    cfg = _cfg("train", [*_train_overrides(tiny_store, tmp_path), "data.pad=4", "debug=fast_dev_run"])
    with pytest.raises(ValueError, match=r"padding 6"):
        train(cfg)


def test_eval_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(Exception, match="ckpt_path"):
        evaluate(_cfg("eval", [f"paths.output_dir={tmp_path}"]))


def test_two_process_ddp_on_cpu_trains_and_evaluates(tiny_store, tmp_path):
    """ddp_spawn with gloo: datasets, metrics and checkpoints survive two processes (no GPU here)."""
    cfg = _cfg(
        "train",
        [
            *_train_overrides(tiny_store, tmp_path),
            "trainer=ddp_cpu",
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=2",
            "+trainer.limit_val_batches=2",
            "logger=many",
        ],
    )
    metrics = train(cfg)
    assert "val/loss" in metrics and "test/unet/vector/0.3/r" in metrics
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.parametrize(
    ("model", "net"),
    [
        ("vit3d", ["model.net.name=vit3d_tiny", "+model.net.patch_size=8"]),
        ("cnn3d", ["model.net.name=cnn3d"]),
    ],
)
def test_parameter_models_train_and_evaluate(tiny_lh_store, tmp_path, model, net):
    overrides = [
        f"model={model}",
        "data=mocks_lh",
        f"data.store={tiny_lh_store.root}",
        f"paths.output_dir={tmp_path}",
        "data.targets=[Omega_m,sigma_8]",
        "data.crop=16",
        "data.batch_size=4",
        "data.num_workers=0",
        "data.split={train: 0.5, val: 0.25, test: 0.25, seed: 0}",
        "logger=csv",
        "~callbacks.progress_bar",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=2",
        *net,
    ]
    metrics = train(_cfg("train", overrides))
    assert "val/loss" in metrics and "test/Omega_m/rmse" in metrics
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert written["parameters"] == ["Omega_m", "sigma_8"] and written["per_simulation"]["sigma"] is not None
    assert (tmp_path / "eval" / "parameters.png").exists()
    # eval.py rebuilds the model from the checkpoint alone
    again = evaluate(
        _cfg(
            "eval",
            [f"ckpt_path={tmp_path / 'checkpoints' / 'last.ckpt'}", f"paths.output_dir={tmp_path / 'e2'}"],
        )
    )
    assert again.keys() == {k for k in metrics if k.startswith("test/")}


def test_model_and_targets_must_agree(tiny_lh_store, tmp_path):
    cfg = _cfg(
        "train",
        [
            f"data.store={tiny_lh_store.root}",
            f"paths.output_dir={tmp_path}",
            "data.targets=[Omega_m]",
            "data.pad=0",
            "debug=fast_dev_run",
        ],
    )
    with pytest.raises(ValueError, match=r"predicts fields but data\.targets"):
        train(cfg)


def test_parameter_model_on_a_store_of_one_cosmology_says_why(tiny_store, tmp_path):
    cfg = _cfg(
        "train",
        [
            f"data.store={tiny_store.root}",
            f"paths.output_dir={tmp_path}",
            "model=cnn3d",
            "model.net.name=cnn3d",
            "data.targets=[Omega_m]",
            "data.crop=8",
            "data.num_workers=0",
            "debug=fast_dev_run",
            "~callbacks.progress_bar",
        ],
    )
    with pytest.raises(ValueError, match=r"nothing to infer.*latin-hypercube"):
        train(cfg)


def test_wu2023_experiment_on_halo_channels_with_magnitude_direction_output(tiny_halo_store, tmp_path):
    cfg = _cfg(
        "train",
        [
            "experiment=wu2023",
            f"data.store={tiny_halo_store.root}",
            f"paths.output_dir={tmp_path}",
            "data.crop=13",  # the largest wu2023 output that fits the 16^3 box (45 in the paper)
            "data.batch_size=2",
            "data.num_workers=0",
            "model.net.width=4",
            "evaluation.batch_size=2",
            "debug=fast_dev_run",
            "~callbacks.progress_bar",
        ],
    )
    metrics = train(cfg)
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert written["target"] == "halo_velocity_rsd" and written["input_density"] == "halos_m0_rsd"
    assert written["linear_baseline"] == "velocity_linear_halos_rsd / 1"
    assert "test/linear/vector/0.3/r" in metrics  # (an untrained U-net may predict |v| = 0: r undefined)
    assert set(written["summary"]["unet"]) == {"vector", "magnitude", "divergence", "vorticity"}
    halos = written["halos"]  # the store holds FoF catalogues: halo-level evaluation is on by default
    assert set(halos["clustering"]) == {"real space", "redshift space", "unet", "linear"}
    assert len(halos["velocities"]["linear"]) == 6  # the store's six mass bins
    assert all(row["n_halos"] > 0 for row in halos["velocities"]["linear"].values())
    assert "test/halos/quadrupole_residual/linear" in metrics
    assert (tmp_path / "eval" / "halo_clustering.png").stat().st_size > 10_000


def test_momentum_target(tiny_store, tmp_path):
    cfg = _cfg(
        "train", [*_train_overrides(tiny_store, tmp_path), "data.targets=[momentum]", "debug=fast_dev_run"]
    )
    train(cfg)
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["target"] == "momentum"
