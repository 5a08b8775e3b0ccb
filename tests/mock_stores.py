"""Mock configurations the tests build tiny stores from: Eisenstein-Hu power (no CAMB run) on the CPU."""

from __future__ import annotations

from lss_lightning.mocks.config import MockConfig

QUICK = {"power": "eh", "device": "cpu"}


def tiny_mock(store, **settings) -> MockConfig:
    """A MockConfig for ``store`` with Eisenstein-Hu power on the CPU and ``settings`` (grid, n_sims, ...)."""
    return MockConfig(store=str(store), **{**QUICK, **settings})
