"""3D U-net with valid (unpadded) convolutions, built from a declarative geometry (``models.unet_geometry``:
the size arithmetic, the padding a crop needs, tiling).

Every convolution except the 1x1x1 head is followed by the normalisation and the activation. The
output of a valid U-net is smaller than its input; crops must therefore be padded (periodically, by
the data module) by ``required_padding(target_size)`` voxels per side. ``check_geometry`` and
``check_crop_padding`` say exactly which padding a crop needs when crop, padding and network disagree.

Tiling: the network is translation equivariant under shifts by its total stride 2^depth. Tiles whose
corners are multiples of the total stride therefore stitch into exactly what one forward pass over
the whole (padded) box gives; other tile steps are valid too, but each tile sees its own phase of the
stride. This holds with ``norm="batch"`` in eval mode or ``norm="none"``; ``norm="group"`` normalises
with statistics of each crop, so tiles are then only approximately consistent.

Presets (timm style): ``create_model("wu2021", width=16)``, ``unet_wu2021(...)``, ``list_models(family="unet")``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from lss_lightning.models.layers import activation_layer, center_crop, norm_layer
from lss_lightning.models.registry import model_config, register_model
from lss_lightning.models.unet_geometry import STRIDE, GeometryError, Level, UNetGeometry, maps_input


class ValidConvTranspose3d(nn.ConvTranspose3d):
    """Stride-2 transposed convolution that keeps only voxels reached by every kernel tap.

    Drops ``kernel - 2`` voxels per side of torch's 2 (n - 1) + kernel output (none for kernel 2).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, stride=STRIDE, bias=bias)
        self.edge = kernel_size - STRIDE

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        if self.edge == 0:
            return y
        e = self.edge
        return y[..., e:-e, e:-e, e:-e]


class _Blocks:
    """Convolution + norm + activation blocks of one U-net's settings (a following norm layer makes a
    convolution's bias redundant, so there is one only without norm)."""

    def __init__(self, norm: str, norm_groups: int, activation: str, negative_slope: float):
        self.norm, self.norm_groups = norm, norm_groups
        self.activation, self.negative_slope = activation, negative_slope
        self.bias = norm == "none"

    def block(self, conv: nn.Module, c_out: int) -> nn.Sequential:
        norm = norm_layer(self.norm, c_out, self.norm_groups)
        return nn.Sequential(conv, norm, activation_layer(self.activation, self.negative_slope))

    def stack(self, c_in: int, c_out: int, kernels: tuple[int, ...]) -> tuple[nn.Module, int]:
        """Valid convolutions of these kernels, c_in -> c_out channels; the module and its output channels."""
        layers = []
        for k in kernels:
            layers.append(self.block(nn.Conv3d(c_in, c_out, k, bias=self.bias), c_out))
            c_in = c_out
        return (nn.Sequential(*layers) if layers else nn.Identity()), c_in


class UNet3D(nn.Module):
    """U-net of valid 3D convolutions; see the module docstring for the geometry and size rules.

    Args:
        levels: top to bottom, ``[{"down": [k, ...], "up": [k, ...]}, ...]``.
        bottom: kernels of the convolutions at the coarsest level.
        in_channels, out_channels: channels of input and output fields.
        width: channels at level 0, doubling per level (ignored if ``channels`` is given).
        channels: explicit channels per level, ``depth + 1`` entries (the last one for the bottom).
        down_kernel: kernel of the stride-2 downsampling convolutions.
        up_kernel: kernel of the stride-2 transposed (upsampling) convolutions.
        activation: "leaky_relu" (with ``negative_slope``) or "gelu".
        norm: "batch", "group" (``norm_groups`` groups at most) or "none".
    """

    def __init__(
        self,
        levels: Sequence[Mapping[str, Sequence[int]] | Level],
        bottom: Sequence[int] = (),
        *,
        in_channels: int = 1,
        out_channels: int = 3,
        width: int = 32,
        channels: Sequence[int] | None = None,
        down_kernel: int = 2,
        up_kernel: int = 2,
        activation: str = "leaky_relu",
        negative_slope: float = 0.01,
        norm: str = "batch",
        norm_groups: int = 8,
    ):
        super().__init__()
        self.geometry = UNetGeometry.from_spec(levels, bottom, down_kernel, up_kernel)
        depth = self.geometry.depth
        if channels is None:
            channels = [int(width) * STRIDE**i for i in range(depth + 1)]
        channels = [int(c) for c in channels]
        if len(channels) != depth + 1:
            raise ValueError(
                f"channels needs {depth + 1} entries (one per level and the bottom), got {channels}"
            )
        self.channels = tuple(channels)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        blocks = _Blocks(norm, norm_groups, activation, negative_slope)
        block, conv_stack, bias = blocks.block, blocks.stack, blocks.bias
        self.encoders, self.downsamplers = nn.ModuleList(), nn.ModuleList()
        skip_channels = []
        c = self.in_channels
        for i, level in enumerate(self.geometry.levels):
            stack, c = conv_stack(c, channels[i], level.down)
            self.encoders.append(stack)
            skip_channels.append(c)
            self.downsamplers.append(
                block(nn.Conv3d(c, channels[i + 1], down_kernel, STRIDE, bias=bias), channels[i + 1])
            )
            c = channels[i + 1]
        self.bottom, c = conv_stack(c, channels[depth], self.geometry.bottom)

        upsamplers: list[nn.Module] = [nn.Identity()] * depth
        decoders: list[nn.Module] = [nn.Identity()] * depth
        for i in reversed(range(depth)):
            upsamplers[i] = block(ValidConvTranspose3d(c, channels[i], up_kernel, bias=bias), channels[i])
            decoders[i], c = conv_stack(
                channels[i] + skip_channels[i], channels[i], self.geometry.levels[i].up
            )
        self.upsamplers, self.decoders = nn.ModuleList(upsamplers), nn.ModuleList(decoders)
        self.head = nn.Conv3d(c, self.out_channels, 1)

    # geometry helpers, so callers need only the model
    def output_size(self, input_size: int) -> int:
        return self.geometry.output_size(input_size)

    def input_size_for(self, output_size: int) -> int | None:
        return self.geometry.input_size_for(output_size)

    def required_padding(self, output_size: int) -> int:
        return self.geometry.required_padding(output_size)

    def check_geometry(self, input_size: int, output_size: int) -> None:
        self.geometry.check_geometry(input_size, output_size)

    def check_crop_padding(self, crop_size: int, padding: int) -> None:
        self.geometry.check_crop_padding(crop_size, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, X, Y, Z) -> (B, out_channels, output_size(X), output_size(Y), output_size(Z))."""
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected (B, {self.in_channels}, X, Y, Z), got {tuple(x.shape)}")
        for n in x.shape[-3:]:
            try:
                self.geometry.output_size(n)
            except GeometryError as err:
                near = [
                    m
                    for m in range(
                        max(1, n - 2 * self.geometry.total_stride), n + 2 * self.geometry.total_stride + 1
                    )
                    if maps_input(self.geometry, m)
                ]
                raise GeometryError(
                    f"input shape {tuple(x.shape[-3:])}: {err}; nearby valid input sizes: {near}"
                ) from None
        skips = []
        for encoder, downsample in zip(self.encoders, self.downsamplers, strict=True):
            x = encoder(x)
            skips.append(x)
            x = downsample(x)
        x = self.bottom(x)
        for i in reversed(range(self.geometry.depth)):
            x = self.upsamplers[i](x)
            x = torch.cat([center_crop(skips[i], x.shape[-3:]), x], dim=1)
            x = self.decoders[i](x)
        return self.head(x)


WU2021 = {
    "levels": [{"down": [3, 3], "up": [3, 3, 1]}, {"down": [1, 1], "up": [3, 1]}],
    "bottom": [1, 1, 1],
    "down_kernel": 2,
    "up_kernel": 2,
    "in_channels": 1,
    "out_channels": 3,
    "width": 32,
}


@register_model(WU2021, prefix="unet_")
def unet_wu2021(**kwargs: Any) -> UNet3D:
    """Wu et al. 2021 (ApJ 913:2) geometry: 15 convolutions + 2 transposed convolutions, 32^3 -> 20^3.

    From the paper: the counts (15 conv, 2 deconv), 32^3 density in, 20^3 velocity/momentum out.
    Ours (the paper's per-layer table is not available to us): kernels, strides, channels (32, 64, 128),
    norm and activation. Sizes per axis:

        32 -[3]-> 30 -[3]-> 28 (skip 0) -[down k2]-> 14 -[1]-> 14 -[1]-> 14 (skip 1) -[down k2]-> 7
        bottom: 7 -[1]-> 7 -[1]-> 7 -[1]-> 7
        -[up k2]-> 14 (+ skip 1, 14, no crop) -[3]-> 12 -[1]-> 12
        -[up k2]-> 24 (+ skip 0, 28 cropped by 2 per side) -[3]-> 22 -[3]-> 20 -[1]-> 20 -[head 1]-> 20

    Count: 2+2 encoder + 3 bottom + 2+3 decoder + 2 downsampling + 1 head = 15 convolutions.
    Why the 3x3x3 kernels sit in the decoder rather than in the bottom: with 32 -> 20 every layout has
    the same receptive field through the deepest path (16 voxels, the most a stride-4 valid net can
    have here), but a 3x3x3 after each k2 s2 upsampling mixes neighbouring coarse voxels, so the coarse
    features do not reach the output as non-overlapping 2^3 and 4^3 blocks (a pattern with periods of
    2 and 4 voxels, i.e. spurious power at k_Nyquist and k_Nyquist / 2), and the receptive fields
    through the skips grow from 5 and 6 to 9 and 14 input voxels. Cost: about 2.0 GMAC per 32^3 crop
    at width 32, against 0.85 for ``wu2021_bottleneck``. The alternative layout (3x3x3 in the bottom, 1x1x1 decoder) is the preset
    ``wu2021_bottleneck``.
    """
    return UNet3D(**{**model_config("wu2021"), **kwargs})


WU2021_BOTTLENECK = {
    **WU2021,
    "levels": [{"down": [3, 3], "up": [1, 1, 1]}, {"down": [1, 1], "up": [1, 1]}],
    "bottom": [3, 1, 1],
}


@register_model(WU2021_BOTTLENECK, prefix="unet_")
def unet_wu2021_bottleneck(**kwargs: Any) -> UNet3D:
    """Alternative Wu 2021 layout: same counts and sizes, spatial kernels in encoder and bottom only.

    32 -[3]-> 30 -[3]-> 28 -[down]-> 14 -[1]-> 14 -[1]-> 14 -[down]-> 7 -[3]-> 5 -[1]-> 5 -[1]-> 5
    -[up]-> 10 (skip 14 cropped to 10) -[1]-> 10 -[1]-> 10 -[up]-> 20 (skip 28 cropped to 20)
    -[1]-> 20 -[1]-> 20 -[1]-> 20 -[head]-> 20
    """
    return UNet3D(**{**model_config("wu2021_bottleneck"), **kwargs})


WU2023 = {  # Wu 2021's width; 1x1x1 convolutions between k3 up/down samplings, 4 inputs, 5 outputs
    **WU2021,
    "levels": [{"down": [1, 1], "up": [1, 1]}, {"down": [1, 1], "up": [1, 1]}],
    **{"bottom": [1, 1], "down_kernel": 3, "up_kernel": 3, "in_channels": 4, "out_channels": 5},
}


@register_model(WU2023, prefix="unet_")
def unet_wu2023(**kwargs: Any) -> UNet3D:
    """Wu et al. 2023 (MNRAS 522:4748) sizes: 51^3 in -> 45^3 out, 5 output channels.

    From the paper: the sizes and the 5-channel output (2 magnitude + 3 direction, see
    ``tasks.losses``). Ours: everything else. The paper feeds 6 halo mass bins plus a linear-theory
    velocity on a larger 27^3 grid; our default ``in_channels=4`` is density + linear velocity on the
    same 51^3 grid (override for other inputs). Sizes per axis (kernel-3 resampling keeps sizes odd):

        51 -[1]-> 51 -[1]-> 51 (skip 0) -[down k3]-> 25 -[1]-> 25 -[1]-> 25 (skip 1) -[down k3]-> 12
        bottom: 12 -[1]-> 12 -[1]-> 12
        -[up k3]-> 23 (+ skip 1, 25 cropped by 1 per side) -[1]-> 23 -[1]-> 23
        -[up k3]-> 45 (+ skip 0, 51 cropped by 3 per side) -[1]-> 45 -[1]-> 45 -[head 1]-> 45

    The kernel-3 strided and transposed convolutions alone use up the 3 voxels of context per side
    that 51 -> 45 leaves, so with two levels every other convolution must be 1x1x1; spatial mixing
    happens in the four 3x3x3 resampling convolutions. This is the layout with the largest receptive
    field: 7 voxels for every fourth output plane (whose translates reach the crop edge; no 51 -> 45
    network can do better) and 11 for the others. One-level alternatives with 3x3x3 convolutions
    (e.g. levels=[{down: [3], up: [3, 1]}], bottom=[1, 1]) reach only 7 and 9. Large-scale
    information has to come from the linear-velocity input, as in the paper.
    """
    return UNet3D(**{**model_config("wu2023"), **kwargs})
