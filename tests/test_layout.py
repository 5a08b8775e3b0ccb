"""The house plan (README "Layout", ../ARCHITECTURE.md) held by the code: imports point down the data flow,
and no function is longer than a reader can hold. Every import counts, also those inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lss_lightning"

# layer -> the layers it must never import (a layer is a sub-package, or a top-level module)
FORBIDDEN = {
    "fields": {"store", "data", "mocks", "run", "tasks", "evaluate", "models"},
    "store": {"data", "mocks", "run", "tasks", "evaluate", "models"},
    "mocks": {"data", "run", "tasks", "evaluate", "models"},
    "data": {"mocks", "run", "tasks", "evaluate", "models"},
    "models": {"fields", "store", "data", "mocks", "run", "tasks", "evaluate"},
    "tasks": {"store", "mocks", "run", "evaluate"},
    "evaluate": {"mocks", "run"},
    "cosmology": {"fields", "store", "data", "mocks", "run", "tasks", "evaluate", "models"},
    "galaxies": {"data", "mocks", "run", "tasks", "evaluate", "models"},  # below mocks/ and data/quijote/
    "config": {"cosmology", "fields", "store", "data", "mocks", "run", "tasks", "evaluate", "models"},
}
MAX_FUNCTION_LINES = 60


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, ast.parse(path.read_text(), filename=str(path))


def _layer(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0].removesuffix(".py")


def _imports(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lss_lightning"):
            yield node.lineno, node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("lss_lightning"):
                    yield node.lineno, alias.name, []


def test_imports_point_down_the_data_flow():
    wrong = []
    for path, tree in _modules():
        layer = _layer(path)
        for line, module, names in _imports(tree):
            targets = [module] if module != "lss_lightning" else [f"lss_lightning.{n}" for n in names]
            for target in targets:
                parts = target.split(".")
                if len(parts) < 2:
                    continue
                if parts[1] in FORBIDDEN.get(layer, ()):
                    wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({layer}/) imports {target}")
    assert not wrong, "imports against the flow:\n" + "\n".join(wrong)


def test_the_arrow_walker_sees_a_lazy_import_against_the_flow(tmp_path):
    code = "def prepare():\n    from lss_lightning.mocks.generate import generate_store\n"
    found = list(_imports(ast.parse(code)))
    assert found == [(2, "lss_lightning.mocks.generate", ["generate_store"])]
    assert "mocks" in FORBIDDEN["data"]


def test_no_function_is_longer_than_sixty_lines():
    long = []
    for path, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                lines = node.end_lineno - first + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(
                        f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({lines} lines)"
                    )
    assert not long, "functions over 60 lines:\n" + "\n".join(long)


@pytest.mark.parametrize("folder", ["run", "store", "data", "mocks", "models", "tasks", "evaluate", "fields"])
def test_every_folder_of_the_plan_is_a_package(folder):
    assert (PACKAGE / folder / "__init__.py").exists()


def test_checkpoints_of_the_old_layout_name_classes_that_still_build(caplog):
    """A checkpoint's saved config names the _target_s of the layout it was trained with; each moved
    one is read as its new name (with a warning), and every new name imports."""
    import importlib
    import logging

    from lss_lightning.run.assemble import MOVED_TARGETS, upgrade_targets

    old = {
        "data": {"_target_": "lss_lightning.data.modules.FieldCropDataModule", "crop": 8},
        "model": {"_target_": "lss_lightning.tasks.inference.ParameterInference", "net": {"_target_": "x"}},
        "callbacks": [{"_target_": "lss_lightning.channels_last.ChannelsLast3d"}],
    }
    with caplog.at_level(logging.WARNING):
        new = upgrade_targets(old, "old.ckpt")
    assert new["data"] == {"_target_": "lss_lightning.data.datamodule.FieldCropDataModule", "crop": 8}
    assert new["model"]["_target_"] == "lss_lightning.tasks.parameters.ParameterInference"
    assert new["model"]["net"] == {"_target_": "x"}
    assert new["callbacks"][0]["_target_"] == "lss_lightning.run.callbacks.ChannelsLast3d"
    assert "old.ckpt: _target_ lss_lightning.data.modules.FieldCropDataModule is now" in caplog.text
    for target in set(MOVED_TARGETS.values()):
        module, name = target.rsplit(".", 1)
        assert hasattr(importlib.import_module(module), name), target
