"""Layers shared by the backbones: normalisation and activation by name, centre crops of 3D maps, and the
concatenation of summary statistics to a head's pooled features."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def norm_layer(kind: str, channels: int, groups: int) -> nn.Module:
    """ "batch" (BatchNorm3d), "group" (GroupNorm with the largest group count <= groups dividing channels)
    or "none"."""
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    if kind == "group":
        return nn.GroupNorm(largest_divisor_at_most(channels, groups), channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be 'batch', 'group' or 'none', got {kind!r}")


def largest_divisor_at_most(n: int, limit: int) -> int:
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


def activation_layer(kind: str, negative_slope: float) -> nn.Module:
    """ "leaky_relu" (with negative_slope) or "gelu"."""
    if kind == "leaky_relu":
        return nn.LeakyReLU(negative_slope)
    if kind == "gelu":
        return nn.GELU()
    raise ValueError(f"activation must be 'leaky_relu' or 'gelu', got {kind!r}")


def center_crop(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Centre-crop the last three axes of ``x`` to ``size`` (differences must be even)."""
    slices = []
    for have, want in zip(x.shape[-3:], size, strict=True):
        margin = (have - want) // 2
        slices.append(slice(margin, margin + want))
    return x[(..., *slices)]


def with_summaries(features: torch.Tensor, summaries: torch.Tensor | None, expected: int) -> torch.Tensor:
    """Concatenate (B, expected) summaries to (B, F) features; checks that they come when, and only
    when, the model was built for them. Shared by the ViT, CNN and EfficientNet heads."""
    if expected == 0:
        if summaries is not None:
            raise ValueError("summaries were given but the model was built with num_summaries=0")
        return features
    if summaries is None:
        raise ValueError(f"the model was built with num_summaries={expected} but no summaries were given")
    if summaries.shape != (len(features), expected):
        raise ValueError(
            f"summaries must be shaped ({len(features)}, {expected}), got {tuple(summaries.shape)}"
        )
    return torch.cat([features, summaries.to(features.dtype)], dim=1)
