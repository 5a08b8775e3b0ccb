"""Valid-convolution U-net: size arithmetic, presets, tiling equivariance and the crop/pad errors."""

from __future__ import annotations

import itertools
import random

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from lss_lightning.models import create_model, list_models, model_config
from lss_lightning.models.unet import UNet3D
from lss_lightning.models.unet_geometry import GeometryError, UNetGeometry, as_geometry

PRESET_SIZES = {"wu2021": (32, 20), "wu2021_bottleneck": (32, 20), "wu2023": (51, 45)}


def small(name: str, **overrides) -> UNet3D:
    """A preset at tiny width in float64, eval mode, for exact comparisons."""
    torch.manual_seed(0)
    return create_model(name, width=4, **overrides).double().eval()


@pytest.mark.parametrize("name", sorted(PRESET_SIZES))
def test_preset_sizes(name):
    n_in, n_out = PRESET_SIZES[name]
    assert as_geometry(name).output_size(n_in) == n_out
    assert as_geometry(name).input_size_for(n_out) == n_in
    model = create_model(name)
    assert model.output_size(n_in) == n_out
    assert model.required_padding(n_out) == (n_in - n_out) // 2
    model.check_geometry(n_in, n_out)
    model.check_crop_padding(n_out, (n_in - n_out) // 2)


def test_wu2021_stage_sizes_and_layer_counts():
    sizes = [n for _, n in create_model("wu2021").geometry.trace(32)]
    assert sizes == [32, 30, 28, 14, 14, 14, 7, 7, 7, 7, 14, 12, 12, 24, 22, 20, 20, 20]
    for name in ("wu2021", "wu2021_bottleneck"):
        model = create_model(name)
        convs = [m for m in model.modules() if type(m) is nn.Conv3d]
        transposed = [m for m in model.modules() if isinstance(m, nn.ConvTranspose3d)]
        assert (len(convs), len(transposed)) == (15, 2), name


def test_wu2021_parameter_count_by_hand():
    def conv(c_in, c_out, k):  # no bias: a batch norm follows
        return c_in * c_out * k**3

    def bn(c):
        return 2 * c

    expected = (
        conv(1, 32, 3) + bn(32) + conv(32, 32, 3) + bn(32)  # level 0 down
        + conv(32, 64, 2) + bn(64)  # downsample 0 -> 1
        + 2 * (conv(64, 64, 1) + bn(64))  # level 1 down
        + conv(64, 128, 2) + bn(128)  # downsample 1 -> 2
        + 3 * (conv(128, 128, 1) + bn(128))  # bottom
        + conv(128, 64, 2) + bn(64)  # upsample 2 -> 1
        + conv(64 + 64, 64, 3) + bn(64) + conv(64, 64, 1) + bn(64)  # level 1 up
        + conv(64, 32, 2) + bn(32)  # upsample 1 -> 0
        + conv(32 + 32, 32, 3) + bn(32) + conv(32, 32, 3) + bn(32) + conv(32, 32, 1) + bn(32)  # level 0 up
        + conv(32, 3, 1) + 3  # head with bias
    )  # fmt: skip
    assert sum(p.numel() for p in create_model("wu2021").parameters()) == expected == 561_219
    assert sum(p.numel() for p in create_model("wu2023").parameters()) == 612_453


@pytest.mark.parametrize("name", sorted(PRESET_SIZES))
def test_forward_shape_matches_output_size(name):
    n_in, _ = PRESET_SIZES[name]
    model = small(name)
    shape = (n_in, n_in + 4, n_in + 8)  # anisotropic crops work axis by axis
    x = torch.randn(2, model.in_channels, *shape, dtype=torch.float64)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, model.out_channels, *(as_geometry(name).output_size(n) for n in shape))


def random_geometries(count: int, seed: int = 1):
    rng = random.Random(seed)
    found = 0
    while found < count:
        depth = rng.randint(1, 3)
        spec = {
            "levels": [
                {
                    "down": rng.choices([1, 3], k=rng.randint(0, 2)),
                    "up": rng.choices([1, 3], k=rng.randint(0, 2)),
                }
                for _ in range(depth)
            ],
            "bottom": rng.choices([1, 3], k=rng.randint(0, 2)),
            "down_kernel": rng.choice([2, 3]),
            "up_kernel": rng.choice([2, 3, 4]),
        }
        geometry = UNetGeometry.from_spec(**spec)
        valid = [n for n in range(8, 49) if _maps(geometry, n)]
        if valid:
            found += 1
            yield spec, valid


def _maps(geometry, n):
    try:
        return geometry.output_size(n) >= 1
    except GeometryError:
        return False


def test_size_inverse_on_random_geometries():
    for spec, valid in random_geometries(40):
        geometry = UNetGeometry.from_spec(**spec)
        for n in valid:
            assert geometry.input_size_for(geometry.output_size(n)) == n
        # valid inputs repeat with the total stride, and the map is n -> n - constant
        assert all((b - a) % geometry.total_stride == 0 for a, b in itertools.pairwise(valid))
        assert len({n - geometry.output_size(n) for n in valid}) == 1


def test_forward_shape_on_random_geometries():
    torch.manual_seed(0)
    for spec, valid in random_geometries(6, seed=2):
        model = UNet3D(**spec, in_channels=2, out_channels=3, width=2, norm="none").eval()
        n = valid[0]
        with torch.no_grad():
            y = model(torch.randn(1, 2, n, n, n))
        assert y.shape[-3:] == (as_geometry(spec).output_size(n),) * 3, spec


@pytest.mark.parametrize("name", ["wu2021", "wu2023"])
def test_translation_equivariance_by_total_stride(name):
    """Shifting the input by the total stride shifts the output identically, borders included:
    this is what makes tiled prediction of a whole box consistent."""
    model = small(name)
    s = model.geometry.total_stride
    n_in, n_out = PRESET_SIZES[name]
    x = torch.randn(1, model.in_channels, n_in + s, n_in + s, n_in + s, dtype=torch.float64)
    with torch.no_grad():
        big = model(x)
        first = model(x[..., :n_in, :n_in, :n_in])
        shifted = model(x[..., s:, s:, s:])
    assert big.shape[-1] == n_out + s
    torch.testing.assert_close(first, big[..., :n_out, :n_out, :n_out], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(shifted, big[..., s:, s:, s:], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(shifted[..., :-s, :-s, :-s], first[..., s:, s:, s:], rtol=1e-9, atol=1e-12)


def test_crop_padding_mismatch_says_which_padding_is_needed():
    model = create_model("wu2021")
    with pytest.raises(ValueError, match=r"crop 32 with padding 4 gives 40 input voxels") as err:
        model.check_crop_padding(32, 4)
    message = str(err.value)
    assert "maps 40 -> 28, not 32" in message
    assert "for a 32^3 target it needs padding 6 per side (input 44)" in message

    with pytest.raises(
        GeometryError, match=r"for a 20\^3 target it needs padding 6 per side \(input 32\)"
    ) as err:
        as_geometry("wu2021").check_geometry(33, 20)
    assert "29 - 2 = 27 is odd" in str(err.value)

    with pytest.raises(GeometryError, match=r"no input size gives a 21\^3 output") as err:
        model.check_geometry(32, 21)
    assert "20 (input 32, padding 6 per side), 24 (input 36, padding 6 per side)" in str(err.value)

    with pytest.raises(ValueError, match=r"nearby valid input sizes: \[28, 32, 36, 40\]"):
        model(torch.zeros(1, 1, 33, 32, 32))


def test_hydra_style_config_and_options():
    """Geometry given as OmegaConf containers; explicit channels, GELU, group norm."""
    cfg = OmegaConf.create(model_config("wu2021"))
    model = UNet3D(
        levels=cfg.levels,
        bottom=cfg.bottom,
        down_kernel=cfg.down_kernel,
        up_kernel=cfg.up_kernel,
        in_channels=2,
        out_channels=5,
        channels=[4, 6, 8],
        activation="gelu",
        norm="group",
        norm_groups=4,
    )
    assert model.geometry == create_model("wu2021").geometry
    assert model(torch.randn(1, 2, 32, 32, 32)).shape == (1, 5, 20, 20, 20)
    with pytest.raises(ValueError, match="channels needs 3 entries"):
        UNet3D(levels=cfg.levels, bottom=cfg.bottom, channels=[4, 8])
    with pytest.raises(ValueError, match="up_kernel must be >= 2"):
        UNet3D(levels=cfg.levels, up_kernel=1)
    with pytest.raises(KeyError, match=r"unknown model preset .wu2099.; known: .*wu2021"):
        create_model("wu2099")
    assert {"wu2021", "wu2023"} <= set(list_models(family="unet"))


def test_bf16_autocast_forward_and_backward():
    model = create_model("wu2021", width=4)
    x = torch.randn(2, 1, 32, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x)
    assert y.shape == (2, 3, 20, 20, 20) and y.dtype == torch.bfloat16
    y.float().square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
