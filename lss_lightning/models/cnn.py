"""Plain 3D CNN for cubes of cells -> a vector (cosmological parameters), with timm-style presets.

A stack of strided convolutions (each followed by BatchNorm and LeakyReLU), an adaptive average pool
to ``pool_size``^3 cells, flattening, an optional vector of summary statistics concatenated to the
flattened features (e.g. a binned P(k): ``num_summaries`` > 0 and ``forward(x, summaries)``), then an
MLP head (Linear, LeakyReLU, Dropout per hidden layer) and a final Linear to ``num_outputs``.

Sizes per axis, in cells: a convolution of kernel k, stride s, padding p maps n -> (n + 2p - k) // s + 1
(``feature_sizes`` traces them). The adaptive pool makes the head independent of the input size: any
cube at least ``min_input_size()`` cells on a side is accepted (the pool averages down to
``pool_size`` cells per axis, or repeats cells when the last feature map is smaller than that).

Presets: ``create_model("cnn3d_min2024")``, ``cnn3d_min2024(...)``, ``list_models(family="cnn")``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from lss_lightning.models.layers import with_summaries
from lss_lightning.models.registry import model_config, register_model


def _per_stage(value: int | Sequence[int], stages: int, name: str) -> tuple[int, ...]:
    values = (int(value),) * stages if isinstance(value, int) else tuple(int(v) for v in value)
    if len(values) != stages:
        raise ValueError(f"{name} needs one entry per convolution ({stages}), got {list(values)}")
    return values


def conv_output_size(n: int, kernel: int, stride: int, padding: int) -> int:
    """Cells per axis after a convolution (PyTorch's floor rule); <= 0 means the input was too small."""
    return (n + 2 * padding - kernel) // stride + 1


class CNN3D(nn.Module):
    """Strided 3D convolutions + adaptive pool + MLP head; see the module docstring.

    Args:
        in_channels: channels of the input cube.
        num_outputs: length of the output vector.
        channels, kernels, strides, paddings: one entry per convolution (an int means the same for all).
        pool_size: cells per axis after the adaptive average pool (1: global average).
        hidden: widths of the hidden layers of the head.
        dropout: dropout probability after each hidden layer of the head.
        norm: "batch" (BatchNorm3d after each convolution) or "none".
        negative_slope: of the LeakyReLUs.
        num_summaries: length of the summary vector concatenated to the flattened features (0: none).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_outputs: int = 2,
        channels: Sequence[int] = (32, 64, 64, 128),
        kernels: int | Sequence[int] = (2, 2, 5, 4),
        strides: int | Sequence[int] = 2,
        paddings: int | Sequence[int] = 0,
        pool_size: int = 2,
        hidden: Sequence[int] = (128, 64),
        dropout: float = 0.0,
        norm: str = "batch",
        negative_slope: float = 0.01,
        num_summaries: int = 0,
    ):
        super().__init__()
        if norm not in ("batch", "none"):
            raise ValueError(f"norm must be 'batch' or 'none', got {norm!r}")
        self.channels = tuple(int(c) for c in channels)
        stages = len(self.channels)
        if stages == 0:
            raise ValueError("a CNN3D needs at least one convolution")
        self.kernels = _per_stage(kernels, stages, "kernels")
        self.strides = _per_stage(strides, stages, "strides")
        self.paddings = _per_stage(paddings, stages, "paddings")
        self.in_channels, self.num_outputs = int(in_channels), int(num_outputs)
        self.pool_size, self.num_summaries = int(pool_size), int(num_summaries)

        layers: list[nn.Module] = []
        c_in = self.in_channels
        bias = norm == "none"  # a following BatchNorm makes a conv bias redundant
        for c_out, k, s, p in zip(self.channels, self.kernels, self.strides, self.paddings, strict=True):
            layers += [
                nn.Conv3d(c_in, c_out, k, stride=s, padding=p, bias=bias),
                nn.BatchNorm3d(c_out) if norm == "batch" else nn.Identity(),
                nn.LeakyReLU(negative_slope),
            ]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool3d(self.pool_size)

        head: list[nn.Module] = []
        width = c_in * self.pool_size**3 + self.num_summaries
        for h in hidden:
            head += [nn.Linear(width, int(h)), nn.LeakyReLU(negative_slope), nn.Dropout(dropout)]
            width = int(h)
        head.append(nn.Linear(width, self.num_outputs))
        self.head = nn.Sequential(*head)

    def feature_sizes(self, input_size: int) -> list[int]:
        """Cells per axis after each convolution for an ``input_size``^3 cube (ValueError if impossible)."""
        sizes, n = [], int(input_size)
        for i, (k, s, p) in enumerate(zip(self.kernels, self.strides, self.paddings, strict=True)):
            n = conv_output_size(n, k, s, p)
            if n < 1:
                raise ValueError(
                    f"a {input_size}^3 input leaves convolution {i + 1} (kernel {k}, stride {s}, padding {p}) "
                    f"no output cell; this CNN3D needs inputs of at least {self.min_input_size()} cells per axis"
                )
            sizes.append(n)
        return sizes

    def min_input_size(self) -> int:
        """The smallest cube side every convolution maps to at least one cell."""
        n = 1
        for k, s, p in reversed(list(zip(self.kernels, self.strides, self.paddings, strict=True))):
            n = max(1, (n - 1) * s + k - 2 * p)  # the smallest input giving n outputs
        return n

    def forward(self, x: torch.Tensor, summaries: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, X, Y, Z)[, summaries (B, num_summaries)] -> (B, num_outputs)."""
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected (B, {self.in_channels}, X, Y, Z), got {tuple(x.shape)}")
        for n in x.shape[-3:]:
            self.feature_sizes(n)
        features = self.pool(self.features(x)).flatten(1)
        return self.head(with_summaries(features, summaries, self.num_summaries))


# ----------------------------------------------------------------------------------------------------
# Presets
# ----------------------------------------------------------------------------------------------------


def _build(name: str, overrides: dict[str, Any]) -> CNN3D:
    overrides.pop("img_size", None)  # the task passes the cube side to every backbone; a CNN does not need it
    return CNN3D(**{**model_config(name), **overrides})


CNN3D_MIN2024 = {
    "channels": [32, 64, 64, 128],
    "kernels": [2, 2, 5, 4],
    "strides": [2, 2, 2, 2],
    "paddings": 0,
    "pool_size": 2,
    "hidden": [128, 64],
    "num_outputs": 7,
}


@register_model(CNN3D_MIN2024)
def cnn3d_min2024(**kwargs: Any) -> CNN3D:
    """The simple CNN of Min et al. (talk 2023; arXiv 2404.09483) for 60^3 crops of Quijote nwLH haloes.

    From the talk's printed shapes: 60^3 input, conv1 32 channels at 30^3, conv2 64 at 15^3, conv3 64
    at 6^3, conv4 128 at 2^3, linear1 128, linear2 64, then the output (the slide prints 64 outputs;
    we default to the 7 nwLH parameters). Ours: the kernels and strides that give exactly those sizes
    with no cell dropped by the floor rule, namely

        60 -[k2 s2]-> 30 -[k2 s2]-> 15 -[k5 s2]-> 6 -[k4 s2]-> 2      ((n - k) even at every stride)

    (k4 at 15 -> 6 or k3 at 6 -> 2 would give the same sizes but ignore the last cell of each axis);
    BatchNorm + LeakyReLU(0.01) after each convolution, no dropout by default. At 60^3 the adaptive
    pool to 2^3 is the identity, so the head sees the 128 x 2^3 = 1024 features of the slide's conv4.
    """
    return _build("cnn3d_min2024", kwargs)


# Min et al.'s head; k3 s2 p1 convolutions (a side n -> ceil(n / 2)) of doubling width, a global pool
CNN3D_GENERIC = {**CNN3D_MIN2024, "channels": [32, 64, 128, 256], "kernels": 3, "strides": 2, "paddings": 1}
CNN3D_GENERIC["pool_size"] = 1


@register_model(CNN3D_GENERIC)
def cnn3d(**kwargs: Any) -> CNN3D:
    """Ours, for any cube size: four k3 s2 p1 convolutions (each halves the side, rounding up) and a
    global average pool, so the features are translation-invariant summaries of the crop."""
    return _build("cnn3d", kwargs)


# the generic CNN one stage deeper, pooled to 2^3, with a wider head and three outputs
CNN3D_HWANG_SABIU = {**CNN3D_GENERIC, "channels": [32, 64, 128, 256, 512], "pool_size": 2}
CNN3D_HWANG_SABIU.update(hidden=[1024, 256], num_outputs=3)


@register_model(CNN3D_HWANG_SABIU)
def cnn3d_hwang_sabiu(**kwargs: Any) -> CNN3D:
    """Our guess of the size of Hwang & Sabiu's CNN twin of their ViT (talk 2022: 9,162,439 parameters,
    three outputs, 64^3 halo histograms; the layers are not in the talk). Five k3 s2 p1 convolutions
    64 -> 32 -> 16 -> 8 -> 4 -> 2 cells (32 to 512 channels), the 512 x 2^3 features, hidden layers of 1024
    and 256: 9,161,507 parameters with one input channel and three outputs (0.01% fewer than the talk's).
    """
    return _build("cnn3d_hwang_sabiu", kwargs)
