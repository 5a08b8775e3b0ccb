"""3D EfficientNet (Tan & Le 2019) for cubes of cells -> a vector, on MONAI's EfficientNet, timm style.

MONAI's ``EfficientNet`` with ``spatial_dims=3`` supplies the network: a stride-2 3^3 stem, seven stages
of MBConv blocks (inverted residuals with depthwise 3D convolutions, squeeze-and-excitation with ratio
1/4, swish, drop-connect rising linearly over the blocks) and a 1x1x1 head convolution to 1280 x width
channels, then a global average pool. We replace its final Linear by our own head, so that an optional
vector of summary statistics (``num_summaries``) is concatenated to the pooled features, as for
``CNN3D`` and ``ViT3D``. Convolutions use TensorFlow's "same" zero padding, which MONAI computes once for
``img_size``; inputs of another size still run (the padding is then that of ``img_size``).

Compound scaling (Tan & Le 2019, Sec. 3.3 and their released b0-b3 coefficients, as tabulated by MONAI):
width x w, depth x d and resolution r for b0..b3 = (1.0, 1.0, 224), (1.0, 1.1, 240), (1.1, 1.2, 260),
(1.2, 1.4, 300) with dropout 0.2, 0.2, 0.3, 0.3. For 3D cubes we keep w and d and scale the 64^3 base
crop by r / 224: recommended crops 64, 69, 74, 86 cells (``img_size`` of each preset; any crop works).
The spatial side shrinks by 32 through the network (stem + four stride-2 stages): 64^3 -> 2^3.

Presets: ``create_model("efficientnet3d_b0", in_channels=2, num_outputs=14)``,
``list_models(family="efficientnet")``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from monai.networks.nets.efficientnet import EfficientNet, efficientnet_params
from torch import nn

from lss_lightning.models.layers import with_summaries
from lss_lightning.models.registry import model_config, register_model

# EfficientNet-B0 (Tan & Le 2019, Table 1) in the block-string notation of the reference implementation:
# r repeats, k kernel, s stride, e expansion ratio, i/o input/output channels, se squeeze-excitation ratio.
B0_BLOCKS = (
    "r1_k3_s11_e1_i32_o16_se0.25",
    "r2_k3_s22_e6_i16_o24_se0.25",
    "r2_k5_s22_e6_i24_o40_se0.25",
    "r3_k3_s22_e6_i40_o80_se0.25",
    "r3_k5_s11_e6_i80_o112_se0.25",
    "r4_k5_s22_e6_i112_o192_se0.25",
    "r1_k3_s11_e6_i192_o320_se0.25",
)
BASE_CROP = 64  # cells per side of the 3D b0 (stands for the 224 pixels of the 2D b0)


class EfficientNet3D(nn.Module):
    """MONAI's 3D EfficientNet body + global pool + [summaries] + dropout + Linear; see the module docstring.

    Args:
        in_channels: channels of the input cube.
        num_outputs: length of the output vector.
        width_coefficient, depth_coefficient: compound-scaling multipliers of channels and block repeats.
        img_size: the cube side the "same" padding is computed for.
        dropout: before the final Linear.
        drop_connect_rate: stochastic depth of the MBConv blocks (largest at the last block).
        num_summaries: length of the summary vector concatenated to the pooled features (0: none).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_outputs: int = 2,
        width_coefficient: float = 1.0,
        depth_coefficient: float = 1.0,
        img_size: int = BASE_CROP,
        dropout: float = 0.2,
        drop_connect_rate: float = 0.2,
        num_summaries: int = 0,
    ):
        super().__init__()
        if img_size < 1:
            raise ValueError(f"img_size must be >= 1, got {img_size}")
        self.in_channels, self.num_outputs = int(in_channels), int(num_outputs)
        self.img_size, self.num_summaries = int(img_size), int(num_summaries)
        self.body = EfficientNet(
            list(B0_BLOCKS),
            spatial_dims=3,
            in_channels=self.in_channels,
            num_classes=1,  # its Linear is replaced below
            width_coefficient=width_coefficient,
            depth_coefficient=depth_coefficient,
            dropout_rate=0.0,
            image_size=self.img_size,
            drop_connect_rate=drop_connect_rate,
        )
        self.num_features = self.body._fc.in_features
        self.body._fc = nn.Identity()
        self.head_drop = nn.Dropout(dropout)
        self.head = nn.Linear(self.num_features + self.num_summaries, self.num_outputs)

    def forward(self, x: torch.Tensor, summaries: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, X, Y, Z)[, summaries (B, num_summaries)] -> (B, num_outputs)."""
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected (B, {self.in_channels}, X, Y, Z), got {tuple(x.shape)}")
        features = self.head_drop(self.body(x))
        return self.head(with_summaries(features, summaries, self.num_summaries))


# ----------------------------------------------------------------------------------------------------
# Presets: compound scaling b0..b3
# ----------------------------------------------------------------------------------------------------


def compound_scaling(variant: str) -> dict[str, Any]:
    """Width, depth, recommended crop and dropout of ``efficientnet-<variant>`` (b0..b3) for 3D cubes."""
    width, depth, resolution, dropout, _ = efficientnet_params[f"efficientnet-{variant}"]
    crop = round(BASE_CROP * resolution / efficientnet_params["efficientnet-b0"][2])
    return {
        "width_coefficient": width,
        "depth_coefficient": depth,
        "img_size": crop,
        "dropout": dropout,
        "drop_connect_rate": 0.2,
    }


def _build(name: str, overrides: dict[str, Any]) -> EfficientNet3D:
    return EfficientNet3D(**{**model_config(name), **overrides})


def _register_variant(variant: str, doc: str) -> Callable[..., EfficientNet3D]:
    """Register the preset ``efficientnet3d_<variant>`` (compound scaling of ``variant``) as an entry point."""
    name = f"efficientnet3d_{variant}"

    def preset(**kwargs: Any) -> EfficientNet3D:
        return _build(name, kwargs)

    preset.__name__, preset.__qualname__, preset.__doc__ = name, name, doc
    return register_model(compound_scaling(variant))(preset)


efficientnet3d_b0 = _register_variant(
    "b0", "The B0 baseline in 3D: 64^3 crops; 4,688,380 parameters + 1281 per output."
)
efficientnet3d_b1 = _register_variant("b1", "B1: depth x 1.1, 69^3 crops.")
efficientnet3d_b2 = _register_variant("b2", "B2: width x 1.1, depth x 1.2, 74^3 crops.")
efficientnet3d_b3 = _register_variant("b3", "B3: width x 1.2, depth x 1.4, 86^3 crops.")
