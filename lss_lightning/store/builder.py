"""The skeleton every store is built on: a plan (where, what source, the box, the field specs, the simulations
of the design, the generator's settings, the halo finder) and the resumable fill of one shard of it. The mocks,
the Quijote converter and the stores of predictions are three producers behind this one path."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lss_lightning.store.reader import FieldStore
from lss_lightning.store.schema import FieldSpec, build_manifest
from lss_lightning.store.writer import Producer, fill_store


@dataclass(frozen=True)
class StorePlan:
    """A store before any simulation is made: its directory, source (e.g. "mock-pm", "quijote/LH"), box side
    (Mpc/h), grid cells per side, redshift, line-of-sight axis, fields, the design's simulation entries, the
    generator settings recorded in the manifest, the halo finder's settings (None: no catalogues) and the
    galaxy model's (None: no galaxy catalogues)."""

    root: Path
    source: str
    box_size: float
    grid: int
    redshift: float
    los_axis: int
    fields: Mapping[str, FieldSpec]
    simulations: list[dict]
    generator: Mapping = field(default_factory=dict)
    halos: Mapping | None = None
    chunk: int = 32  # HDF5 chunk side, cells
    compression: str | None = None  # None, "gzip", "lzf" or "blosc"
    galaxies: Mapping | None = None  # the manifest's "galaxies" entry (e.g. {"model": "zheng07", "hod": ...})

    def manifest(self) -> dict:
        return build_manifest(
            **{k: v for k, v in vars(self).items() if k not in ("root", "chunk", "compression")}
        )


def build_store(
    plan: StorePlan,
    produce: Producer,
    *,
    only: Iterable[str] | None = None,
    shard: tuple[int, int] = (0, 1),
    description: str = "simulations",
    **fill: object,
) -> FieldStore:
    """Write the plan's manifest and produce the simulations of ``only`` (this shard, ``shard`` = (k, K) for
    the progress text) that are not complete yet; ``fill``: progress, reconcile_keys (``store.writer.fill_store``)."""
    k, n = shard
    text = description + (f" shard {k}/{n}" if n > 1 else "")
    layout = {"chunk": plan.chunk, "compression": plan.compression}
    return fill_store(plan.root, plan.manifest(), produce, only=only, description=text, **layout, **fill)
