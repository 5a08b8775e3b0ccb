"""Physics-informed velocity networks: a residual target on a baseline input, per-cell loss weights, and the
checks that stop a configuration naming them before any data is read."""

from __future__ import annotations

import functools

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn

from lss_lightning.config import CONF_DIR
from lss_lightning.data.datamodule import FieldCropDataModule
from lss_lightning.run import train
from lss_lightning.run.preflight import ConfigError, check_training_config
from lss_lightning.tasks.losses import MagnitudeDirectionLoss, encode_magnitude_direction, mse_loss
from lss_lightning.tasks.reconstruction import VelocityReconstruction, residual_baseline

DENSITY = {"name": "density", "kind": "scalar", "channels": 1}
LINEAR = {"name": "velocity_linear", "kind": "vector", "channels": 3}
VELOCITY = {"name": "velocity", "kind": "vector", "channels": 3}
PAD = 2


class ZeroNet(nn.Module):
    """A valid 'network' of 2 x PAD cells of context that outputs exactly zero (and has one parameter)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.out_channels = out_channels
        self.scale = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        n = [s - 2 * PAD for s in x.shape[2:]]
        return self.scale * torch.ones(x.shape[0], self.out_channels, *n, dtype=x.dtype)

    def check_crop_padding(self, crop, pad):
        pass


def _task(loss="mse", residual_of="velocity_linear", inputs=(DENSITY, LINEAR), **kwargs):
    task = VelocityReconstruction(
        **kwargs,
        net=ZeroNet,
        input_layouts=list(inputs),
        target_layouts=[VELOCITY],
        optimizer=functools.partial(torch.optim.SGD, lr=0.1),
        loss=loss,
        residual_of=residual_of,
    )
    stats = {"density": (0.0, 1.3), "velocity_linear": (0.0, 250.0), "velocity": (0.0, 310.0)}
    task.input_norm.set_statistics(stats)
    task.target_norm.set_statistics(stats)
    return task


def _batch(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, n, n, n, generator=g)
    x[:, 1:] *= 300.0  # km/s
    target = 300.0 * torch.randn(2, 3, n - 2 * PAD, n - 2 * PAD, n - 2 * PAD, generator=g)
    return {"input": x, "target": target}


@pytest.mark.parametrize("loss", ["mse", "magnitude_direction"])
def test_a_residual_model_that_outputs_zero_reproduces_the_baseline_exactly(loss):
    task = _task(loss)
    batch = _batch()
    baseline = batch["input"][:, 1:4, PAD:-PAD, PAD:-PAD, PAD:-PAD]
    assert torch.equal(task.predict_physical(batch["input"]), baseline)
    # the loss sees the baseline as the prediction
    expected = (
        mse_loss(baseline / 310.0, batch["target"] / 310.0)
        if loss == "mse"
        else MagnitudeDirectionLoss()(
            encode_magnitude_direction(baseline), encode_magnitude_direction(batch["target"])
        )
    )
    out = task(batch["input"])
    assert out.shape[1] == 3  # a correction of the velocity, whatever the loss
    assert torch.allclose(task.loss(out, batch), expected, rtol=1e-6)
    # and a target equal to the baseline gives zero loss
    assert task.loss(out, {**batch, "target": baseline.clone()}).item() == pytest.approx(0.0, abs=1e-7)


def test_the_residual_correction_is_in_units_of_the_target_rms_and_gets_gradients():
    task = _task()
    batch = _batch()
    task.net.scale.data.fill_(1.0)  # the net now outputs 1 everywhere: +310 km/s on every component
    baseline = batch["input"][:, 1:4, PAD:-PAD, PAD:-PAD, PAD:-PAD]
    assert torch.allclose(task.predict_physical(batch["input"]), baseline + 310.0)
    loss, _ = task.step(batch)
    loss.backward()
    assert task.net.scale.grad is not None and task.net.scale.grad.abs() > 0


def test_a_learnable_baseline_gain_starts_at_the_baseline_and_learns_a_damped_linear_theory():
    task = _task(residual_gain=True)
    batch = _batch()
    baseline = batch["input"][:, 1:4, PAD:-PAD, PAD:-PAD, PAD:-PAD]
    assert torch.equal(task.predict_physical(batch["input"]), baseline)  # gain 1 at the start
    # the truth is 0.6 x the baseline per component: SGD on the gain alone finds it
    batch["target"] = baseline * torch.tensor([0.6, 0.6, 0.4]).view(1, 3, 1, 1, 1)
    opt = torch.optim.SGD([task.baseline_gain], lr=0.5)
    for _ in range(200):
        opt.zero_grad()
        task.step(batch)[0].backward()
        opt.step()
    assert torch.allclose(task.baseline_gain.detach(), torch.tensor([0.6, 0.6, 0.4]), atol=1e-3)
    with pytest.raises(ValueError, match="residual_gain=true needs a residual target"):
        _task(residual_of=None, residual_gain=True)


def test_residual_auto_picks_linear_theory_for_a_velocity_target_only():
    lay = VelocityReconstruction.__init__.__globals__["as_layouts"]
    inputs, target = lay([DENSITY, LINEAR]), lay([VELOCITY])
    assert residual_baseline(inputs, target, "auto") == ("velocity_linear", 1, 3)
    assert residual_baseline(lay([DENSITY]), target, "auto") is None
    momentum = lay([{"name": "momentum", "kind": "vector", "channels": 3}])
    assert residual_baseline(inputs, momentum, "auto") is None  # linear theory is not a momentum
    assert residual_baseline(inputs, target, None) is None
    with pytest.raises(ValueError, match=r"(?s)'velocity_rsd' is not among data.inputs.*residual_of=null"):
        residual_baseline(inputs, target, "velocity_rsd")
    with pytest.raises(ValueError, match="a scalar of 1 channels"):
        residual_baseline(inputs, target, "density")
    assert _task(residual_of="auto").hparams.residual_of == "velocity_linear"
    assert _task(residual_of="auto", inputs=(DENSITY,)).baseline_channels is None


@pytest.mark.parametrize("loss", ["mse", "magnitude_direction"])
def test_the_weighted_loss_is_zero_at_the_truth_and_ignores_empty_cells(loss):
    task = _task(loss, residual_of=None)
    g = torch.Generator().manual_seed(3)
    truth = 300.0 * torch.randn(2, 3, 6, 6, 6, generator=g)
    weight = torch.zeros(2, 1, 6, 6, 6)
    weight[:, :, :2] = torch.rand(2, 1, 2, 6, 6, generator=g) + 0.1  # haloes in the first two x-planes only

    def raw(v):  # the network output that decodes to velocity v
        return task.encode_target(v)

    garbage = truth.clone()
    garbage[:, :, 2:] = 1e3 * torch.randn(2, 3, 4, 6, 6, generator=g)  # wrong only where the weight is 0
    batch = {"input": torch.zeros(2, 4, 10, 10, 10), "target": truth, "weight": weight}
    assert task.loss(raw(truth), batch).item() == pytest.approx(0.0, abs=1e-6)
    assert task.loss(raw(garbage), batch).item() == pytest.approx(0.0, abs=1e-6)
    wrong = truth.clone()
    wrong[:, :, :2] += 100.0  # wrong where haloes are: the loss sees it
    assert task.loss(raw(wrong), batch).item() > 1e-3
    # weights of one everywhere are the unweighted loss; no halo at all gives zero
    ones = {**batch, "weight": torch.ones_like(weight)}
    plain = task.loss(raw(garbage), {"input": batch["input"], "target": truth})
    assert task.loss(raw(garbage), ones).item() == pytest.approx(plain.item(), rel=1e-5)
    assert task.loss(raw(garbage), {**batch, "weight": torch.zeros_like(weight)}).item() == 0.0


def test_the_data_module_cuts_loss_weights_like_the_target(tiny_store):
    dm = FieldCropDataModule(
        store=str(tiny_store.root),
        inputs=["density"],
        targets=["density_rsd"],
        loss_weight="density_rsd",
        crop=8,
        pad=2,
        batch_size=2,
        train_crops_per_sim=4,
    )
    dm.setup("fit")
    for key in [(0, 0), (0, 1), (1, 3)]:  # random corners and redshift-space symmetries
        item = dm.train_set[key]
        assert item["weight"].shape == (1, 8, 8, 8) and torch.equal(item["weight"], item["target"])
    plain = FieldCropDataModule(store=str(tiny_store.root), inputs=["density"], crop=8, pad=2)
    plain.setup("fit")
    assert "weight" not in plain.train_set[(0, 0)]
    vector = FieldCropDataModule(store=str(tiny_store.root), loss_weight="velocity", crop=8, pad=2)
    with pytest.raises(Exception, match="loss weights are one scalar per cell"):
        vector.open_store()


def _cfg(overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def test_make_run_defaults_to_the_hybrid_and_wu2021_stays_density_only():
    default = _cfg([])
    assert list(default.data.inputs) == ["density", "velocity_linear"] and default.model.residual_of == "auto"
    paper = _cfg(["experiment=wu2021"])
    assert list(paper.data.inputs) == ["density"] and paper.model.residual_of is None
    hybrid = _cfg(["experiment=wu2021_hybrid"])
    assert list(hybrid.data.inputs) == ["density", "velocity_linear"]
    assert hybrid.model.residual_of == "velocity_linear" and hybrid.data.store == paper.data.store


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.inputs=[density,velocity_linar]"], r"(?s)'velocity_linar' is not a field.*velocity_linear"),
        (
            ["model.residual_of=velocity_rsd"],
            r"(?s)not among data.inputs.*fix: data.inputs=\[density,velocity_linear,velocity_rsd\]",
        ),
        (["model.residual_of=density"], r"(?s)is a scalar.*fix: model.residual_of=null"),
        (["data.loss_weight=halo_mass_rsd"], r"(?s)'halo_mass_rsd' is not a field.*fix: data.loss_weight="),
        (["data.loss_weight=velocity"], r"(?s)is a vector field.*one scalar per cell"),
    ],
)
def test_inputs_baselines_and_weights_that_are_not_fields_stop_in_preflight(
    tiny_store, tmp_path, overrides, message
):
    cfg = _cfg([f"data.store={tiny_store.root}", f"paths.output_dir={tmp_path}", "data.crop=8", *overrides])
    with pytest.raises(ConfigError, match=message):
        check_training_config(cfg)


def test_the_hybrid_default_trains_and_evaluates_with_linear_theory_as_its_baseline(tiny_store, tmp_path):
    cfg = _cfg(
        [
            f"data.store={tiny_store.root}",
            f"paths.output_dir={tmp_path}",
            "data.crop=8",
            "data.batch_size=4",
            "data.num_workers=0",
            "model.net.width=4",
            "evaluation.batch_size=16",
            "debug=fast_dev_run",
            "~callbacks.progress_bar",
        ]
    )
    metrics = train(cfg)
    assert "test/unet/vector/0.3/r" in metrics and "test/linear/vector/0.3/r" in metrics


def test_wu2023_hybrid_trains_on_halo_weights_and_evaluates_symmetrised(tiny_halo_store, tmp_path):
    import json

    cfg = _cfg(
        [
            "experiment=wu2023_hybrid",
            f"data.store={tiny_halo_store.root}",
            f"paths.output_dir={tmp_path}",
            "data.crop=13",
            "data.batch_size=2",
            "data.num_workers=0",
            "model.net.width=4",
            "evaluation.batch_size=2",
            "debug=fast_dev_run",
            "~callbacks.progress_bar",
        ]
    )
    assert cfg.data.loss_weight == "halo_mass_rsd" and cfg.evaluation.symmetrise
    train(cfg)
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    rows = written["halos"]["velocities"]["unet"].values()
    assert all(len(row["bias_xyz"]) == 3 for row in rows if row["n_halos"])
