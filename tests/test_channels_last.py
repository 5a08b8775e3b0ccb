"""Channels-last-3d: converted on request (weights and input batches), left alone on the CPU by default."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from lss_lightning.run.callbacks import ChannelsLast3d


def _trainer(device: str):
    return SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)))


def test_channels_last_converts_conv3d_weights_and_inputs_when_on():
    model = nn.Sequential(nn.Conv3d(2, 4, 3), nn.Conv3d(4, 2, 1))  # 2 channels: the layouts differ
    callback = ChannelsLast3d(enabled=True)
    callback.setup(_trainer("cpu"), model, "fit")
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert not model[0].weight.is_contiguous()
    batch = {"input": torch.randn(2, 2, 6, 6, 6)}
    callback.on_train_batch_start(None, model, batch, 0)
    assert batch["input"].is_contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(model(batch["input"]), model(batch["input"].contiguous()))


def test_auto_is_off_on_the_cpu():
    model = nn.Sequential(nn.Conv3d(1, 4, 3))
    callback = ChannelsLast3d()
    callback.setup(_trainer("cpu"), model, "fit")
    assert model[0].weight.is_contiguous() and not callback.active
