"""3D U-net with valid (unpadded) convolutions, built from a declarative geometry.

A geometry is a list of levels (top to bottom), each ``{down: [kernels], up: [kernels]}``, a ``bottom``
list of kernels, a ``down_kernel`` (strided convolution, stride 2) and an ``up_kernel`` (transposed
convolution, stride 2). Level i works at grid spacing 2^i and has ``channels[i]`` channels
(``width * 2^i`` by default). Per axis, in voxels:

    valid convolution, kernel k:               n -> n - k + 1
    downsampling, kernel kd, stride 2:         n -> (n - kd) / 2 + 1   ((n - kd) must be even)
    upsampling (transposed), kernel ku, s 2:   n -> 2 n + 2 - ku   (ku >= 2; see below)
    skip merge: the level's encoder output is centre-cropped to the upsampled size (the difference
    must be even and >= 0, so the crop stays centred) and concatenated to it.

A stride-2 transposed convolution returns 2 (n - 1) + ku voxels, but when ku > 2 its first and last
ku - 2 voxels miss some of their kernel taps (they are sums over coarse voxels beyond the edge, i.e.
implicitly zero-padded); the upsampling therefore drops them, as a valid convolution would. Without
that a tile's border voxels would differ from the same voxels predicted inside a larger tile. For
ku = 2 nothing is dropped.

Every convolution except the 1x1x1 head is followed by the normalisation and the activation. The
output of a valid U-net is smaller than its input; crops must therefore be padded (periodically, by
the data module) by ``required_padding(target_size)`` voxels per side. ``check_geometry`` and
``check_crop_padding`` say exactly which padding a crop needs when crop, padding and network disagree.

Tiling: the network is translation equivariant under shifts by its total stride 2^depth. Tiles whose
corners are multiples of the total stride therefore stitch into exactly what one forward pass over
the whole (padded) box gives; other tile steps are valid too, but each tile sees its own phase of the
stride. This holds with ``norm="batch"`` in eval mode or ``norm="none"``; ``norm="group"`` normalises
with statistics of each crop, so tiles are then only approximately consistent.

Presets (timm style): ``create_unet("wu2021", width=16)``, ``unet_wu2021(...)``, ``list_unets()``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lss_lightning.models.registry import PresetRegistry

STRIDE = 2  # every downsampling halves the grid, every upsampling doubles it


class GeometryError(ValueError):
    """A crop, padding or input size that this U-net geometry cannot map as asked."""


# ----------------------------------------------------------------------------------------------------
# Geometry: pure integer arithmetic, no torch
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Level:
    """One resolution level: valid conv kernels before downsampling and after the skip merge."""

    down: tuple[int, ...] = ()
    up: tuple[int, ...] = ()


@dataclass(frozen=True)
class UNetGeometry:
    """The shape-determining part of a U-net: kernel sizes only, no channels."""

    levels: tuple[Level, ...]
    bottom: tuple[int, ...] = ()
    down_kernel: int = 2
    up_kernel: int = 2

    @classmethod
    def from_spec(
        cls,
        levels: Sequence[Mapping[str, Sequence[int]] | Level],
        bottom: Sequence[int] = (),
        down_kernel: int = 2,
        up_kernel: int = 2,
    ) -> UNetGeometry:
        """Build from plain lists/dicts (or Hydra ListConfig/DictConfig)."""
        parsed = []
        for level in levels:
            if isinstance(level, Level):
                parsed.append(level)
                continue
            unknown = set(level.keys()) - {"down", "up"}
            if unknown:
                raise ValueError(f"a level takes keys 'down' and 'up', got also {sorted(unknown)}")
            parsed.append(Level(_kernels(level.get("down", ())), _kernels(level.get("up", ()))))
        geometry = cls(tuple(parsed), _kernels(bottom), int(down_kernel), int(up_kernel))
        if geometry.down_kernel < 1:
            raise ValueError(f"down_kernel must be >= 1, got {geometry.down_kernel}")
        if geometry.up_kernel < STRIDE:
            raise ValueError(
                f"up_kernel must be >= {STRIDE} (the stride), got {geometry.up_kernel}: smaller kernels leave "
                "voxels of the upsampled grid that no coarse voxel reaches"
            )
        return geometry

    @property
    def depth(self) -> int:
        return len(self.levels)

    @property
    def total_stride(self) -> int:
        """Shifts of the input by multiples of this shift the output identically."""
        return STRIDE**self.depth

    def trace(self, input_size: int) -> list[tuple[str, int]]:
        """Every stage with the size it produces; raises GeometryError at the first impossible one."""
        return list(_trace(self, int(input_size)))

    def describe(self, input_size: int) -> str:
        """Human-readable size trace, e.g. for docs and error messages."""
        return "\n".join(f"{size:>5}  {stage}" for stage, size in self.trace(input_size))

    def output_size(self, input_size: int) -> int:
        return self.trace(input_size)[-1][1]

    def input_size_for(self, output_size: int) -> int | None:
        """The unique input size that gives ``output_size``, or None if no input does."""
        return _input_size_for(self, int(output_size))

    def required_padding(self, output_size: int) -> int:
        """Padding per side that turns an ``output_size`` target crop into the input this net needs."""
        needed = self.input_size_for(output_size)
        if needed is None:
            raise GeometryError(_unachievable_message(self, output_size))
        if (needed - output_size) % 2:
            raise GeometryError(
                f"for a {output_size}^3 target this U-net needs input {needed}, i.e. {needed - output_size} "
                "extra voxels in total, which cannot be split evenly between the two sides"
            )
        return (needed - output_size) // 2

    def achievable_outputs_near(self, output_size: int, per_side: int = 2) -> list[int]:
        """Up to ``per_side`` achievable output sizes below and above ``output_size``."""
        span = 4 * self.total_stride + 8  # outputs repeat with period total_stride
        below = [n for n in range(output_size - 1, 0, -1) if self.input_size_for(n) is not None][:per_side]
        above = [n for n in range(output_size + 1, output_size + span) if self.input_size_for(n) is not None][
            :per_side
        ]
        return sorted(below + above)

    def check_geometry(self, input_size: int, output_size: int) -> None:
        """Raise GeometryError, saying which input/padding is needed, unless input -> output holds."""
        _check(self, int(input_size), int(output_size), lead=f"input {input_size}^3")

    def check_crop_padding(self, crop_size: int, padding: int) -> None:
        """A target crop of ``crop_size`` whose input is the crop padded by ``padding`` per side."""
        input_size = int(crop_size) + 2 * int(padding)
        lead = f"crop {crop_size} with padding {padding} gives {input_size} input voxels"
        _check(self, input_size, int(crop_size), lead=lead)


def _kernels(values: Sequence[int]) -> tuple[int, ...]:
    kernels = tuple(int(k) for k in values)
    if any(k < 1 for k in kernels):
        raise ValueError(f"kernel sizes must be >= 1, got {list(kernels)}")
    return kernels


def upsampled_size(n: int, up_kernel: int) -> int:
    """Valid voxels of a stride-2 transposed convolution of ``n`` voxels: 2 (n - 1) + ku - 2 (ku - 2)."""
    return STRIDE * n + STRIDE - up_kernel


@functools.lru_cache(maxsize=4096)
def _trace(geometry: UNetGeometry, input_size: int) -> tuple[tuple[str, int], ...]:
    kd, ku = geometry.down_kernel, geometry.up_kernel
    steps: list[tuple[str, int]] = [("input", input_size)]
    n = input_size
    if n < 1:
        raise GeometryError(f"input size must be >= 1, got {n}")

    def convs(kernels: tuple[int, ...], where: str) -> None:
        nonlocal n
        for k in kernels:
            if n < k:
                raise GeometryError(f"{where}: a kernel-{k} convolution receives only {n} voxels")
            n = n - k + 1
            steps.append((f"{where} conv k{k}", n))

    skips = []
    for i, level in enumerate(geometry.levels):
        convs(level.down, f"level {i} down")
        skips.append(n)
        where = f"level {i} -> {i + 1} downsampling (kernel {kd}, stride 2)"
        if n < kd:
            raise GeometryError(f"{where} receives only {n} voxels")
        if (n - kd) % 2:
            raise GeometryError(
                f"{where} receives {n} voxels and {n} - {kd} = {n - kd} is odd, so it would drop a voxel"
            )
        n = (n - kd) // 2 + 1
        steps.append((f"level {i} -> {i + 1} down k{kd} s2", n))
    convs(geometry.bottom, f"bottom (level {geometry.depth})")
    for i in reversed(range(geometry.depth)):
        n = upsampled_size(n, ku)
        if n < 1:
            raise GeometryError(
                f"level {i + 1} -> {i} upsampling (kernel {ku}, stride 2) leaves no valid voxel"
            )
        crop = skips[i] - n
        if crop < 0 or crop % 2:
            raise GeometryError(
                f"level {i + 1} -> {i} upsampling (kernel {ku}, stride 2) gives {n} voxels but the level-{i} "
                f"skip has {skips[i]}; the difference {crop} must be even and >= 0 for a centred crop"
            )
        steps.append(
            (f"level {i + 1} -> {i} up k{ku} s2 (skip {skips[i]} cropped by {crop // 2} per side)", n)
        )
        convs(geometry.levels[i].up, f"level {i} up")
    steps.append(("head conv k1", n))
    return tuple(steps)


@functools.lru_cache(maxsize=4096)
def _input_size_for(geometry: UNetGeometry, output_size: int) -> int | None:
    """Invert the size map stage by stage (it is affine with slope 1), then verify forwards."""
    if output_size < 1:
        return None
    kd, ku = geometry.down_kernel, geometry.up_kernel
    n = output_size
    for level in geometry.levels:  # undo level i's up convs, then the upsampling that fed level i
        n += sum(k - 1 for k in level.up)
        if (n + ku - STRIDE) % STRIDE:
            return None
        n = (n + ku - STRIDE) // STRIDE
    n += sum(k - 1 for k in geometry.bottom)
    for level in reversed(geometry.levels):  # undo downsampling into level i + 1, then level i's convs
        n = STRIDE * (n - 1) + kd
        n += sum(k - 1 for k in level.down)
    try:
        return n if _trace(geometry, n)[-1][1] == output_size else None
    except GeometryError:
        return None


def _maps(geometry: UNetGeometry, input_size: int) -> bool:
    try:
        geometry.output_size(input_size)
    except GeometryError:
        return False
    return True


def _unachievable_message(geometry: UNetGeometry, output_size: int) -> str:
    options = ", ".join(
        f"{out} (input {geometry.input_size_for(out)}, padding "
        f"{_padding_text(geometry.input_size_for(out) - out)})"
        for out in geometry.achievable_outputs_near(output_size)
    )
    return (
        f"no input size gives a {output_size}^3 output from this U-net (its outputs repeat with period "
        f"{geometry.total_stride}, the total stride); nearest achievable outputs: {options or 'none'}"
    )


def _padding_text(total: int) -> str:
    return f"{total // 2} per side" if total % 2 == 0 else f"{total} in total, uneven"


def _check(geometry: UNetGeometry, input_size: int, output_size: int, lead: str) -> None:
    needed = geometry.input_size_for(output_size)
    if needed == input_size:
        return
    try:
        got = f"this U-net maps {input_size} -> {geometry.output_size(input_size)}, not {output_size}"
    except GeometryError as err:
        got = f"this U-net cannot take {input_size} voxels ({err})"
    if needed is None:
        fix = _unachievable_message(geometry, output_size)
    else:
        fix = (
            f"for a {output_size}^3 target it needs padding {_padding_text(needed - output_size)} "
            f"(input {needed})"
        )
    raise GeometryError(f"{lead}, but {got}; {fix}")


def as_geometry(spec: UNetGeometry | Mapping[str, Any] | str | nn.Module) -> UNetGeometry:
    """A UNetGeometry from a geometry, a config mapping (extra keys ignored), a preset name or a UNet3D."""
    if isinstance(spec, UNetGeometry):
        return spec
    if isinstance(spec, str):
        spec = preset_config(spec)
    if isinstance(spec, nn.Module):
        return spec.geometry  # a UNet3D
    keys = ("levels", "bottom", "down_kernel", "up_kernel")
    return UNetGeometry.from_spec(**{k: spec[k] for k in keys if k in spec})


def unet_output_size(input_size: int, geometry: UNetGeometry | Mapping[str, Any] | str) -> int:
    """Output voxels per axis for ``input_size`` voxels per axis; GeometryError if impossible."""
    return as_geometry(geometry).output_size(input_size)


def unet_input_size(output_size: int, geometry: UNetGeometry | Mapping[str, Any] | str) -> int | None:
    """Input voxels per axis that give ``output_size`` (None if none does)."""
    return as_geometry(geometry).input_size_for(output_size)


def check_geometry(
    input_size: int, output_size: int, geometry: UNetGeometry | Mapping[str, Any] | str
) -> None:
    """Raise GeometryError (a ValueError) naming the needed padding unless input -> output holds."""
    as_geometry(geometry).check_geometry(input_size, output_size)


# ----------------------------------------------------------------------------------------------------
# Network
# ----------------------------------------------------------------------------------------------------


def _norm(kind: str, channels: int, groups: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    if kind == "group":
        return nn.GroupNorm(_largest_divisor_at_most(channels, groups), channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be 'batch', 'group' or 'none', got {kind!r}")


def _largest_divisor_at_most(n: int, limit: int) -> int:
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


def _activation(kind: str, negative_slope: float) -> nn.Module:
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

        def block(conv: nn.Module, c_out: int) -> nn.Sequential:
            return nn.Sequential(
                conv, _norm(norm, c_out, norm_groups), _activation(activation, negative_slope)
            )

        bias = norm == "none"  # a following norm layer makes a conv bias redundant

        def conv_stack(c_in: int, c_out: int, kernels: tuple[int, ...]) -> tuple[nn.Module, int]:
            layers = []
            for k in kernels:
                layers.append(block(nn.Conv3d(c_in, c_out, k, bias=bias), c_out))
                c_in = c_out
            return (nn.Sequential(*layers) if layers else nn.Identity()), c_in

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
                    if _maps(self.geometry, m)
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


# ----------------------------------------------------------------------------------------------------
# Presets
# ----------------------------------------------------------------------------------------------------

PRESETS: PresetRegistry[UNet3D] = PresetRegistry("U-net")
register_unet = functools.partial(PRESETS.register, prefix="unet_")
list_unets = PRESETS.names
preset_config = PRESETS.config
create_unet = PRESETS.create  # e.g. create_unet("wu2021", in_channels=2, width=16)


WU2021 = {
    "levels": [{"down": [3, 3], "up": [3, 3, 1]}, {"down": [1, 1], "up": [3, 1]}],
    "bottom": [1, 1, 1],
    "down_kernel": 2,
    "up_kernel": 2,
    "in_channels": 1,
    "out_channels": 3,
    "width": 32,
}


@register_unet(WU2021)
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
    return UNet3D(**{**preset_config("wu2021"), **kwargs})


WU2021_BOTTLENECK = {
    **WU2021,
    "levels": [{"down": [3, 3], "up": [1, 1, 1]}, {"down": [1, 1], "up": [1, 1]}],
    "bottom": [3, 1, 1],
}


@register_unet(WU2021_BOTTLENECK)
def unet_wu2021_bottleneck(**kwargs: Any) -> UNet3D:
    """Alternative Wu 2021 layout: same counts and sizes, spatial kernels in encoder and bottom only.

    32 -[3]-> 30 -[3]-> 28 -[down]-> 14 -[1]-> 14 -[1]-> 14 -[down]-> 7 -[3]-> 5 -[1]-> 5 -[1]-> 5
    -[up]-> 10 (skip 14 cropped to 10) -[1]-> 10 -[1]-> 10 -[up]-> 20 (skip 28 cropped to 20)
    -[1]-> 20 -[1]-> 20 -[1]-> 20 -[head]-> 20
    """
    return UNet3D(**{**preset_config("wu2021_bottleneck"), **kwargs})


WU2023 = {
    "levels": [{"down": [1, 1], "up": [1, 1]}, {"down": [1, 1], "up": [1, 1]}],
    "bottom": [1, 1],
    "down_kernel": 3,
    "up_kernel": 3,
    "in_channels": 4,
    "out_channels": 5,
    "width": 32,
}


@register_unet(WU2023)
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
    return UNet3D(**{**preset_config("wu2023"), **kwargs})
