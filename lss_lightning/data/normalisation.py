"""Per-channel normalisation whose statistics come from the training split and live in the checkpoint.

Each stored field maps to consecutive channels. A scalar field may first be transformed
(``log``: log(max(1 + x, 1e-3)), for density contrasts) and is then standardised with its mean and
standard deviation; a vector field is only divided by its rms over all components (no shift, one
scale for the three components), so rotations and flips commute with the normalisation.
The statistics are nn.Module buffers: saved with every checkpoint, moved with the model to its device.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

TRANSFORMS = ("none", "log")
LOG_FLOOR = 1e-3  # 1 + delta is clipped here before the log (empty cells)


def forward_transform(x, name: str):
    """Apply a named transform to a numpy array or torch tensor."""
    if name == "none":
        return x
    if name == "log":
        if isinstance(x, torch.Tensor):
            return torch.log(torch.clamp(1.0 + x, min=LOG_FLOOR))
        return np.log(np.maximum(1.0 + x, LOG_FLOOR))
    raise ValueError(f"unknown transform {name!r}; use one of {TRANSFORMS}")


@dataclass(frozen=True)
class FieldLayout:
    """One stored field in a channel stack: name, kind (scalar/vector/pseudovector), channels, transform."""

    name: str
    kind: str
    channels: int
    transform: str = "none"

    def __post_init__(self):
        if self.transform not in TRANSFORMS:
            raise ValueError(
                f"field {self.name!r}: unknown transform {self.transform!r}; use one of {TRANSFORMS}"
            )
        if self.transform != "none" and self.kind != "scalar":
            raise ValueError(
                f"field {self.name!r}: transforms apply to scalar fields only, it is a {self.kind}"
            )


def as_layouts(layouts: Sequence[FieldLayout | Mapping]) -> list[FieldLayout]:
    """FieldLayouts from layouts or their dicts (as stored in checkpoints' hyper-parameters)."""
    return [f if isinstance(f, FieldLayout) else FieldLayout(**f) for f in layouts]


def field_statistics(chunks, layout: FieldLayout) -> tuple[float, float]:
    """(shift, scale) of a field from an iterable of (C, ...) numpy chunks of it (float64 sums)."""
    total = total_sq = count = 0.0
    for chunk in chunks:
        x = forward_transform(chunk.astype(np.float64), layout.transform)
        total += float(x.sum())
        total_sq += float(np.square(x).sum())
        count += x.size
    if count == 0:
        raise ValueError(f"no data to compute statistics of {layout.name!r}")
    if layout.kind == "scalar":
        mean = total / count
        return mean, float(np.sqrt(max(total_sq / count - mean**2, 0.0)))
    return 0.0, float(np.sqrt(total_sq / count))


class ChannelNormaliser(nn.Module):
    """normalise(x) = (T(x) - shift) / scale per channel of a (B, C, ...) tensor; ``inverse`` undoes it
    (for fields without a transform)."""

    def __init__(self, layouts: Sequence[FieldLayout]):
        super().__init__()
        self.layouts = list(layouts)
        channels = sum(f.channels for f in self.layouts)
        self.register_buffer("shift", torch.zeros(channels))
        self.register_buffer("scale", torch.ones(channels))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    def set_statistics(self, stats: Mapping[str, Sequence[float]]) -> None:
        """stats: field name -> (shift, scale)."""
        shift, scale = [], []
        for f in self.layouts:
            if f.name not in stats:
                raise ValueError(f"no normalisation statistics for field {f.name!r}")
            s, c = stats[f.name]
            if not np.isfinite([s, c]).all() or c <= 0:
                raise ValueError(
                    f"field {f.name!r} has degenerate statistics (shift {s}, scale {c}); is it constant?"
                )
            shift += [s] * f.channels
            scale += [c] * f.channels
        self.shift.copy_(torch.tensor(shift))
        self.scale.copy_(torch.tensor(scale))
        self.fitted.fill_(True)

    def _view(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return t.view(1, -1, *([1] * (x.ndim - 2))).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts, start = [], 0
        for f in self.layouts:
            parts.append(forward_transform(x[:, start : start + f.channels], f.transform))
            start += f.channels
        x = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        return (x - self._view(self.shift, x)) / self._view(self.scale, x)

    def unscale(self, y: torch.Tensor) -> torch.Tensor:
        """y times the scale, no shift: a difference (e.g. a correction to a baseline) in physical units."""
        return y * self._view(self.scale, y)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        if any(f.transform != "none" for f in self.layouts):
            raise ValueError("inverse normalisation of transformed fields is not defined")
        return y * self._view(self.scale, y) + self._view(self.shift, y)
