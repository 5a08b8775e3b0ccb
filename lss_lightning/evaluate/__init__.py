"""Evaluation on whole test boxes, one evaluator per kind of target behind one interface:
``evaluate_task(model, dm, settings, out_dir) -> (flat metrics, figures)`` in ``evaluate.reconstruction``
(field targets) and ``evaluate.parameters`` (cosmological parameters). Each writes metrics.json and its
plots into ``out_dir`` and prints its tables (``evaluate.report``)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path

EVALUATORS = {
    "fields": "lss_lightning.evaluate.reconstruction",
    "parameters": "lss_lightning.evaluate.parameters",
}


def evaluator(kind: str):
    """The ``evaluate_task`` function for targets of ``kind`` ("fields" or "parameters")."""
    return importlib.import_module(EVALUATORS[kind]).evaluate_task


def tiling(dm, settings: Mapping, out_dir: Path) -> dict:
    """The keyword arguments every evaluator tiles the test boxes with: the data module's crop geometry and
    inputs, the evaluation batch size and the output directory."""
    return {
        "crop": dm.geometry.crop,
        "pad": dm.geometry.pad,
        "out_dir": out_dir,
        "batch_size": int(settings.get("batch_size", 8)),
        "input_names": dm.input_names,
    }


def test_boxes(dm) -> list[str]:
    """The simulations an evaluation uses: the test split, or the validation split when it has no test part."""
    return dm.splits["test"] or dm.splits["val"]
