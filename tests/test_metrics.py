"""The crop monitor of r(k) and T(k) used during validation."""

from __future__ import annotations

import pytest
import torch

from lss_lightning.tasks.metrics import CropCorrelation


def test_crop_correlation_of_identical_scaled_and_negated_crops():
    gen = torch.Generator().manual_seed(0)
    truth = torch.randn(6, 3, 20, 20, 20, generator=gen)
    metric = CropCorrelation(crop=20, cell_size=2.0, k_values=(0.1, 0.5, 1.0, 5.0))
    assert metric.k_values == [0.5, 1.0]  # 0.1 < 3 k_F of a 40 Mpc/h crop, 5 > k_Nyq
    metric.update(2 * truth, truth)
    out = metric.compute()
    assert float(out["r_k0.5"]) == pytest.approx(1.0, abs=1e-6) and float(out["T_k1"]) == pytest.approx(
        2.0, rel=1e-6
    )
    metric.reset()
    metric.update(-truth, truth)
    assert float(metric.compute()["r_k1"]) == pytest.approx(-1.0, abs=1e-6)


def test_crop_correlation_of_independent_noise_is_small():
    gen = torch.Generator().manual_seed(1)
    metric = CropCorrelation(crop=16, cell_size=2.0, k_values=(0.8,))
    metric.update(torch.randn(8, 1, 16, 16, 16, generator=gen), torch.randn(8, 1, 16, 16, 16, generator=gen))
    assert abs(float(metric.compute()["r_k0.8"])) < 0.1
