"""Losses for field-to-field tasks and Wu et al. 2023's magnitude + direction output encoding.

Velocities are peculiar, in km/s, shaped (B, 3, X, Y, Z) with components x, y, z. Losses compute in
float32 (or float64 if given), whatever autocast made of the network output.

Magnitude + direction encoding (5 channels per voxel: m_lo, m_hi, d_x, d_y, d_z). Wu et al. 2023
normalise the speed |v| with c = 1/12 below 60 km/s and c = 1/200 above; we split it into two
channels so that the encoding is continuous and invertible:

    m_lo = min(|v|, 60) / 12           in [0, 5]     (km/s / 12 km/s)
    m_hi = max(|v| - 60, 0) / 200      >= 0          (km/s / 200 km/s)
    d    = v / |v|                     unit vector, (0, 0, 0) where v = 0
    |v|  = 12 m_lo + 200 m_hi          (decoding clamps m_lo to [0, 5] and m_hi to >= 0 first)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

SPLIT_SPEED = 60.0  # km/s: speeds up to this go into m_lo, the excess into m_hi
LOW_SPEED_SCALE = 12.0  # km/s per unit of m_lo (c = 1/12)
HIGH_SPEED_SCALE = 200.0  # km/s per unit of m_hi (c = 1/200)
M_LO_MAX = SPLIT_SPEED / LOW_SPEED_SCALE  # 5
ENCODED_CHANNELS = 5  # m_lo, m_hi, d_x, d_y, d_z
MAGNITUDE = slice(0, 2)
DIRECTION = slice(2, 5)
DIRECTION_EPS = 1e-6  # regularises |d| near zero in decoding and in cos(phi)


def _float(x: torch.Tensor) -> torch.Tensor:
    """At least float32: bf16/fp16 network outputs are upcast before any loss arithmetic."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def weighted_cell_mean(per_cell: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Mean of a per-voxel loss (B, X, Y, Z) over the batch, or with ``weight`` (B, 1, X, Y, Z) or
    (B, X, Y, Z) >= 0 the weighted mean sum(w l) / sum(w): cells of weight 0 do not count at all (a batch
    whose weights are all 0 gives 0). Weights of 1 everywhere give the plain mean."""
    if weight is None:
        return per_cell.mean()
    w = _float(weight)
    w = w[:, 0] if w.ndim == per_cell.ndim + 1 else w
    if w.shape != per_cell.shape:
        raise ValueError(
            f"loss weights shaped {tuple(weight.shape)} do not match the cells {tuple(per_cell.shape)}"
        )
    return (per_cell * w).sum() / w.sum().clamp(min=torch.finfo(w.dtype).tiny)


def mse_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error over all batch entries, channels and voxels (in the target's units); with
    per-voxel ``weight`` (B, 1, ...) the channel-mean squared error averaged with those weights."""
    if weight is None:
        return F.mse_loss(_float(pred), _float(target))
    return weighted_cell_mean((_float(pred) - _float(target)).square().mean(dim=1), weight)


def encode_magnitude_direction(v: torch.Tensor) -> torch.Tensor:
    """Velocity (B, 3, ...) in km/s -> (B, 5, ...) = (m_lo, m_hi, d_x, d_y, d_z), see module docstring."""
    if v.ndim < 2 or v.shape[1] != 3:
        raise ValueError(f"expected a velocity shaped (B, 3, ...), got {tuple(v.shape)}")
    v = _float(v)
    speed = torch.linalg.vector_norm(v, dim=1, keepdim=True)
    m_lo = speed.clamp(max=SPLIT_SPEED) / LOW_SPEED_SCALE
    m_hi = (speed - SPLIT_SPEED).clamp(min=0.0) / HIGH_SPEED_SCALE
    direction = v / speed.clamp(min=torch.finfo(v.dtype).tiny)  # exactly 0 where v = 0
    return torch.cat([m_lo, m_hi, direction], dim=1)


def decode_magnitude_direction(out: torch.Tensor, eps: float = DIRECTION_EPS) -> torch.Tensor:
    """(B, 5, ...) encoding or network output -> velocity (B, 3, ...) in km/s.

    m_lo is clamped to [0, 5] and m_hi to >= 0, then |v| = 12 m_lo + 200 m_hi; the direction channels
    are divided by max(|d|, eps), so a zero direction gives a zero velocity.
    """
    if out.ndim < 2 or out.shape[1] != ENCODED_CHANNELS:
        raise ValueError(f"expected an encoding shaped (B, {ENCODED_CHANNELS}, ...), got {tuple(out.shape)}")
    out = _float(out)
    m_lo = out[:, 0:1].clamp(0.0, M_LO_MAX)
    m_hi = out[:, 1:2].clamp(min=0.0)
    speed = LOW_SPEED_SCALE * m_lo + HIGH_SPEED_SCALE * m_hi
    d = out[:, DIRECTION]
    unit = d / torch.linalg.vector_norm(d, dim=1, keepdim=True).clamp(min=eps)
    return speed * unit


class MeanSquaredErrorLoss(nn.Module):
    """Plain MSE on the target itself (velocity or momentum, 3 channels, in their units)."""

    output_channels: int | None = None  # as many as the target

    def forward(
        self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        return mse_loss(pred, target, weight)

    def encode_target(self, v: torch.Tensor) -> torch.Tensor:
        return v

    def decode_prediction(self, out: torch.Tensor) -> torch.Tensor:
        return out


class MagnitudeDirectionLoss(nn.Module):
    """Wu et al. 2023 loss on encoded fields: 2/5 magnitude error + 3/5 (1 - cos phi).

    Both ``pred`` and ``target`` are (B, 5, ...) encodings (targets from
    ``encode_magnitude_direction``; predictions are raw network outputs, not clamped). With N the
    number of voxels over the whole batch,

        L = w_mag / N sum_i [(m_lo,i - m_lo,i^true)^2 + (m_hi,i - m_hi,i^true)^2]
          + w_dir / N sum_i (1 - cos phi_i),
        cos phi_i = <d_i, d_i^true> / sqrt((|d_i|^2 + eps^2) (|d_i^true|^2 + eps^2)),

    with w_mag = 2/5, w_dir = 3/5. So the paper's "(v_i - v_i^true)^2" is, here, the squared error
    of the encoded speed summed over its two channels, in dimensionless encoded units: for two speeds
    below 60 km/s it is ((|v| - |v_true|) / 12 km/s)^2, for two speeds above 60 km/s it is
    ((|v| - |v_true|) / 200 km/s)^2, and across the split each part is scaled by its own factor.
    Voxels whose true velocity is exactly zero have no direction; their direction term is 0 (they
    still count in N). eps keeps gradients finite when a predicted direction is zero and is below
    float32 resolution for unit vectors, so the loss is exactly 0 at the truth.
    """

    output_channels: int | None = ENCODED_CHANNELS

    def __init__(
        self, magnitude_weight: float = 2 / 5, direction_weight: float = 3 / 5, eps: float = DIRECTION_EPS
    ):
        super().__init__()
        self.magnitude_weight = float(magnitude_weight)
        self.direction_weight = float(direction_weight)
        self.eps = float(eps)

    def components(
        self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """The two unweighted terms: mean magnitude squared error and mean (1 - cos phi); with per-voxel
        ``weight`` (B, 1, ...) both are weighted means over the voxels (``weighted_cell_mean``)."""
        for name, x in (("pred", pred), ("target", target)):
            if x.ndim < 2 or x.shape[1] != ENCODED_CHANNELS:
                raise ValueError(f"{name} must be shaped (B, {ENCODED_CHANNELS}, ...), got {tuple(x.shape)}")
        pred, target = _float(pred), _float(target)
        magnitude = (pred[:, MAGNITUDE] - target[:, MAGNITUDE]).square().sum(dim=1)
        d, d_true = pred[:, DIRECTION], target[:, DIRECTION]
        norm2, norm2_true = (d * d).sum(dim=1), (d_true * d_true).sum(dim=1)
        eps2 = self.eps**2
        cos = (d * d_true).sum(dim=1) / torch.sqrt((norm2 + eps2) * (norm2_true + eps2))
        direction = torch.where(norm2_true > 0, 1.0 - cos, torch.zeros_like(cos))
        return {
            "magnitude": weighted_cell_mean(magnitude, weight),
            "direction": weighted_cell_mean(direction, weight),
        }

    def forward(
        self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        terms = self.components(pred, target, weight)
        return self.magnitude_weight * terms["magnitude"] + self.direction_weight * terms["direction"]

    def encode_target(self, v: torch.Tensor) -> torch.Tensor:
        return encode_magnitude_direction(v)

    def decode_prediction(self, out: torch.Tensor) -> torch.Tensor:
        return decode_magnitude_direction(out, self.eps)


LOSSES: dict[str, type[nn.Module]] = {
    "mse": MeanSquaredErrorLoss,
    "magnitude_direction": MagnitudeDirectionLoss,
}


def make_loss(name: str, **kwargs: Any) -> nn.Module:
    """A loss module by name ("mse", "magnitude_direction"). Each has ``output_channels`` (None: same
    as the target), ``encode_target(v)`` (target in physical units -> what the network predicts) and
    ``decode_prediction(out)`` (network output -> physical units)."""
    if name not in LOSSES:
        raise KeyError(f"unknown loss {name!r}; known: {sorted(LOSSES)}")
    return LOSSES[name](**kwargs)


# ----------------------------------------------------------------------------------------------------
# Parameter inference: the moment network loss (CAMELS; Jeffrey & Wandelt 2020)
# ----------------------------------------------------------------------------------------------------


def moment_network_loss(mean: torch.Tensor, std: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Moment-network loss of (B, P) posterior means, standard deviations and true parameters:

        L = sum_p [ log mean_b (mu_bp - theta_bp)^2 + log mean_b ((mu_bp - theta_bp)^2 - sigma_bp^2)^2 ],

    means over the batch b, sum over parameters p. Minimised by mu = E[theta | x] and
    sigma^2 = Var[theta | x]. Units are those of the inputs (the tasks pass parameters mapped to [0, 1]).
    A mean that is exactly 0 is clamped to the smallest positive float before the log (no -inf).
    """
    if not mean.shape == std.shape == target.shape or mean.ndim != 2:
        raise ValueError(
            f"mean, std and target must share one (B, P) shape, got {tuple(mean.shape)}, "
            f"{tuple(std.shape)}, {tuple(target.shape)}"
        )
    mean, std, target = _float(mean), _float(std), _float(target)
    tiny = torch.finfo(mean.dtype).tiny
    squared_error = (mean - target).square()
    first = squared_error.mean(dim=0).clamp(min=tiny).log()
    second = (squared_error - std.square()).square().mean(dim=0).clamp(min=tiny).log()
    return (first + second).sum()


class MomentNetworkLoss(nn.Module):
    """``moment_network_loss`` on a raw (B, 2P) network output: columns [:P] are the posterior means,
    columns [P:] give the standard deviations through softplus (positive, smooth, ~linear when large)."""

    outputs_per_target = 2

    def split(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 2P) raw output -> (mean, std), each (B, P), at least float32."""
        out = _float(out)
        if out.ndim != 2 or out.shape[1] % 2:
            raise ValueError(f"a moment network output must be shaped (B, 2P), got {tuple(out.shape)}")
        n = out.shape[1] // 2
        return out[:, :n], F.softplus(out[:, n:])

    def forward(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mean, std = self.split(out)
        return moment_network_loss(mean, std, target)


class GaussianNLLLoss(MomentNetworkLoss):
    """Gaussian negative log-likelihood of the targets under N(mean, std^2) per parameter, on the same
    (B, 2P) output as the moment network (means, then standard deviations through softplus):
    mean over batch and parameters of (mu - theta)^2 / (2 sigma^2) + log sigma (torch's
    ``gaussian_nll_loss`` without the constant; variances clamped at 1e-6 of the target units squared)."""

    def forward(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mean, std = self.split(out)
        return F.gaussian_nll_loss(mean, _float(target), std.square(), eps=1e-6)
