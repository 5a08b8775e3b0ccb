"""Train / validation / test splits by simulation (or by box, for light cones cut from one run), made once
and saved beside the store's manifest (``splits.json``) so every run on a store sees the same split."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from lss_lightning.store.reader import FieldStore
from lss_lightning.store.schema import SPLITS, StoreError
from lss_lightning.store.writer import write_json_atomic


def split_simulations(
    ids: Sequence[str],
    fractions: Mapping[str, float],
    seed: int,
    groups: Sequence | None = None,
) -> dict[str, list[str]]:
    """Shuffle simulation ids with ``seed`` and cut them into train/val/test by ``fractions``.

    Every part with a positive fraction gets at least one simulation. With ``groups`` (one key per id,
    e.g. the ``box`` of light cones cut from one particle-mesh run) the groups, in order of first
    appearance, are shuffled and cut instead, and every id goes where its group went: correlated entries
    never straddle train and test. Without groups the split is exactly the ungrouped one.
    """
    if groups is not None:
        if len(groups) != len(ids):
            raise ValueError(f"{len(groups)} group keys for {len(ids)} simulations")
        keys = list(dict.fromkeys(groups))
        try:
            by_group = split_simulations(list(range(len(keys))), fractions, seed)
        except ValueError as err:
            raise ValueError(f"{err} (counting groups: {len(keys)} boxes)") from None
        part_of = {keys[g]: part for part, members in by_group.items() for g in members}
        return {p: [i for i, g in zip(ids, groups, strict=True) if part_of[g] == p] for p in by_group}
    parts = ("train", "val", "test")
    frac = np.array([float(fractions.get(p, 0.0)) for p in parts])
    if (frac < 0).any() or frac.sum() <= 0:
        raise ValueError(f"split fractions must be non-negative and not all zero, got {dict(fractions)}")
    wanted = int((frac > 0).sum())
    if len(ids) < wanted:
        raise ValueError(
            f"{len(ids)} simulations cannot fill {wanted} non-empty splits; generate more simulations"
        )
    order = np.random.default_rng(seed).permutation(len(ids))
    counts = np.floor(frac / frac.sum() * len(ids)).astype(int)
    counts = np.where((frac > 0) & (counts == 0), 1, counts)
    while counts.sum() > len(ids):
        counts[int(np.argmax(counts))] -= 1
    counts[0] += len(ids) - counts.sum()
    bounds = np.cumsum(np.r_[0, counts])
    return {p: [ids[i] for i in sorted(order[bounds[j] : bounds[j + 1]])] for j, p in enumerate(parts)}


def load_or_make_splits(store: FieldStore, fractions: Mapping[str, float], seed: int) -> dict[str, list[str]]:
    """The saved split for (fractions, seed) if the store has one, else a new one saved beside the manifest.

    Simulations whose manifest entries carry a ``box`` (several light cones of one particle-mesh run) are
    split by box, so all cones of a box land in one part; other stores split by simulation.
    """
    key = "train{train}-val{val}-test{test}-seed{seed}".format(
        seed=seed, **{p: float(fractions.get(p, 0.0)) for p in ("train", "val", "test")}
    )
    boxes = [store.simulation(s).get("box") for s in store.simulation_ids]
    groups = None
    if any(b is not None for b in boxes):
        if any(b is None for b in boxes):
            raise StoreError(f"{store.root}: some manifest entries name their box and others do not")
        groups, key = boxes, key + "-by-box"
    saved = store.load_splits() or {}
    if key in saved and sorted(s for part in saved[key].values() for s in part) == sorted(
        store.simulation_ids
    ):
        return saved[key]
    splits = split_simulations(store.simulation_ids, fractions, seed, groups)
    saved[key] = splits
    write_json_atomic(store.root / SPLITS, saved)
    return splits
