"""Attention rollout (Abnar & Zuidema 2020) of a ViT3D: which patches of a cube the prediction draws on.

Written here because timm exposes no attention weights (its blocks call a fused attention kernel) and no
rollout for 3D patch grids. Each block's attention A = softmax(q k^T / sqrt(d)), recomputed from its
query/key projections by a forward hook, is averaged over heads, mixed with the residual path as
0.5 A + 0.5 I and renormalised per row; the rollout is the product over blocks, R = A_L ... A_1. The map
is R's class-token row over the patch tokens (``global_pool="token"``), or the mean of the patch-token rows
(``"avg"``), reshaped to the (g, g, g) patch grid in the cube's x, y, z order and normalised to sum to 1.
"""

from __future__ import annotations

import numpy as np
import torch

from lss_lightning.models.vit import ViT3D


def attention_weights(attn, tokens: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) of a timm ``Attention`` on (B, N, D) tokens -> (B, heads, N, N)."""
    b, n, _ = tokens.shape
    qkv = attn.qkv(tokens).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
    return ((q * attn.scale) @ k.transpose(-2, -1)).softmax(-1)


@torch.no_grad()
def attention_rollout(vit: ViT3D, x: torch.Tensor) -> np.ndarray:
    """x: one normalised cube (1, C, n, n, n) as the ViT takes it -> (g, g, g) rollout map summing to 1."""
    if x.ndim != 5 or len(x) != 1:
        raise ValueError(f"attention_rollout takes one cube shaped (1, C, n, n, n), got {tuple(x.shape)}")
    maps: list[torch.Tensor] = []

    def hook(attn, inputs, _output):
        maps.append(attention_weights(attn, inputs[0]).mean(1)[0].double())

    handles = [block.attn.register_forward_hook(hook) for block in vit.blocks]
    was_training = vit.training
    try:
        vit.eval()
        vit.forward_features(x)
    finally:
        vit.train(was_training)
        for h in handles:
            h.remove()
    n_tokens = maps[0].shape[-1]
    rollout = torch.eye(n_tokens, dtype=torch.float64, device=maps[0].device)
    for a in maps:
        a = 0.5 * a + 0.5 * torch.eye(n_tokens, dtype=a.dtype, device=a.device)
        rollout = (a / a.sum(-1, keepdim=True)) @ rollout
    prefix = vit.num_prefix_tokens
    weights = rollout[0, prefix:] if prefix else rollout[prefix:, prefix:].mean(0)
    g = vit.patch_embed.grid_size
    weights = weights / weights.sum()
    return weights.reshape(g, g, g).cpu().numpy()
