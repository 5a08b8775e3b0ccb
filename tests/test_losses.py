"""Losses and the Wu et al. 2023 magnitude + direction encoding."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lss_lightning.tasks.losses import (
    MagnitudeDirectionLoss,
    MeanSquaredErrorLoss,
    decode_magnitude_direction,
    encode_magnitude_direction,
    make_loss,
    mse_loss,
)


def velocities_with_speeds(speeds, seed=0):
    """(1, 3, len(speeds), 1, 1) velocities in km/s with the given speeds and random directions."""
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(len(speeds), 3, generator=g, dtype=torch.float64)
    d = d / d.norm(dim=1, keepdim=True)
    v = d * torch.tensor(speeds, dtype=torch.float64)[:, None]
    return v.T.reshape(1, 3, len(speeds), 1, 1).float()


def voxels(*columns):
    """(1, C, len(columns), 1, 1) tensor from per-voxel channel lists."""
    return torch.tensor(columns, dtype=torch.float32).T.reshape(1, len(columns[0]), len(columns), 1, 1)


def test_loss_is_exactly_zero_at_the_truth():
    v = torch.randn(2, 3, 6, 6, 6) * 120.0  # speeds on both sides of 60 km/s
    v[0, :, 0, 0, 0] = 0.0  # an empty cell: no direction
    encoded = encode_magnitude_direction(v)
    assert MagnitudeDirectionLoss()(encoded, encoded.clone()).item() == 0.0
    assert mse_loss(v, v.clone()).item() == 0.0


def test_loss_equals_hand_computation():
    v_true = voxels([30.0, 40.0, 0.0], [0.0, 0.0, -160.0])  # speeds 50 and 160 km/s
    # encoding by hand: 50 km/s -> (50/12, 0); 160 km/s -> (60/12, 100/200); unit directions
    expected_encoding = voxels([50 / 12, 0.0, 0.6, 0.8, 0.0], [5.0, 0.5, 0.0, 0.0, -1.0])
    torch.testing.assert_close(encode_magnitude_direction(v_true), expected_encoding)

    pred = voxels([4.0, 0.1, 1.0, 0.0, 0.0], [5.0, 0.25, 0.0, 0.0, -2.0])
    magnitude = [(4 - 50 / 12) ** 2 + (0.1 - 0) ** 2, (5 - 5) ** 2 + (0.25 - 0.5) ** 2]
    one_minus_cos = [1 - 0.6, 1 - 1.0]  # cos(x-axis, (0.6, 0.8, 0)) = 0.6; parallel vectors
    expected = 2 / 5 * sum(magnitude) / 2 + 3 / 5 * sum(one_minus_cos) / 2
    assert math.isclose(expected, 0.14005555555555555, rel_tol=1e-12)

    loss = MagnitudeDirectionLoss()(pred, expected_encoding)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert make_loss("magnitude_direction")(pred, expected_encoding).item() == pytest.approx(
        expected, rel=1e-6
    )

    # MSE by hand: mean of (1 - 0)^2 and (2 - 0)^2 and (0 - 3)^2 over three entries
    assert mse_loss(torch.tensor([1.0, 2.0, 0.0]), torch.tensor([0.0, 0.0, 3.0])).item() == pytest.approx(
        14 / 3
    )


def test_encode_decode_round_trip_across_60_kms():
    speeds = [0.0, 0.5, 12.0, 59.9, 60.0, 60.1, 100.0, 450.0, 2000.0]
    v = velocities_with_speeds(speeds)
    encoded = encode_magnitude_direction(v)
    torch.testing.assert_close(decode_magnitude_direction(encoded), v, rtol=1e-5, atol=1e-4)

    m_lo, m_hi = encoded[0, 0, :, 0, 0], encoded[0, 1, :, 0, 0]
    expected_lo = torch.tensor([min(s, 60.0) / 12 for s in speeds])
    expected_hi = torch.tensor([max(s - 60.0, 0.0) / 200 for s in speeds])
    torch.testing.assert_close(m_lo, expected_lo)
    torch.testing.assert_close(m_hi, expected_hi)
    assert torch.equal(encoded[0, 2:, 0], torch.zeros(3, 1, 1))  # zero velocity -> zero direction


def test_decode_clamps_magnitudes_and_handles_zero_direction():
    out = voxels([7.0, -1.0, 0.0, 2.0, 0.0], [1.0, 0.5, 0.0, 0.0, 0.0])
    v = decode_magnitude_direction(out)
    torch.testing.assert_close(v[0, :, 0, 0, 0], torch.tensor([0.0, 60.0, 0.0]))  # m_lo -> 5, m_hi -> 0
    assert torch.equal(v[0, :, 1, 0, 0], torch.zeros(3))  # zero direction -> zero velocity


def test_gradients_finite_at_zero_vectors():
    target = encode_magnitude_direction(voxels([0.0, 0.0, 0.0], [10.0, 0.0, 0.0]))  # zero and nonzero
    pred = torch.zeros(1, 5, 2, 1, 1, requires_grad=True)  # zero predicted direction everywhere
    loss = MagnitudeDirectionLoss()(pred, target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pred.grad).all()

    out = torch.zeros(1, 5, 2, 1, 1, requires_grad=True)
    decode_magnitude_direction(out).sum().backward()
    assert torch.isfinite(out.grad).all()

    v = torch.zeros(1, 3, 2, 1, 1, requires_grad=True)
    encode_magnitude_direction(v).sum().backward()
    assert torch.isfinite(v.grad).all()


@pytest.mark.parametrize("name", ["mse", "magnitude_direction"])
def test_losses_under_bf16_autocast(name):
    torch.manual_seed(0)
    loss_fn = make_loss(name)
    channels = loss_fn.output_channels or 3
    head = nn.Conv3d(2, channels, 1)
    x = torch.randn(2, 2, 4, 4, 4)
    target = loss_fn.encode_target(torch.randn(2, 3, 4, 4, 4) * 100.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pred = head(x)
        loss = loss_fn(pred, target)
    assert pred.dtype == torch.bfloat16 and loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in head.parameters())
    assert loss_fn.decode_prediction(pred).shape == (2, 3, 4, 4, 4)


def test_registry():
    assert isinstance(make_loss("mse"), MeanSquaredErrorLoss)
    assert make_loss("magnitude_direction", magnitude_weight=1.0).magnitude_weight == 1.0
    assert make_loss("magnitude_direction").output_channels == 5
    with pytest.raises(KeyError, match="unknown loss"):
        make_loss("l1")
