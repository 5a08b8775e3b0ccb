"""train.py / eval.py in-process: fast_dev_run, a checkpoint evaluated by eval, helpful config errors."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from run_configs import TINY, compose_config

from lss_lightning.cosmology import latin_hypercube
from lss_lightning.evaluate.parameters import read_estimates
from lss_lightning.run import evaluate, train
from lss_lightning.store.schema import build_manifest, field_spec, sim_file_name
from lss_lightning.store.writer import SimulationProducts, fill_store


def _cfg(name: str, overrides: list[str]):
    return compose_config(name, overrides)


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
    from lss_lightning.store.reader import FieldStore

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
        ("summary_mlp", ["model.summaries=[power_spectrum,correlation_function]", "model.n_summary_bins=4"]),
    ],
)
def test_parameter_models_train_and_evaluate(tiny_lh_store, tiny_store, tmp_path, model, net):
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
    metrics = train(
        _cfg(
            "train",
            [*overrides, f"evaluation.fiducial_store={tiny_store.root}", "evaluation.posterior.epochs=20"],
        )
    )
    assert "val/loss" in metrics and "test/Omega_m/rmse" in metrics
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert written["parameters"] == ["Omega_m", "sigma_8"] and written["per_simulation"]["sigma"] is not None
    assert (tmp_path / "eval" / "parameters.png").exists()
    # estimates.csv holds the same box estimates as metrics.json, and its numbers give the same metrics
    ids, columns = read_estimates(tmp_path / "eval" / "estimates.csv")
    assert ids == written["simulations"]
    for j, name in enumerate(written["parameters"]):
        truth, mean, std = (columns[f"{name}_{k}"] for k in ("true", "mean", "std"))
        np.testing.assert_allclose(truth, np.array(written["per_simulation"]["truth"])[:, j])
        np.testing.assert_allclose(mean, np.array(written["per_simulation"]["prediction"])[:, j])
        np.testing.assert_allclose(std, np.array(written["per_simulation"]["sigma"])[:, j])
        entry = written["summary"][name]
        assert entry["rmse"] == pytest.approx(np.sqrt(np.mean((mean - truth) ** 2)))
        assert entry["relative_error"] == pytest.approx(np.mean(np.abs(mean - truth) / truth))
        assert entry["reduced_chi2"] == pytest.approx(np.mean(((mean - truth) / std) ** 2))
        assert entry["coverage_68"] == pytest.approx(np.mean(np.abs(mean - truth) <= 0.994458 * std))
        assert written["calibration"]["parameters"][name]["coverage_95"] is not None
        assert written["posterior"]["calibration"]["parameters"][name]["coverage_68"] is not None
        fiducial = written["fiducial"]["parameters"][name]
        assert fiducial["truth"] == pytest.approx(
            tiny_store.cosmology(tiny_store.simulation_ids[0]).to_dict()[name]
        )
        assert fiducial["scatter"] > 0
    assert written["model"]["parameters"] > 0 and written["model"]["seconds_per_epoch"] > 0
    assert (tmp_path / "eval" / "fiducial.png").exists()
    assert (tmp_path / "eval" / "attention.png").exists() == (model == "vit3d")
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


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.targets=[Omega_m,sigma8]"], r"(?s)'sigma8'.* are not .*sigma_8"),
        (
            ["data.targets=[Omgea_m]"],
            r"(?s)'Omgea_m'.* are not .*Omega_m",
        ),
        (["data.crop=80"], r"(?s)80 cells .*larger than the 64"),
    ],
)
def test_bad_targets_or_sub_volumes_fail_before_any_data_is_read(tmp_path, overrides, message):
    store = tmp_path / "never_built"
    cfg = _cfg(
        "train",
        [
            "model=cnn3d",
            "data=mocks_lh",
            f"data.store={store}",
            f"paths.output_dir={tmp_path / 'run'}",
            *overrides,
        ],
    )
    start = time.perf_counter()
    with pytest.raises(Exception, match=message):  # a ValueError, wrapped by Hydra's instantiate for the data
        train(cfg)
    assert time.perf_counter() - start < 5 and not store.exists()  # no mock was generated


def test_a_missing_fiducial_store_stops_before_training(tiny_lh_store, tmp_path):
    cfg = _cfg(
        "train",
        [
            "model=cnn3d",
            "model.net.name=cnn3d",
            "data=mocks_lh",
            f"data.store={tiny_lh_store.root}",
            "data.crop=16",
            f"evaluation.fiducial_store={tmp_path / 'nowhere'}",
            f"paths.output_dir={tmp_path}",
        ],
    )
    with pytest.raises(FileNotFoundError, match="build it first"):
        train(cfg)
    assert not (tmp_path / "checkpoints").exists()


def test_sub_volume_larger_than_an_existing_box_fails_from_the_manifest(tiny_lh_store, tmp_path):
    cfg = _cfg(
        "train",
        [
            "model=cnn3d",
            "data=mocks_lh",
            f"data.store={tiny_lh_store.root}",
            "data.crop=20",
            f"paths.output_dir={tmp_path}",
        ],
    )
    with pytest.raises(ValueError, match=r"(?s)20 cells .*larger than the 16.*data.crop.*16"):
        train(cfg)


@pytest.fixture(scope="module")
def halo_store(tmp_path_factory):
    """Redshift-space halo channels halos_m<i>_rsd written through the store API (the PM mocks' names),
    16^3 cells, nwLH cosmologies; the fields are log-normal stand-ins whose amplitude follows sigma_8."""
    root = tmp_path_factory.mktemp("stores") / "halos"
    cosmologies = latin_hypercube("quijote_nwlh", 6, seed=3)
    sims = [
        {"id": f"sim_{i:05d}", "file": sim_file_name(f"sim_{i:05d}"), "seed": i, "params": c.to_dict()}
        for i, c in enumerate(cosmologies)
    ]
    names = ["halos_m0_rsd", "halos_m1_rsd"]
    manifest = build_manifest(
        source="test-halos",
        box_size=64.0,
        grid=16,
        redshift=0.0,
        los_axis=2,
        fields={n: field_spec(n) for n in names},
        simulations=sims,
    )

    def produce(sim, _report):
        rng = np.random.default_rng(sim["seed"])
        amp = sim["params"]["sigma_8"]
        fields = {n: np.exp(amp * rng.standard_normal((1, 16, 16, 16))).astype(np.float32) - 1 for n in names}
        return SimulationProducts(fields, {})

    return fill_store(root, manifest, produce, progress=False)


def test_halo_fields_with_fourier_channel_and_all_summaries(halo_store, tmp_path):
    """min2024's inputs (halo mass-bin channels in redshift space, Fourier channel, P(k), xi, scattering,
    seven nwLH parameters) through train and eval."""
    overrides = [
        "experiment=min2024",
        f"data.store={halo_store.root}",
        f"paths.output_dir={tmp_path}",
        "data.inputs=[halos_m0_rsd,halos_m1_rsd]",
        "data.crop=16",
        "data.batch_size=4",
        "data.num_workers=0",
        "data.split={train: 0.5, val: 0.25, test: 0.25, seed: 0}",
        "model.net.name=cnn3d",
        "model.n_summary_bins=4",
        "model.xi_bins=4",
        "model.scattering_J=2",
        "~callbacks.progress_bar",
        "evaluation.posterior.enabled=false",
        "debug=fast_dev_run",
    ]
    metrics = train(_cfg("train", overrides))
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert written["parameters"] == ["Omega_m", "Omega_b", "h", "n_s", "sigma_8", "M_nu", "w0"]
    assert "test/M_nu/rmse" in metrics
    assert np.array(written["per_simulation"]["sigma"]).shape == (len(written["simulations"]), 7)


@pytest.mark.parametrize(
    ("experiment", "net", "targets"),
    [
        ("pan2020", "cnn3d", ["Omega_m", "sigma_8"]),
        ("min2024", "cnn3d_min2024", ["Omega_m", "Omega_b", "h", "n_s", "sigma_8", "M_nu", "w0"]),
        ("efficientnet3d", "efficientnet3d_b0", ["Omega_m", "Omega_b", "h", "n_s", "sigma_8", "M_nu", "w0"]),
        ("hwang2022_vit", "vit3d_hwang_sabiu", ["Omega_m", "w0", "n_s"]),
        ("hwang2022_cnn", "cnn3d_hwang_sabiu", ["Omega_m", "w0", "n_s"]),
    ],
)
def test_parameter_experiments_compose(experiment, net, targets, tmp_path):
    cfg = _cfg("train", [f"experiment={experiment}", f"paths.output_dir={tmp_path}"])
    assert (
        cfg.experiment_name == experiment and cfg.model.net.name == net and list(cfg.data.targets) == targets
    )
    assert cfg.data.generate.solver == "pm" and cfg.evaluation.posterior.enabled
