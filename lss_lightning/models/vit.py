"""3D vision transformer for cubes of cells -> a vector (cosmological parameters), timm style.

The cube (B, C, n, n, n) is cut into (n / p)^3 non-overlapping patches of p^3 cells by a Conv3d with
kernel = stride = p, each patch becoming one token of ``embed_dim`` features; patches are ordered
x-major (x, then y, then z, as the cells of a field). A learned position embedding is added (one
vector per token, so the model takes one cube size only, ``img_size``), then ``depth`` timm
``Block``s (pre-norm multi-head self-attention + MLP), a final LayerNorm and a linear head. The
representation fed to the head is the class token (``global_pool="token"``) or the mean over patch
tokens (``"avg"``; no class token is created then). An optional vector of ``num_summaries`` summary
statistics per sample (e.g. a binned P(k)) is concatenated to that representation before the head.

Presets (timm style): ``create_model("vit3d_small", in_channels=2)``, ``vit3d_small(...)``,
``list_models(family="vit")``. Sizes assume 64^3 crops and one input channel unless overridden.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block
from torch import nn

from lss_lightning.models.layers import with_summaries
from lss_lightning.models.registry import model_config, register_model

GLOBAL_POOLS = ("token", "avg")


def check_patch_size(img_size: int, patch_size: int) -> None:
    """Raise ValueError unless ``patch_size`` tiles a cube of side ``img_size``, saying what would."""
    if img_size < 1 or patch_size < 1:
        raise ValueError(f"img_size and patch_size must be >= 1, got {img_size} and {patch_size}")
    if img_size % patch_size == 0:
        return
    below = (img_size // patch_size) * patch_size
    sizes = [s for s in (below, below + patch_size) if s > 0]
    divisors = [p for p in range(1, img_size + 1) if img_size % p == 0]
    raise ValueError(
        f"img_size {img_size} is not divisible by patch_size {patch_size}: use a crop of "
        f"{' or '.join(map(str, sizes))} cells (multiples of {patch_size}), or a patch_size dividing "
        f"{img_size}: {divisors}"
    )


class PatchEmbed3D(nn.Module):
    """(B, C, n, n, n) -> (B, (n/p)^3, embed_dim): one token per p^3 patch, x-major order."""

    def __init__(self, img_size: int, patch_size: int, in_channels: int, embed_dim: int):
        super().__init__()
        check_patch_size(img_size, patch_size)
        self.img_size, self.patch_size = int(img_size), int(patch_size)
        self.grid_size = self.img_size // self.patch_size
        self.num_patches = self.grid_size**3
        self.proj = nn.Conv3d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-3:]) != (self.img_size,) * 3:
            raise ValueError(
                f"this ViT3D was built for {self.img_size}^3 inputs (its position embedding has one vector per "
                f"patch), got {tuple(x.shape[-3:])}; rebuild it with img_size={x.shape[-1]} if the cube is "
                f"{x.shape[-1]}^3"
            )
        return self.proj(x).flatten(2).transpose(1, 2)


class ViT3D(nn.Module):
    """Vision transformer on 3D cubes; see the module docstring.

    Args:
        in_channels: channels of the input cube.
        num_outputs: length of the output vector (e.g. parameters, or 2x for mean and std).
        img_size: cube side in cells; must be a multiple of ``patch_size``.
        patch_size: patch side in cells (tokens: (img_size / patch_size)^3).
        embed_dim, depth, num_heads, mlp_ratio: transformer width, blocks, heads, MLP hidden / width.
        drop_rate: dropout after the position embedding, in the blocks' projections and before the head.
        attn_drop_rate: dropout of the attention weights.
        drop_path_rate: stochastic depth, rising linearly from 0 to this over the blocks (as in timm).
        global_pool: "token" (class token) or "avg" (mean of patch tokens).
        num_summaries: length of the optional summary vector concatenated before the head (0: none).
        qkv_bias: bias in the query/key/value projection (timm's ViTs use True).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_outputs: int = 2,
        img_size: int = 64,
        patch_size: int = 8,
        embed_dim: int = 384,
        depth: int = 6,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "token",
        num_summaries: int = 0,
        qkv_bias: bool = True,
    ):
        super().__init__()
        if global_pool not in GLOBAL_POOLS:
            raise ValueError(f"global_pool must be one of {GLOBAL_POOLS}, got {global_pool!r}")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} must be divisible by num_heads {num_heads}")
        self.in_channels, self.num_outputs = int(in_channels), int(num_outputs)
        self.img_size, self.patch_size = int(img_size), int(patch_size)
        self.embed_dim, self.global_pool = int(embed_dim), global_pool
        self.num_summaries = int(num_summaries)

        self.patch_embed = PatchEmbed3D(self.img_size, self.patch_size, self.in_channels, self.embed_dim)
        self.num_prefix_tokens = 1 if global_pool == "token" else 0
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if self.num_prefix_tokens else None
        num_tokens = self.patch_embed.num_patches + self.num_prefix_tokens
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        drop_path = torch.linspace(0, drop_path_rate, depth).tolist()  # stochastic depth per block
        self.blocks = nn.Sequential(
            *(
                Block(
                    dim=embed_dim,
                    num_heads=num_heads,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    proj_drop=drop_rate,
                    attn_drop=attn_drop_rate,
                    drop_path=drop_path[i],
                    norm_layer=functools.partial(nn.LayerNorm, eps=1e-6),  # timm's ViT norm
                )
                for i in range(depth)
            )
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim + self.num_summaries, self.num_outputs)
        self._init_weights()

    def _init_weights(self) -> None:
        """timm's ViT scheme: truncated normal (std 0.02) for linear layers and embeddings, zero biases."""
        trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @property
    def num_patches(self) -> int:
        return self.patch_embed.num_patches

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, n, n, n) -> normalised tokens (B, num_prefix_tokens + num_patches, embed_dim)."""
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected (B, {self.in_channels}, n, n, n), got {tuple(x.shape)}")
        x = self.patch_embed(x)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(len(x), -1, -1).to(x.dtype), x], dim=1)
        x = self.pos_drop(x + self.pos_embed.to(x.dtype))
        return self.norm(self.blocks(x))

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """The representation the head sees: class token or mean of patch tokens, (B, embed_dim)."""
        if self.global_pool == "token":
            return tokens[:, 0]
        return tokens[:, self.num_prefix_tokens :].mean(dim=1)

    def forward(self, x: torch.Tensor, summaries: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, n, n, n)[, summaries (B, num_summaries)] -> (B, num_outputs)."""
        features = self.head_drop(self.pool(self.forward_features(x)))
        return self.head(with_summaries(features, summaries, self.num_summaries))


def _build(name: str, overrides: dict[str, Any]) -> ViT3D:
    return ViT3D(**{**model_config(name), **overrides})


VIT3D_TINY = {"img_size": 64, "patch_size": 8, "embed_dim": 192, "depth": 4, "num_heads": 3}


@register_model(VIT3D_TINY)
def vit3d_tiny(**kwargs: Any) -> ViT3D:
    """Ours, for CPU runs and smoke tests: 512 tokens of 192 features, 4 blocks (1,977,603 parameters
    with one input channel and three outputs)."""
    return _build("vit3d_tiny", kwargs)


VIT3D_SMALL = {"img_size": 64, "patch_size": 8, "embed_dim": 384, "depth": 6, "num_heads": 6}


@register_model(VIT3D_SMALL)
def vit3d_small(**kwargs: Any) -> ViT3D:
    """Ours: timm's ViT-S width (384, 6 heads) at half its depth, 8^3-cell patches of a 64^3 cube
    (512 tokens); 11,043,075 parameters with one input channel and three outputs."""
    return _build("vit3d_small", kwargs)


VIT3D_HWANG_SABIU = {
    "img_size": 64,
    "patch_size": 8,
    "embed_dim": 512,
    "depth": 7,
    "num_heads": 8,
    "num_outputs": 3,
}


@register_model(VIT3D_HWANG_SABIU)
def vit3d_hwang_sabiu(**kwargs: Any) -> ViT3D:
    """Our guess of the size of Hwang & Sabiu's ViT (talk 2022; JCAP 11 (2023) 075).

    From the talk: a ViT on 64^3 histograms of haloes (RA, DEC, redshift), 22,356,483 trainable
    parameters, three parameters estimated (Omega_m, w_0, n_s), CNN baseline with 9,162,439.
    Ours (the architecture is not in the talk): patches of 8^3 cells (512 tokens), width 512, 8 heads,
    7 blocks, MLP ratio 4, class token, qkv bias. With one input channel and three outputs this has
    22,595,075 parameters, 1.1% more than the talk's count.
    """
    return _build("vit3d_hwang_sabiu", kwargs)
