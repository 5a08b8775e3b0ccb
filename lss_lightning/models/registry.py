"""Named presets of a backbone class, in the spirit of timm's model registry.

Written by hand because timm's registry is tied to its own model zoo and pretrained-weight tags. A
preset is a function returning a model, registered with the keyword arguments it passes to the class,
so configs can start from a preset and override any argument: ``create("wu2021", width=16)``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Generic, TypeVar

M = TypeVar("M")


class PresetRegistry(Generic[M]):
    """Presets of one kind of backbone (``kind`` names it in error messages)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._configs: dict[str, dict[str, Any]] = {}
        self._builders: dict[str, Callable[..., M]] = {}

    def register(
        self, config: dict[str, Any], prefix: str = ""
    ) -> Callable[[Callable[..., M]], Callable[..., M]]:
        """Decorator: register a preset function under its name (minus ``prefix``) with its default config."""

        def decorate(fn: Callable[..., M]) -> Callable[..., M]:
            name = fn.__name__.removeprefix(prefix)
            self._configs[name] = config
            self._builders[name] = fn
            return fn

        return decorate

    def names(self) -> list[str]:
        return sorted(self._builders)

    def _check(self, name: str) -> None:
        if name not in self._builders:
            raise KeyError(f"unknown {self.kind} preset {name!r}; known: {self.names()}")

    def config(self, name: str) -> dict[str, Any]:
        """A copy of the keyword arguments the preset passes to its class."""
        self._check(name)
        return copy.deepcopy(self._configs[name])

    def create(self, name: str, **overrides: Any) -> M:
        """Build a preset with some of its arguments overridden."""
        self._check(name)
        return self._builders[name](**overrides)
