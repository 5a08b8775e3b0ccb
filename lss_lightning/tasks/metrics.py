"""Cheap spectral metrics on batches of crops, reduced correctly across DDP ranks (torchmetrics).

``CropCorrelation`` accumulates, over a validation epoch, the shell sums of P_pred, P_true and
Re P_cross of (B, C, c, c, c) crops, each tapered by a 3D Hann window and treated as a box of side
c * dx. Crops are not periodic: without the taper, the edge discontinuities would leak the dominant
large-scale velocity power into every shell and make r(k) look far better than it is. Even tapered, the
numbers are a training monitor, not the published r(k): ``eval.py`` measures that on whole stitched boxes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torchmetrics import Metric

from lss_lightning.fields.mesh import rfft_mode_weights, wavenumber


class CropCorrelation(Metric):
    """r(k) = P_x / sqrt(P_pred P_true) and T(k) = sqrt(P_pred / P_true) at chosen k from crops.

    crop: crop side in cells; cell_size: Mpc/h; k_values: h/Mpc. Each requested k maps to the crop's shell
    of width k_F = 2 pi / (crop dx) around it. k below 3 k_F is dropped (the taper's kernel, ~2 k_F wide,
    mixes such shells with the large-scale power: for 40 Mpc/h crops r(0.3) read 0.70 where the whole-box
    value was 0.22), and so is k above k_Nyq.
    """

    full_state_update = False

    def __init__(self, crop: int, cell_size: float, k_values: Sequence[float] = (0.1, 0.3, 0.5, 1.0)):
        super().__init__()
        box = crop * cell_size
        kf, knyq = 2 * math.pi / box, math.pi / cell_size
        self.k_values = [float(k) for k in k_values if 3 * kf <= k <= knyq]
        k = wavenumber(crop, box, dtype=torch.float64)
        shells = (
            torch.stack([(k - kv).abs() < 0.5 * kf for kv in self.k_values])
            if self.k_values
            else torch.zeros(0, *k.shape, dtype=torch.bool)
        )
        self.register_buffer(
            "shells", (shells * rfft_mode_weights(crop, dtype=torch.float64)).float(), persistent=False
        )
        hann = torch.sin(torch.pi * (torch.arange(crop) + 0.5) / crop).square()
        taper = hann.view(-1, 1, 1) * hann.view(1, -1, 1) * hann.view(1, 1, -1)
        self.register_buffer("taper", taper, persistent=False)
        for name in ("pred", "true", "cross"):
            self.add_state(
                name, default=torch.zeros(len(self.k_values), dtype=torch.float64), dist_reduce_fx="sum"
            )

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        if not self.k_values:
            return
        taper = self.taper.to(pred.device)
        p_k = torch.fft.rfftn(pred.float() * taper, dim=(-3, -2, -1))
        t_k = torch.fft.rfftn(target.float() * taper, dim=(-3, -2, -1))
        per_mode = {
            "pred": p_k.abs().square().sum((0, 1)),
            "true": t_k.abs().square().sum((0, 1)),
            "cross": (p_k.real * t_k.real + p_k.imag * t_k.imag).sum((0, 1)),
        }
        shells = self.shells.to(pred.device)
        for name, power in per_mode.items():
            total = getattr(self, name)
            total += (shells * power.unsqueeze(0)).flatten(1).sum(1).double()

    def compute(self) -> dict[str, torch.Tensor]:
        out = {}
        for i, k in enumerate(self.k_values):
            p, t, x = self.pred[i], self.true[i], self.cross[i]
            out[f"r_k{k:g}"] = x / torch.sqrt(p * t).clamp(min=1e-30)
            out[f"T_k{k:g}"] = torch.sqrt(p / t.clamp(min=1e-30))
        return out
