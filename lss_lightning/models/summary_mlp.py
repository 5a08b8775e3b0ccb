"""A small MLP on summary statistics only (the P(k) and xi(r) baselines of Pan et al. 2020 and Min et al.).

The task computes the summaries of each crop (``tasks.summaries``) and calls ``net(summaries)``: the
field itself never reaches this network (``takes_field = False``), so a baseline and a field network
trained on the same crops, splits, loss and optimiser differ only in what the head sees.
Layers: (Linear, GELU, Dropout) per hidden width, then a Linear to ``num_outputs``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from lss_lightning.models.registry import model_config, register_model


class SummaryMLP(nn.Module):
    """(B, num_summaries) -> (B, num_outputs). ``in_channels`` and ``img_size`` are accepted and ignored,
    so the task builds it like any backbone."""

    takes_field = False

    def __init__(
        self,
        num_summaries: int = 0,
        num_outputs: int = 2,
        hidden: Sequence[int] = (64, 64),
        dropout: float = 0.0,
        in_channels: int | None = None,
        img_size: int | None = None,
    ):
        super().__init__()
        if num_summaries < 1:
            raise ValueError(
                "a summary MLP needs summaries: set model.summaries, e.g. [power_spectrum] or [correlation_function]"
            )
        self.num_summaries, self.num_outputs = int(num_summaries), int(num_outputs)
        layers: list[nn.Module] = []
        width = self.num_summaries
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.GELU(), nn.Dropout(dropout)]
            width = int(h)
        layers.append(nn.Linear(width, self.num_outputs))
        self.mlp = nn.Sequential(*layers)

    def forward(self, summaries: torch.Tensor) -> torch.Tensor:
        if summaries.ndim != 2 or summaries.shape[1] != self.num_summaries:
            raise ValueError(
                f"expected summaries shaped (B, {self.num_summaries}), got {tuple(summaries.shape)}"
            )
        return self.mlp(summaries)


SUMMARY_MLP = {"hidden": [64, 64], "dropout": 0.0}


@register_model(SUMMARY_MLP)
def summary_mlp(**kwargs: Any) -> SummaryMLP:
    """Ours: two hidden layers of 64 (a few thousand parameters, as small as the summary vectors)."""
    return SummaryMLP(**{**model_config("summary_mlp"), **kwargs})
