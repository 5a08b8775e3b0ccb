"""One registry of every backbone preset, in the spirit of timm's ``_registry.py``: ``register_model``,
``create_model``, ``list_models``, ``model_config``.

Written by hand because timm's registry is tied to its own model zoo and pretrained-weight tags. A preset is
a function in a model file that returns a model, registered with the keyword arguments it passes to its
class, so a config names a preset and overrides any argument: ``create_model("wu2021", width=16)``. Every
config's ``net`` block targets ``lss_lightning.models.create_model`` with ``name``. Model files register
their presets when imported; they are imported when a preset is first looked up (``FAMILIES`` in order), so
building a U-net does not import timm's ViT blocks or MONAI.
"""

from __future__ import annotations

import copy
import fnmatch
import importlib
from collections.abc import Callable
from typing import Any

_builders: dict[str, Callable[..., Any]] = {}
_configs: dict[str, dict[str, Any]] = {}
_families: dict[str, str] = {}  # preset -> the model file (family) that registered it
FAMILIES = ("unet", "cnn", "vit", "efficientnet", "summary_mlp")  # the model files of lss_lightning.models


def _import_families(until: str | None = None) -> None:
    """Import the model files (registering their presets), all of them or until ``until`` is registered."""
    for family in FAMILIES:
        if until is not None and until in _builders:
            return
        importlib.import_module(f"lss_lightning.models.{family}")


def register_model(config: dict[str, Any], prefix: str = "") -> Callable[[Callable], Callable]:
    """Decorator: register a preset function under its name (minus ``prefix``) with its default config."""

    def decorate(fn: Callable) -> Callable:
        name = fn.__name__.removeprefix(prefix)
        if name in _builders and _builders[name] is not fn:
            raise ValueError(
                f"model preset {name!r} is registered twice ({_families[name]}, {fn.__module__})"
            )
        _builders[name], _configs[name] = fn, config
        _families[name] = fn.__module__.rsplit(".", 1)[-1]
        return fn

    return decorate


def list_models(pattern: str = "*", family: str | None = None) -> list[str]:
    """Sorted preset names matching a shell pattern, optionally of one family (``unet``, ``cnn``, ``vit``,
    ``efficientnet``, ``summary_mlp``: the model file's name)."""
    _import_families()
    return sorted(n for n in _builders if fnmatch.fnmatch(n, pattern) and family in (None, _families[n]))


def _check(name: str) -> None:
    _import_families(until=name)
    if name not in _builders:
        raise KeyError(f"unknown model preset {name!r}; known: {list_models()}")


def model_config(name: str) -> dict[str, Any]:
    """A copy of the keyword arguments the preset passes to its class."""
    _check(name)
    return copy.deepcopy(_configs[name])


def create_model(name: str, **overrides: Any):
    """Build a preset with some of its arguments overridden."""
    _check(name)
    return _builders[name](**overrides)
