"""Bad configurations stop within seconds, before any data is read or generated, naming the override that
fixes them."""

from __future__ import annotations

import time

import pytest
import torch
from omegaconf import OmegaConf
from run_configs import compose_config, run_train_py

from lss_lightning.data.datamodule import FieldCropDataModule
from lss_lightning.run import train
from lss_lightning.run.preflight import ConfigError

TINY = ["data.crop=8", "data.pad=6", "data.batch_size=4", "data.num_workers=0", "model.net.width=4"]


@pytest.fixture
def no_data_access(monkeypatch):
    """Reading or generating a store fails the test: the checks must come first."""

    def touched(*args, **kwargs):
        raise AssertionError("data was read or generated before the configuration was checked")

    for name in ("prepare_data", "open_store", "setup"):
        monkeypatch.setattr(FieldCropDataModule, name, touched)
    monkeypatch.setattr("lss_lightning.mocks.generate.generate_store", touched)
    monkeypatch.setattr("lss_lightning.run.assemble.ensure_mock_store", touched)


def _stops(overrides, match, error=ConfigError):
    started = time.monotonic()
    with pytest.raises(error, match=match):
        train(compose_config("train", overrides))
    assert time.monotonic() - started < 15


def test_crop_larger_than_the_default_box_stops_before_the_store_is_built(tmp_path, no_data_access):
    # the case: the default 64^3 store (absent here, so known from data.generate)
    _stops(
        [f"paths.data_dir={tmp_path}", f"paths.output_dir={tmp_path / 'run'}", "data.crop=200"],
        r"data\.crop=200 cells is larger than the 64\^3-cell boxes(.|\n)*fix: data\.crop=64 data\.pad=6",
    )
    assert not (tmp_path / "mocks").exists()


def test_unknown_parameter_target_names_the_parameters_and_a_store_where_they_vary(tmp_path, no_data_access):
    _stops(
        [
            f"paths.data_dir={tmp_path}",
            f"paths.output_dir={tmp_path / 'run'}",
            "model=cnn3d",
            "data.targets=[Omega_x]",
        ],
        r"data\.targets \['Omega_x'\] are not parameters \(known: Omega_m(.|\n)*fix: .*data=mocks_lh",
    )


def test_missing_quijote_store_points_to_the_converter(tmp_path, no_data_access):
    _stops(
        [f"paths.data_dir={tmp_path}", f"paths.output_dir={tmp_path / 'run'}", "data=quijote"],
        r"no converted Quijote store(.|\n)*python -m lss_lightning\.data\.quijote set_name=latin_hypercube "
        r"redshift=0\.0 grid=128 store=.*data\.store=PATH",
    )


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["data.batch_size=1000000"], r"needs about .* GiB(.|\n)*fix: data\.batch_size=\d+$"),
        (["data.targets=[velocty]"], r"'velocty' is not a field(.|\n)*fix: data\.targets=\[velocity\]"),
        (["data.crop=10"], r"fix: data\.crop=8 data\.pad=6 or data\.crop=12 data\.pad=6"),
        (["trainer.use_distributed_sampler=true"], r"fix: trainer\.use_distributed_sampler=false"),
        (
            ["trainer=ddp_cpu", "data.crop=16", "data.split={train: 0.5, val: 0.25, test: 0.25, seed: 0}"],
            r"1 validation crops cannot be shared by 2 processes(.|\n)*fix: .*data\.split=",
        ),
    ],
)
def test_bad_settings_for_a_store_name_their_fix(tiny_store, tmp_path, no_data_access, overrides, match):
    _stops([f"data.store={tiny_store.root}", f"paths.output_dir={tmp_path}", *TINY, *overrides], match)


def test_parameters_that_do_not_vary_are_refused(tiny_lh_store, tmp_path, no_data_access):
    _stops(
        [
            f"data.store={tiny_lh_store.root}",
            f"paths.output_dir={tmp_path}",
            "model=cnn3d",
            "data.crop=16",
            "data.targets=[Omega_m,M_nu]",
        ],
        r"\['M_nu'\].* do not vary(.|\n)*fix: data\.targets=\[Omega_m,Omega_b,h,n_s,sigma_8\]",
    )


def test_online_wandb_without_credentials_is_refused_instead_of_prompting(
    tiny_store, tmp_path, monkeypatch, no_data_access
):
    for var in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "netrc").write_text("")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    _stops(
        [
            f"data.store={tiny_store.root}",
            f"paths.output_dir={tmp_path}",
            *TINY,
            "logger=wandb",
            "logger.wandb.offline=false",
        ],
        r"fix: logger\.wandb\.offline=true",
    )


def test_resuming_a_checkpoint_of_another_network_or_a_missing_one(tiny_store, tmp_path, no_data_access):
    overrides = [f"data.store={tiny_store.root}", f"paths.output_dir={tmp_path}", *TINY]
    other = OmegaConf.to_container(compose_config("train", [*overrides, "model.net.width=8"]).model)
    torch.save({"lss_config": {"model": other, "data": {}}}, tmp_path / "other.ckpt")
    _stops(
        [*overrides, f"ckpt_path={tmp_path / 'other.ckpt'}"],
        r"trained with model\.net\.width=8, but this run asks for model\.net\.width=4(.|\n)*fix: model\.net\.width=8 ",
    )
    _stops(
        [*overrides, f"ckpt_path={tmp_path / 'missing.ckpt'}"],
        r"ckpt_path=.*missing\.ckpt does not exist",
        error=FileNotFoundError,
    )


def test_train_py_exits_nonzero_within_seconds_with_the_fix(tmp_path):
    started = time.monotonic()
    done = run_train_py([f"paths.data_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}", "data.crop=200"])
    assert time.monotonic() - started < 15
    assert done.returncode != 0
    assert "fix: data.crop=64 data.pad=6" in done.stderr
    assert not (tmp_path / "mocks").exists()
