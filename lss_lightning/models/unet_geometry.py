"""The geometry of a valid-convolution 3D U-net: pure integer arithmetic, no torch.

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

One API: ``UNetGeometry`` (``as_geometry`` makes one from a preset name, a config mapping or a U-net).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lss_lightning.models.registry import model_config

STRIDE = 2  # every downsampling halves the grid, every upsampling doubles it


class GeometryError(ValueError):
    """A crop, padding or input size that this U-net geometry cannot map as asked."""


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


def maps_input(geometry: UNetGeometry, input_size: int) -> bool:
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


def as_geometry(spec: UNetGeometry | Mapping[str, Any] | str | Any) -> UNetGeometry:
    """A UNetGeometry from a geometry, a config mapping (extra keys ignored), a preset name or a UNet3D."""
    if isinstance(spec, UNetGeometry):
        return spec
    if isinstance(spec, str):
        spec = model_config(spec)
    if hasattr(spec, "geometry"):
        return spec.geometry  # a UNet3D
    keys = ("levels", "bottom", "down_kernel", "up_kernel")
    return UNetGeometry.from_spec(**{k: spec[k] for k in keys if k in spec})
