"""Are the predicted uncertainties right? Empirical coverage, rank (PIT) and TARP tests of posteriors.

Inputs are per-example truths theta (n, P) and either Gaussian posteriors (mean, std, each (n, P), as a
moment network gives) or posterior samples (S, n, P) (a normalizing flow). Per parameter:

- coverage at level c: the fraction of examples whose truth lies in the central c interval
  (mean +- z_c std for Gaussians, z_c = Phi^-1((1 + c) / 2); the (1 - c)/2 and (1 + c)/2 sample
  quantiles otherwise). Calibrated posteriors give c, within the binomial error sqrt(c (1 - c) / n);
  ``pull`` = (coverage - c) / that error;
- rank test: the probability integral transform u = P(theta' < theta | x) (Phi((theta - mu) / sigma), or
  the fraction of samples below theta) is uniform for calibrated posteriors (Talts et al. 2018's
  simulation-based calibration); we give the Kolmogorov-Smirnov distance and p-value against U(0, 1).

Jointly over parameters, TARP (Lemos, Coogan et al. 2023; the ``tarp`` package): the expected coverage of
random-reference balls ECP(alpha) equals alpha iff the posteriors are right. We give the curve, the
area between it and the diagonal (ATC > 0: under-confident, < 0: over-confident) and the KS distance
max |ECP - alpha| with its p-value for n examples (the curve is the empirical CDF of the examples'
credibility levels).

Examples are treated as independent. Sub-volumes of one box share its cosmology and large-scale modes,
so these errors and p-values are optimistic when the examples are crops: read pulls of a few as
consistent.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

LEVELS = (0.68, 0.95)


def _check(truth: np.ndarray, *arrays: np.ndarray) -> np.ndarray:
    truth = np.asarray(truth, dtype=np.float64)
    if truth.ndim != 2:
        raise ValueError(f"truths must be shaped (n, P), got {truth.shape}")
    for a in arrays:
        if a.shape[-2:] != truth.shape:
            raise ValueError(f"posteriors shaped {a.shape} do not match truths {truth.shape}")
    return truth


def gaussian_coverage(mean, std, truth, levels: Sequence[float] = LEVELS) -> dict[float, np.ndarray]:
    """level -> (P,) fraction of truths within mean +- z std."""
    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    truth = _check(truth, mean, std)
    pull = np.abs(truth - mean) / std
    return {c: (pull <= stats.norm.ppf(0.5 + c / 2)).mean(0) for c in levels}


def sample_coverage(samples, truth, levels: Sequence[float] = LEVELS) -> dict[float, np.ndarray]:
    """level -> (P,) fraction of truths within the central sample interval; samples (S, n, P)."""
    samples = np.asarray(samples, np.float64)
    truth = _check(truth, samples)
    out = {}
    for c in levels:
        lo, hi = np.quantile(samples, [0.5 - c / 2, 0.5 + c / 2], axis=0)
        out[c] = ((truth >= lo) & (truth <= hi)).mean(0)
    return out


def gaussian_pit(mean, std, truth) -> np.ndarray:
    """(n, P) probability integral transform Phi((theta - mu) / sigma)."""
    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    return stats.norm.cdf((_check(truth, mean, std) - mean) / std)


def sample_pit(samples, truth) -> np.ndarray:
    """(n, P) fraction of posterior samples below the truth (the normalised rank)."""
    samples = np.asarray(samples, np.float64)
    return (samples < _check(truth, samples)[None]).mean(0)


def rank_test(pit: np.ndarray) -> dict[str, np.ndarray]:
    """Per parameter KS distance and p-value of the PIT values against U(0, 1)."""
    results = [stats.kstest(pit[:, j], "uniform") for j in range(pit.shape[1])]
    return {"ks": np.array([r.statistic for r in results]), "p_value": np.array([r.pvalue for r in results])}


def tarp_test(samples, truth, n_bins: int | None = None, seed: int = 0) -> dict:
    """TARP expected coverage of (S, n, P) posterior samples, with ATC and a KS test (module docstring)."""
    from tarp import get_tarp_coverage

    samples = np.asarray(samples, np.float64)
    truth = _check(truth, samples)
    n = truth.shape[0]
    n_bins = n_bins or int(np.clip(n // 5, 5, 50))
    state = np.random.get_state()  # noqa: NPY002 - tarp seeds numpy's global generator: leave it as it was
    try:
        ecp, alpha = get_tarp_coverage(
            samples, truth.copy(), references="random", norm=True, num_alpha_bins=n_bins, seed=seed
        )
    finally:
        np.random.set_state(state)  # noqa: NPY002
    distance = float(np.max(np.abs(ecp - alpha)))
    return {
        "alpha": alpha.tolist(),
        "ecp": ecp.tolist(),
        "atc": float(np.sum(ecp[1:] - alpha[1:]) * (alpha[1] - alpha[0])),
        "ks": distance,
        "p_value": float(stats.kstwo.sf(distance, n)),
    }


def gaussian_samples(mean, std, n_samples: int = 1000, seed: int = 0) -> np.ndarray:
    """(S, n, P) draws from independent Gaussians per parameter (a moment network's posterior)."""
    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    rng = np.random.default_rng(seed)
    return mean[None] + std[None] * rng.standard_normal((n_samples, *mean.shape))


def calibration_report(
    truth,
    names: Sequence[str],
    *,
    mean=None,
    std=None,
    samples=None,
    levels: Sequence[float] = LEVELS,
    seed: int = 0,
) -> dict:
    """Coverage, pulls and rank test per parameter, TARP jointly, for Gaussian posteriors (mean, std) or
    samples; ``consistent`` per parameter: |pull| < 3 at every level and rank-test p > 0.001."""
    truth = np.asarray(truth, np.float64)
    if samples is None:
        if mean is None or std is None:
            raise ValueError("give mean and std (Gaussian posteriors) or samples")
        coverage, pit = gaussian_coverage(mean, std, truth, levels), gaussian_pit(mean, std, truth)
        samples = gaussian_samples(mean, std, seed=seed)
    else:
        coverage, pit = sample_coverage(samples, truth, levels), sample_pit(samples, truth)
    ranks = rank_test(pit)
    n = len(truth)
    per_parameter = {}
    for j, name in enumerate(names):
        entry = {}
        for c in levels:
            key = f"{round(100 * c)}"
            entry[f"coverage_{key}"] = float(coverage[c][j])
            entry[f"pull_{key}"] = float((coverage[c][j] - c) / np.sqrt(c * (1 - c) / n))
        entry["rank_ks"] = float(ranks["ks"][j])
        entry["rank_p_value"] = float(ranks["p_value"][j])
        entry["consistent"] = bool(
            all(abs(entry[f"pull_{round(100 * c)}"]) < 3 for c in levels) and entry["rank_p_value"] > 1e-3
        )
        per_parameter[name] = entry
    return {"examples": n, "parameters": per_parameter, "tarp": tarp_test(samples, truth, seed=seed)}
