"""Parameter inference: the moment-network loss, Fourier inputs, P(k) summaries and the task module."""

from __future__ import annotations

import functools
import math
from types import SimpleNamespace
from typing import ClassVar

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from lss_lightning.fields.spectra import power_spectrum
from lss_lightning.models import create_model
from lss_lightning.models.cnn import CNN3D
from lss_lightning.tasks.losses import GaussianNLLLoss, MomentNetworkLoss, moment_network_loss
from lss_lightning.tasks.parameters import ParameterInference, binned_power_spectrum, fourier_power_channels
from lss_lightning.tasks.summaries import summary_bin_edges

# -- moment-network loss -----------------------------------------------------------------------------


def test_moment_loss_by_hand():
    mean = [[0.1, 0.5], [0.3, 0.2], [0.0, 1.0]]
    std = [[0.2, 0.1], [0.1, 0.3], [0.4, 0.2]]
    theta = [[0.0, 0.4], [0.5, 0.2], [0.1, 0.7]]
    expected = 0.0
    for p in range(2):
        e2 = [(mean[b][p] - theta[b][p]) ** 2 for b in range(3)]
        expected += math.log(sum(e2) / 3)
        expected += math.log(sum((e2[b] - std[b][p] ** 2) ** 2 for b in range(3)) / 3)
    as_tensor = functools.partial(torch.tensor, dtype=torch.float64)
    got = moment_network_loss(as_tensor(mean), as_tensor(std), as_tensor(theta))
    assert got.item() == pytest.approx(expected, rel=1e-12)

    raw = torch.randn(3, 4, dtype=torch.float64)
    split = MomentNetworkLoss().split(raw)
    assert torch.equal(split[0], raw[:, :2]) and torch.allclose(split[1], F.softplus(raw[:, 2:]))
    assert MomentNetworkLoss()(raw, as_tensor(theta)).item() == pytest.approx(
        moment_network_loss(raw[:, :2], F.softplus(raw[:, 2:]), as_tensor(theta)).item()
    )
    with pytest.raises(ValueError, match="share one"):
        moment_network_loss(as_tensor(mean), as_tensor(std)[:, :1], as_tensor(theta))


def test_moment_loss_is_smallest_at_the_true_posterior_mean_and_std():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(20_000, 1, generator=g, dtype=torch.float64)
    mu, sigma = torch.sin(2 * x), 0.05 + 0.1 * x  # theta | x ~ N(mu, sigma^2), heteroscedastic
    theta = mu + sigma * torch.randn(x.shape, generator=g, dtype=torch.float64)
    best = moment_network_loss(mu, sigma, theta).item()
    for wrong_mean, wrong_std in [
        (mu + 0.03, sigma),
        (mu * 1.1, sigma),
        (mu, sigma * 1.3),
        (mu, sigma * 0.7),
        (mu, torch.full_like(sigma, sigma.mean().item())),  # right on average, not per sample
    ]:
        assert moment_network_loss(wrong_mean, wrong_std, theta).item() > best


# -- Fourier channel and P(k) summaries ---------------------------------------------------------------


def test_fourier_channel_is_invariant_under_periodic_shifts_and_centred():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 2, 8, 8, 8, generator=g)
    amp = fourier_power_channels(x)
    assert amp.shape == x.shape and amp.dtype == torch.float32
    shifted = torch.roll(x, shifts=(3, -2, 5), dims=(-3, -2, -1))
    torch.testing.assert_close(fourier_power_channels(shifted), amp, atol=1e-5, rtol=1e-5)
    # m = 0 sits at cell n // 2 and holds log(1 + (sum x)^2 / n^3)
    centre = amp[..., 4, 4, 4]
    torch.testing.assert_close(centre, torch.log1p(x.sum((-3, -2, -1)).square() / 8**3))
    # real input: |F(m)| = |F(-m)|; cell j holds m = j - n/2, so -m is cell (n - j) mod n
    dims = (-3, -2, -1)
    mirrored = torch.roll(torch.flip(amp, dims), shifts=(1, 1, 1), dims=dims)
    torch.testing.assert_close(mirrored, amp, atol=1e-5, rtol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert fourier_power_channels(x.bfloat16()).dtype == torch.float32


def test_power_summary_of_white_noise_is_flat():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(16, 1, 32, 32, 32, generator=g)  # unit variance: P = 1 per mode in grid units
    power = binned_power_spectrum(x, n_bins=8, binning="log").mean(0)
    assert power.shape == (8,)
    assert torch.all((power - 1).abs() < 0.25), power
    centres = np.sqrt(summary_bin_edges(32, 8, "log")[:-1] * summary_bin_edges(32, 8, "log")[1:])
    slope = np.polyfit(np.log(centres), np.log(power.numpy()), 1)[0]
    assert abs(slope) < 0.05
    scaled = binned_power_spectrum(3.0 * x, n_bins=8, binning="log").mean(0)
    torch.testing.assert_close(scaled, 9.0 * power, rtol=1e-4, atol=0)


@pytest.mark.parametrize("channels", [1, 3])
def test_power_summary_matches_fields_spectra_on_integer_shells(channels):
    n = 16
    g = torch.Generator().manual_seed(3)
    field = torch.randn(channels, n, n, n, generator=g)
    ours = binned_power_spectrum(field[None], n_bins=n // 2, binning="linear")[0]
    reference = power_spectrum(field, box_size=float(n))  # cell = 1: the same grid units
    np.testing.assert_allclose(ours.numpy(), reference.power, rtol=1e-4)


def test_power_summary_says_when_shells_are_empty():
    with pytest.raises(ValueError, match="empty for a 16\\^3 crop"):
        binned_power_spectrum(torch.randn(1, 1, 16, 16, 16), n_bins=12, binning="log")


# -- the task -------------------------------------------------------------------------------------


class SyntheticParameters(L.LightningDataModule):
    """Crops whose parameters are the field's mean (offset) and standard deviation (amplitude)."""

    parameter_names = ("offset", "amplitude")
    ranges: ClassVar[dict[str, tuple[float, float]]] = {"offset": (-1.0, 1.0), "amplitude": (0.5, 2.0)}

    def __init__(self, n: int = 12, n_train: int = 64, n_val: int = 32, batch_size: int = 16):
        super().__init__()
        self.geometry = SimpleNamespace(input_size=n)
        self.statistics = {"density": (0.0, 1.0)}
        self.parameter_statistics = {k: {"min": lo, "max": hi} for k, (lo, hi) in self.ranges.items()}
        self.batch_size = batch_size
        self.train_items = self._items(n, n_train, seed=10)
        self.val_items = self._items(n, n_val, seed=11)

    def _items(self, n: int, count: int, seed: int) -> list[dict[str, torch.Tensor]]:
        g = torch.Generator().manual_seed(seed)
        lo = torch.tensor([r[0] for r in self.ranges.values()])
        hi = torch.tensor([r[1] for r in self.ranges.values()])
        theta = lo + (hi - lo) * torch.rand(count, 2, generator=g)
        x = theta[:, 0, None, None, None, None] + theta[:, 1, None, None, None, None] * torch.randn(
            count, 1, n, n, n, generator=g
        )
        return [{"input": x[i], "target": theta[i], "sim": torch.tensor(i)} for i in range(count)]

    def train_dataloader(self):
        return DataLoader(self.train_items, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val_items, batch_size=self.batch_size)


LAYOUTS = [{"name": "density", "kind": "scalar", "channels": 1, "transform": "none"}]
SMALL_CNN = functools.partial(
    CNN3D, channels=(8, 16), kernels=3, strides=2, paddings=1, pool_size=1, hidden=(32,), norm="none"
)
SMALL_VIT = functools.partial(create_model, "vit3d_tiny", patch_size=4, embed_dim=32, depth=1, num_heads=2)


def task(net=SMALL_CNN, **overrides) -> ParameterInference:
    torch.manual_seed(0)
    kwargs = dict(
        net=net,
        input_layouts=LAYOUTS,
        parameter_names=["offset", "amplitude"],
        optimizer=functools.partial(torch.optim.Adam, lr=3e-3),
    )
    return ParameterInference(**{**kwargs, **overrides})


def trainer(**overrides) -> L.Trainer:
    kwargs = dict(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    return L.Trainer(**{**kwargs, **overrides})


def test_training_on_a_synthetic_problem_reduces_the_loss():
    dm = SyntheticParameters()
    adam = functools.partial(torch.optim.Adam, lr=1e-2)
    model = task(parameter_ranges=SyntheticParameters.ranges, optimizer=adam)
    before = trainer().validate(model, datamodule=dm, verbose=False)[0]
    fit = trainer(max_epochs=6)  # 24 steps
    fit.fit(model, datamodule=dm)
    after = fit.validate(model, datamodule=dm, verbose=False)[0]
    assert after["val/loss"] < 0.2 * before["val/loss"], (before, after)
    for name in ("offset", "amplitude"):
        assert after[f"val/rmse_{name}"] < before[f"val/rmse_{name}"]
        assert f"val/rel_err_{name}" in after
    # the RMSE is in physical units: recompute it from predict_parameters
    batch = next(iter(dm.val_dataloader()))
    model.eval()
    mean, std = model.predict_parameters(batch["input"])
    assert std is None and mean.shape == (16, 2)
    assert mean[:, 1].min() > 0.0  # amplitudes, in their own units


def test_moment_task_with_fourier_channel_and_summaries_and_its_checkpoint(tmp_path):
    dm = SyntheticParameters()
    model = task(
        net=SMALL_VIT,
        loss="moment",
        img_size=12,
        fourier_channel=True,
        summaries=["power_spectrum"],
        n_summary_bins=4,
    )
    assert model.net.in_channels == 2 and model.net.num_outputs == 4 and model.net.num_summaries == 4
    model.run_config = {"model": {"name": "test"}}
    fit = trainer(max_epochs=1, limit_train_batches=2)
    fit.fit(model, datamodule=dm)
    metrics = fit.callback_metrics
    for name in ("offset", "amplitude"):
        assert {f"val/rmse_{name}", f"val/rel_err_{name}", f"val/std_{name}"} <= set(metrics)
    # no parameter_ranges given: the data module's training-split ranges, kept as plain floats
    assert model.hparams.parameter_ranges == {"offset": [-1.0, 1.0], "amplitude": [0.5, 2.0]}

    path = tmp_path / "model.ckpt"
    fit.save_checkpoint(path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    assert checkpoint["lss_config"] == model.run_config
    hparams = checkpoint["hyper_parameters"]
    assert hparams["input_layouts"] == LAYOUTS and hparams["parameter_names"] == ["offset", "amplitude"]
    assert type(hparams["parameter_ranges"]) is dict and type(hparams["summaries"]) is list
    keys = ("input_layouts", "parameter_names", "parameter_ranges", "loss", "img_size", "fourier_channel")
    rebuilt = task(
        net=SMALL_VIT, summaries=hparams["summaries"], n_summary_bins=4, **{k: hparams[k] for k in keys}
    )
    rebuilt.load_state_dict(checkpoint["state_dict"])
    x = dm.val_items[0]["input"][None].repeat(3, 1, 1, 1, 1)
    model.eval(), rebuilt.eval()
    mean, std = model.predict_parameters(x)
    mean2, std2 = rebuilt.predict_parameters(x)
    torch.testing.assert_close(mean, mean2)
    torch.testing.assert_close(std, std2)
    assert (std > 0).all()


def test_setup_checks_the_data_against_the_model():
    def setup(model, dm):
        model.trainer = SimpleNamespace(datamodule=dm)
        model.setup("fit")

    with pytest.raises(ValueError, match="img_size to 12"):
        setup(task(net=SMALL_VIT, img_size=16), SyntheticParameters())
    with pytest.raises(ValueError, match="order matters"):
        setup(task(parameter_names=["amplitude", "offset"]), SyntheticParameters())
    dm = SyntheticParameters()
    dm.parameter_statistics = None
    with pytest.raises(ValueError, match="parameter_ranges is None"):
        setup(task(), dm)
    setup(task(parameter_ranges=SyntheticParameters.ranges), dm)  # ranges given: no statistics needed
    with pytest.raises(ValueError, match="fewer shells"):
        setup(task(summaries=["power_spectrum"], n_summary_bins=10), SyntheticParameters(n=12))
    with pytest.raises(ValueError, match="unknown summaries"):
        task(summaries=["bispectrum"])
    with pytest.raises(ValueError, match="loss must be"):
        task(loss="gaussian")
    with pytest.raises(ValueError, match="range"):
        task(parameter_ranges={"offset": (1.0, -1.0), "amplitude": (0.5, 2.0)})


# -- every backbone x input combination ---------------------------------------------------------------
def _efficientnet(**kwargs):
    return create_model("efficientnet3d_b0", **kwargs)


def _summary_mlp(**kwargs):
    return create_model("summary_mlp", **kwargs)


BACKBONES = {"cnn": SMALL_CNN, "efficientnet": _efficientnet, "vit": SMALL_VIT, "summary_mlp": _summary_mlp}
ALL_SUMMARIES = ["power_spectrum", "correlation_function", "scattering"]
INPUTS = {
    "field": {},
    "fourier": {"fourier_channel": True},
    "summaries": {"summaries": ALL_SUMMARIES},
    "fourier+summaries": {"fourier_channel": True, "summaries": ALL_SUMMARIES},
    "pk": {"summaries": ["power_spectrum"]},
    "xi": {"summaries": ["correlation_function"], "xi_range": [0.04, 0.5]},
}
COMBINATIONS = [
    (b, i) for b in BACKBONES for i in INPUTS if b != "summary_mlp" or i in ("pk", "xi", "summaries")
]


@pytest.mark.parametrize(("backbone", "inputs"), COMBINATIONS)
def test_every_backbone_and_input_passes_a_fast_dev_run(backbone, inputs):
    n = 16
    dm = SyntheticParameters(n=n, n_train=16, n_val=8, batch_size=8)
    settings = dict(INPUTS[inputs], n_summary_bins=4, xi_bins=4, scattering_J=2)
    img_size = (
        n if backbone in ("vit", "efficientnet") else None
    )  # the task passes the crop to nets that take it
    model = task(net=BACKBONES[backbone], loss="moment", img_size=img_size, **settings)
    trainer(fast_dev_run=True).fit(model, datamodule=dm)
    x = dm.val_items[0]["input"][None].repeat(3, 1, 1, 1, 1)
    model.eval()
    with torch.no_grad():
        out = model(x)
        net_in, summaries = model.network_inputs(x)
    assert out.shape == (3, 4)  # mean and std of (offset, amplitude)
    assert net_in.shape == (3, 2 if settings.get("fourier_channel") else 1, n, n, n)
    expected = {"power_spectrum": 4, "correlation_function": 4, "scattering": 3 * (1 + 2 * 3 + 1 * 3)}
    assert model.num_summaries == sum(expected[s] for s in settings.get("summaries", []))
    assert (summaries is None) == (model.num_summaries == 0)
    if summaries is not None:
        assert summaries.shape == (3, model.num_summaries) and bool(model.summaries.fitted)
    mean, std = model.predict_parameters(x)
    assert mean.shape == std.shape == (3, 2) and (std > 0).all()


def test_a_summary_only_network_refuses_the_fourier_channel():
    with pytest.raises(ValueError, match="fourier_channel=false"):
        task(net=_summary_mlp, fourier_channel=True, summaries=["power_spectrum"], n_summary_bins=4)
    with pytest.raises(ValueError, match="needs summaries"):
        task(net=_summary_mlp)


# -- the uncertainty losses learn the true scatter --------------------------------------------------
@pytest.mark.parametrize("loss", [MomentNetworkLoss(), GaussianNLLLoss()], ids=["moment", "gaussian_nll"])
def test_std_losses_learn_the_true_scatter_of_a_toy_gaussian_problem(loss, one_thread):
    """theta | x ~ N(sin(3x), (0.05 + 0.25 x)^2), x ~ U(0, 1): a small MLP trained with the loss recovers
    the heteroscedastic sigma(x), not just its average."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8192, 1, generator=g)
    sigma = 0.05 + 0.25 * x
    theta = torch.sin(3 * x) + sigma * torch.randn(x.shape, generator=g)
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(1, 64),
        torch.nn.GELU(),
        torch.nn.Linear(64, 64),
        torch.nn.GELU(),
        torch.nn.Linear(64, 2),
    )
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(1500):
        idx = torch.randint(0, len(x), (512,), generator=g)
        optimiser.zero_grad()
        loss(net(x[idx]), theta[idx]).backward()
        optimiser.step()
    grid = torch.linspace(0.05, 0.95, 19)[:, None]
    with torch.no_grad():
        mean, std = loss.split(net(grid))
    true_sigma = 0.05 + 0.25 * grid
    assert torch.all((std / true_sigma - 1).abs() < 0.2), torch.cat([std, true_sigma], 1)
    assert torch.all((mean - torch.sin(3 * grid)).abs() < true_sigma)  # the mean within one sigma
