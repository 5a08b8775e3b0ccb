"""Evaluation on whole test boxes, one evaluator per kind of target behind one interface:
``evaluate_task(model, dm, settings, out_dir) -> (flat metrics, figures)`` in ``evaluate.reconstruction``
(field targets) and ``evaluate.parameters`` (cosmological parameters). Each writes metrics.json and its
plots into ``out_dir`` and prints its tables (``evaluate.report``)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass

EVALUATORS = {
    "fields": "lss_lightning.evaluate.reconstruction",
    "parameters": "lss_lightning.evaluate.parameters",
}


def evaluator(kind: str):
    """The ``evaluate_task`` function for targets of ``kind`` ("fields" or "parameters")."""
    return importlib.import_module(EVALUATORS[kind]).evaluate_task


@dataclass(frozen=True)
class Tiles:
    """How an evaluator cuts whole boxes into the network's inputs: the input fields, the target crop and
    its padding (cells), the batch size, and for parameter networks the parameters they estimate."""

    input_names: tuple[str, ...]
    crop: int
    pad: int
    batch_size: int = 8
    parameter_names: tuple[str, ...] = ()

    @classmethod
    def of(cls, dm, settings: Mapping) -> Tiles:
        """The data module's crop geometry and inputs, with the evaluation's batch size."""
        names = tuple(dm.parameter_names) if dm.target_kind == "parameters" else ()
        batch = int(settings.get("batch_size", 8))
        return cls(tuple(dm.input_names), dm.geometry.crop, dm.geometry.pad, batch, names)


def test_boxes(dm) -> list[str]:
    """The simulations an evaluation uses: the test split, or the validation split when it has no test part."""
    return dm.splits["test"] or dm.splits["val"]
