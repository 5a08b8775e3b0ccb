"""Coverage, rank and TARP tests: right on calibrated posteriors, wrong (detected) on over-confident
ones; the flow posterior is calibrated on a toy problem with a known posterior."""

from __future__ import annotations

import numpy as np
import pytest

from lss_lightning.evaluate.calibration import (
    calibration_report,
    gaussian_coverage,
    gaussian_samples,
    sample_coverage,
)
from lss_lightning.evaluate.parameters import parameter_metrics
from lss_lightning.evaluate.posterior import FlowPosterior

NAMES = ["Omega_m", "sigma_8"]


def calibrated_problem(n: int = 2000, seed: int = 0):
    """Posterior N(mu, sigma^2) per example; the truth is a draw from it (heteroscedastic sigma)."""
    rng = np.random.default_rng(seed)
    mean = rng.uniform([0.1, 0.6], [0.5, 1.0], size=(n, 2))
    std = rng.uniform(0.005, 0.05, size=(n, 2))
    truth = mean + std * rng.standard_normal((n, 2))
    return mean, std, truth


def test_gaussian_coverage_is_right_when_calibrated_and_detected_when_over_confident():
    mean, std, truth = calibrated_problem()
    good = calibration_report(truth, NAMES, mean=mean, std=std)
    for p in NAMES:
        entry = good["parameters"][p]
        assert entry["coverage_68"] == pytest.approx(0.68, abs=0.035)
        assert entry["coverage_95"] == pytest.approx(0.95, abs=0.015)
        assert entry["consistent"] and entry["rank_p_value"] > 1e-3
    assert good["tarp"]["p_value"] > 1e-3 and abs(good["tarp"]["atc"]) < 0.005

    over = calibration_report(truth, NAMES, mean=mean, std=0.5 * std)  # sigmas half the truth
    for p in NAMES:
        entry = over["parameters"][p]
        assert entry["coverage_68"] == pytest.approx(0.38, abs=0.04)  # P(|z| < 0.99 / 2)
        assert entry["pull_68"] < -10 and not entry["consistent"] and entry["rank_p_value"] < 1e-6
    assert (
        over["tarp"]["p_value"] < 1e-6 and over["tarp"]["atc"] < -0.02
    )  # over-confident: below the diagonal
    slightly = calibration_report(truth, NAMES, mean=mean, std=0.8 * std)  # 20% too narrow: still caught
    assert (
        all(not e["consistent"] for e in slightly["parameters"].values())
        and slightly["tarp"]["p_value"] < 1e-3
    )

    under = calibration_report(truth, NAMES, mean=mean, std=2.0 * std)
    assert all(not e["consistent"] for e in under["parameters"].values())
    assert under["tarp"]["atc"] > 0.03
    biased = calibration_report(truth, NAMES, mean=mean + 2 * std, std=std)  # right width, shifted
    assert all(not e["consistent"] for e in biased["parameters"].values())


def test_sample_coverage_agrees_with_the_gaussian_formula():
    mean, std, truth = calibrated_problem(500, seed=1)
    samples = gaussian_samples(mean, std, n_samples=4000, seed=2)
    from_samples = sample_coverage(samples, truth)
    exact = gaussian_coverage(mean, std, truth)
    for level in (0.68, 0.95):
        np.testing.assert_allclose(from_samples[level], exact[level], atol=0.02)
    report = calibration_report(truth, NAMES, samples=samples)
    assert all(e["consistent"] for e in report["parameters"].values())


def test_flow_posterior_is_calibrated_on_a_toy_problem(one_thread):
    """theta ~ U(box); s = theta + N(0, 0.03^2) and a useless summary: away from the box edges the
    posterior is N(s, 0.03^2); the flow must learn it from (s, theta) pairs alone."""
    rng = np.random.default_rng(3)

    def draw(n):
        theta = rng.uniform([0.1, 0.6], [0.5, 1.0], size=(n, 2))
        s = np.concatenate([theta + 0.03 * rng.standard_normal((n, 2)), rng.standard_normal((n, 1))], axis=1)
        return s, theta

    flow = FlowPosterior(2, 3, transforms=2, hidden=(32, 32), seed=0)
    flow.fit(*draw(3000), *draw(500), epochs=60, batch_size=256, lr=3e-3, patience=10)
    s, theta = draw(400)
    inner = np.all((theta > [0.16, 0.66]) & (theta < [0.44, 0.94]), axis=1)  # away from prior edges
    samples = flow.sample(s[inner], n_samples=500)
    assert samples.shape == (500, inner.sum(), 2)
    np.testing.assert_allclose(samples.std(0).mean(0), 0.03, rtol=0.2)
    report = calibration_report(theta[inner], NAMES, samples=samples)
    for entry in report["parameters"].values():
        assert entry["coverage_68"] == pytest.approx(0.68, abs=0.1)
        assert entry["coverage_95"] == pytest.approx(0.95, abs=0.05)


def test_parameter_metrics_give_the_bias_rmse_and_r2_of_known_estimates():
    truth = np.array([[0.2], [0.3], [0.4], [0.5]])
    mean = truth + np.array([[0.02], [0.0], [0.02], [0.0]])  # biased by +0.01, rms 0.02 / sqrt 2
    out = parameter_metrics(truth, mean, None, ["Omega_m"])["Omega_m"]
    assert out["bias"] == pytest.approx(0.01)
    assert out["rmse"] == pytest.approx(0.02 / np.sqrt(2))
    assert out["r2"] == pytest.approx(1 - 0.0002 / np.var(truth))
