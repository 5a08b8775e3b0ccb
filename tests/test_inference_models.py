"""Field-to-vector backbones: ViT3D and CNN3D shapes, presets, size errors, summaries, bf16."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from lss_lightning.models import create_model, list_models, model_config
from lss_lightning.models.cnn import CNN3D
from lss_lightning.models.vit import ViT3D


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def tiny_vit(**overrides) -> ViT3D:
    kwargs = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=4, num_outputs=3)
    torch.manual_seed(0)
    return ViT3D(**{**kwargs, **overrides})


def tiny_cnn(**overrides) -> CNN3D:
    kwargs = dict(channels=(4, 8), kernels=3, strides=2, paddings=1, pool_size=1, hidden=(16,), num_outputs=3)
    torch.manual_seed(0)
    return CNN3D(**{**kwargs, **overrides})


# -- ViT3D ------------------------------------------------------------------------------------------
def test_vit_presets_are_registered_and_build_at_small_size():
    assert list_models(family="vit") == ["vit3d_hwang_sabiu", "vit3d_small", "vit3d_tiny"]
    for name in list_models(family="vit"):
        assert model_config(name)["img_size"] == 64
    for name in ("vit3d_tiny", "vit3d_small"):  # the 22M-parameter preset is built in its own test
        model = create_model(name, img_size=16, in_channels=2, num_outputs=5).eval()
        assert model.num_patches == 8  # (16 / 8)^3
        assert model(torch.randn(2, 2, 16, 16, 16)).shape == (2, 5)
    with pytest.raises(KeyError, match="vit3d_small"):
        create_model("small")


def test_vit_tiny_preset_at_its_own_size():
    model = create_model("vit3d_tiny", num_outputs=4).eval()
    assert model.num_patches == 512
    with torch.no_grad():
        assert model(torch.randn(1, 1, 64, 64, 64)).shape == (1, 4)


def test_hwang_sabiu_preset_has_about_the_talks_parameter_count():
    model = create_model("vit3d_hwang_sabiu")  # 64^3, 1 channel, 3 outputs (Omega_m, w_0, n_s)
    assert abs(n_params(model) / 22_356_483 - 1) < 0.10
    assert n_params(model) == 22_595_075  # the number its docstring quotes


@pytest.mark.parametrize(
    "overrides",
    [
        dict(global_pool="avg"),
        dict(in_channels=3, patch_size=2),
        dict(img_size=12, patch_size=3, num_heads=2),
        dict(img_size=7, patch_size=7),  # a single patch
        dict(drop_rate=0.1, attn_drop_rate=0.1, drop_path_rate=0.2),
    ],
)
def test_vit_odd_configurations(overrides):
    model = tiny_vit(**overrides).train()
    n, c = model.img_size, model.in_channels
    out = model(torch.randn(3, c, n, n, n))
    assert out.shape == (3, 3)
    out.sum().backward()
    assert model.pos_embed.grad is not None
    assert (model.cls_token is None) == (model.global_pool == "avg")


def test_vit_patch_size_error_names_working_sizes():
    with pytest.raises(ValueError) as err:
        ViT3D(img_size=60, patch_size=8)
    message = str(err.value)
    assert "60" in message and "56 or 64" in message  # crops that work with patch 8
    assert "[1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60]" in message  # patch sizes that work for 60


def test_vit_rejects_other_cube_sizes():
    with pytest.raises(ValueError, match="img_size=24"):
        tiny_vit()(torch.randn(1, 1, 24, 24, 24))
    with pytest.raises(ValueError, match=r"\(B, 1, n, n, n\)"):
        tiny_vit()(torch.randn(1, 2, 16, 16, 16))


# -- CNN3D ------------------------------------------------------------------------------------------
def test_min2024_sizes_are_those_of_the_slide():
    model = create_model("cnn3d_min2024", num_outputs=7).eval()
    assert model.feature_sizes(60) == [30, 15, 6, 2]
    shapes = []
    for conv in (m for m in model.modules() if isinstance(m, nn.Conv3d)):
        conv.register_forward_hook(lambda mod, inp, out: shapes.append(tuple(out.shape[1:])))
    linear_widths = [m.out_features for m in model.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        out = model(torch.randn(2, 1, 60, 60, 60))
    assert shapes == [(32, 30, 30, 30), (64, 15, 15, 15), (64, 6, 6, 6), (128, 2, 2, 2)]
    assert linear_widths == [128, 64, 7]
    assert out.shape == (2, 7)
    assert model.head[0].in_features == 128 * 2**3  # the pool is the identity at 60^3


def test_min2024_kernels_drop_no_cell():
    cfg = model_config("cnn3d_min2024")
    n = 60
    for k, s in zip(cfg["kernels"], cfg["strides"], strict=True):
        assert (n - k) % s == 0
        n = (n - k) // s + 1


def test_cnn_accepts_other_sizes_and_says_the_minimum():
    model = create_model("cnn3d_min2024").eval()
    assert model.min_input_size() == 44
    with torch.no_grad():
        assert model(torch.randn(1, 1, 44, 44, 44)).shape == (1, 7)
        assert model(torch.randn(1, 1, 70, 70, 70)).shape == (1, 7)
    with pytest.raises(ValueError, match="at least 44 cells"):
        model(torch.randn(1, 1, 40, 40, 40))
    generic = create_model("cnn3d", num_outputs=2, img_size=17).eval()  # img_size is ignored by CNNs
    assert generic.min_input_size() == 1
    with torch.no_grad():
        for n in (5, 17, 33):
            assert generic(torch.randn(1, 1, n, n, n)).shape == (1, 2)
    assert list_models(family="cnn") == ["cnn3d", "cnn3d_hwang_sabiu", "cnn3d_min2024"]


def test_cnn_configuration_errors():
    with pytest.raises(ValueError, match="one entry per convolution"):
        CNN3D(channels=(4, 8), kernels=(3, 3, 3))
    with pytest.raises(ValueError, match="norm"):
        CNN3D(norm="group")


# -- both -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [tiny_vit, tiny_cnn], ids=["vit", "cnn"])
def test_summaries_are_concatenated_before_the_head(make):
    model = make(num_summaries=5).eval()
    x, s = torch.randn(2, 1, 16, 16, 16), torch.randn(2, 5)
    with torch.no_grad():
        out = model(x, s)
        assert out.shape == (2, 3)
        assert not torch.allclose(out, model(x, s + 1.0))
    head = model.head if isinstance(model, ViT3D) else model.head[0]
    assert head.in_features == (32 if isinstance(model, ViT3D) else 8) + 5
    with pytest.raises(ValueError, match="no summaries were given"):
        model(x)
    with pytest.raises(ValueError, match=r"shaped \(2, 5\)"):
        model(x, torch.randn(2, 4))
    with pytest.raises(ValueError, match="num_summaries=0"):
        make()(x, s)


@pytest.mark.parametrize("make", [tiny_vit, tiny_cnn], ids=["vit", "cnn"])
def test_bf16_autocast_forward_and_backward_on_cpu(make):
    model = make(num_summaries=2).train()
    x, s = torch.randn(4, 1, 16, 16, 16), torch.randn(4, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, s)
    assert out.dtype == torch.bfloat16 and out.shape == (4, 3)
    out.float().square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


# -- EfficientNet3D, the summary MLP, the Hwang & Sabiu CNN size -------------------------------------
def test_efficientnet_presets_follow_the_compound_scaling_of_tan_and_le():
    from monai.networks.nets.efficientnet import MBConvBlock

    from lss_lightning.models.efficientnet import B0_BLOCKS

    assert list_models(family="efficientnet") == [f"efficientnet3d_b{i}" for i in range(4)]
    expected = {"b0": (1.0, 1.0, 64), "b1": (1.0, 1.1, 69), "b2": (1.1, 1.2, 74), "b3": (1.2, 1.4, 86)}
    repeats = [int(b.split("_")[0][1:]) for b in B0_BLOCKS]  # b0: 1, 2, 2, 3, 3, 4, 1
    for variant, (width, depth, crop) in expected.items():
        cfg = model_config(f"efficientnet3d_{variant}")
        assert (cfg["width_coefficient"], cfg["depth_coefficient"], cfg["img_size"]) == (width, depth, crop)
        model = create_model(f"efficientnet3d_{variant}", num_outputs=2)
        blocks = [m for m in model.modules() if isinstance(m, MBConvBlock)]
        assert len(blocks) == sum(math.ceil(r * depth) for r in repeats)  # depth scaling of every stage
        assert all(b.has_se for b in blocks)  # squeeze-and-excitation everywhere
        assert model.num_features == int(1280 * width + 4) // 8 * 8  # width scaling, rounded to 8
        depthwise = blocks[0]._depthwise_conv
        assert isinstance(depthwise, nn.Conv3d) and depthwise.groups == depthwise.in_channels  # 3D MBConv
    assert n_params(create_model("efficientnet3d_b0", num_outputs=1)) == 4_689_661


def test_efficientnet_shapes_with_summaries_and_other_crops():

    torch.manual_seed(0)
    model = create_model(
        "efficientnet3d_b0", in_channels=2, num_outputs=6, img_size=32, num_summaries=5
    ).eval()
    x, s = torch.randn(2, 2, 32, 32, 32), torch.randn(2, 5)
    with torch.no_grad():
        assert model(x, s).shape == (2, 6)
        assert model(torch.randn(1, 2, 40, 40, 40), torch.randn(1, 5)).shape == (1, 6)
        assert not torch.allclose(model(x, s), model(x, s + 1))
    with pytest.raises(ValueError, match="no summaries were given"):
        model(x)
    with pytest.raises(ValueError, match=r"\(B, 2, X, Y, Z\)"):
        model(torch.randn(1, 1, 32, 32, 32), s[:1])


def test_summary_mlp_sees_only_summaries():
    from lss_lightning.models.summary_mlp import SummaryMLP

    assert list_models(family="summary_mlp") == ["summary_mlp"]
    model = create_model("summary_mlp", num_summaries=8, num_outputs=4, in_channels=3, img_size=16)
    assert model.takes_field is False and model(torch.randn(5, 8)).shape == (5, 4)
    with pytest.raises(ValueError, match="needs summaries"):
        SummaryMLP(num_summaries=0)
    with pytest.raises(ValueError, match=r"\(B, 8\)"):
        model(torch.randn(5, 7))


def test_hwang_sabiu_cnn_preset_has_the_talks_parameter_count():
    model = create_model("cnn3d_hwang_sabiu")  # 64^3, one channel, three outputs
    assert model.feature_sizes(64) == [32, 16, 8, 4, 2]
    assert n_params(model) == 9_161_507 and abs(n_params(model) / 9_162_439 - 1) < 0.001


# -- attention rollout --------------------------------------------------------------------------------
def test_recomputed_attention_reproduces_timms_attention_output():
    from lss_lightning.evaluate.attention import attention_weights

    vit = tiny_vit().eval()
    attn = vit.blocks[0].attn
    tokens = torch.randn(2, 9, 32)
    weights = attention_weights(attn, tokens)  # (B, heads, N, N)
    v = attn.qkv(tokens).reshape(2, 9, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)[2]
    rebuilt = attn.proj((weights @ v).transpose(1, 2).reshape(2, 9, 32))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt, attn(tokens), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, attn.num_heads, 9))


def test_attention_rollout_is_uniform_for_uniform_attention_and_sums_to_one():
    from lss_lightning.evaluate.attention import attention_rollout

    vit = tiny_vit()
    x = torch.randn(1, 1, 16, 16, 16)
    rollout = attention_rollout(vit, x)
    assert rollout.shape == (4, 4, 4) and rollout.sum() == pytest.approx(1.0) and (rollout > 0).all()
    for block in vit.blocks:  # q = k = 0: every token attends equally to every token
        nn.init.zeros_(block.attn.qkv.weight)
        nn.init.zeros_(block.attn.qkv.bias)
    np.testing.assert_allclose(attention_rollout(vit, x), 1 / 64, rtol=1e-9)
    assert vit.training  # restored
