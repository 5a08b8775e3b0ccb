"""P(k) of a 256^3 grid: lss_lightning (torch FFT + cached shells) vs plain numpy rfftn + bincount.

Baseline: numpy.fft.rfftn of the float32 field and np.bincount over |k| shells with rfft mode weights.
"cold" includes building the shell index (first call for a grid size); "warm" reuses it, as happens
when a run measures many fields of one size. Peer: Pylians' Pk_library when importable.
Run: .venv/bin/python bench/bench_spectra.py
"""

from __future__ import annotations

import numpy as np
from _harness import measure, report

N, BOX = 256, 1000.0


def field() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((N, N, N)).astype(np.float32)


def numpy_pk(delta: np.ndarray):
    kf = 2 * np.pi / BOX
    dk = np.fft.rfftn(delta)
    m = np.fft.fftfreq(N, 1.0 / N)
    mz = np.fft.rfftfreq(N, 1.0 / N)
    kk = np.sqrt(m[:, None, None] ** 2 + m[None, :, None] ** 2 + mz[None, None, :] ** 2)
    weight = np.full(mz.shape, 2.0)
    weight[0] = weight[-1] = 1.0
    weight = np.broadcast_to(weight, kk.shape)
    shell = np.floor(kk + 0.5).astype(np.int64).ravel()  # bin j centred on j k_F
    power = np.bincount(shell, weights=(np.abs(dk) ** 2 * weight).ravel())
    modes = np.bincount(shell, weights=weight.ravel())
    kmean = np.bincount(shell, weights=(kk * weight).ravel()) * kf
    good = modes > 0
    return kmean[good] / modes[good], power[good] / modes[good] * BOX**3 / N**6


def setup_numpy():
    return field()


def run_numpy(delta):
    numpy_pk(delta)


def setup_torch():
    import torch

    return torch.from_numpy(field())


def run_torch_cold(delta):
    from lss_lightning.fields import spectra

    spectra._shells.cache_clear()
    spectra.power_spectrum(delta, BOX)


def run_torch_warm(delta):
    from lss_lightning.fields.spectra import power_spectrum

    power_spectrum(delta, BOX)


def setup_pylians():
    import Pk_library  # noqa: F401

    return field()


def run_pylians(delta):
    import Pk_library

    Pk_library.Pk(delta, BOX, axis=0, MAS="None", threads=2, verbose=False)


def check_agreement() -> float:
    import torch

    from lss_lightning.fields.spectra import power_spectrum

    delta = field()
    ours = power_spectrum(torch.from_numpy(delta), BOX)
    k_ref, p_ref = numpy_pk(delta)
    ref = np.interp(ours.k, k_ref, p_ref)
    # same shells (centred on j k_F) up to k_Nyq: compare bin by bin
    return float(np.nanmax(np.abs(ours.power / p_ref[1 : len(ours.power) + 1] - 1))) if len(ref) else np.nan


if __name__ == "__main__":
    import torch

    results = [
        measure("numpy rfftn + bincount", setup_numpy, run_numpy, repeats=3),
        measure("lss_lightning power_spectrum cold", setup_torch, run_torch_cold, repeats=3),
        measure("lss_lightning power_spectrum warm", setup_torch, run_torch_warm, repeats=3),
    ]
    try:
        results.append(measure("Pylians Pk_library.Pk", setup_pylians, run_pylians, repeats=3))
    except Exception:
        print("(Pylians not importable: peer comparison skipped)")
    report(
        f"P(k) of a {N}^3 grid, torch threads={torch.get_num_threads()}", results, "numpy rfftn + bincount"
    )
    print(f"  max relative difference lss vs numpy per shell: {check_agreement():.1e}")
