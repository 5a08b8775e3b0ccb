"""FieldCropDataModule: splits, crops, augmentation, normalisation statistics, workers, parameter targets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lss_lightning.data.datamodule import FieldCropDataModule
from lss_lightning.data.dataset import FieldCropDataset
from lss_lightning.data.normalisation import ChannelNormaliser, FieldLayout, field_statistics
from lss_lightning.data.splits import split_simulations
from lss_lightning.fields.velocity import linear_velocity


def _dm(store, **kwargs):
    args = {
        "store": str(store.root),
        "inputs": ["density"],
        "targets": ["velocity"],
        "crop": 8,
        "pad": 4,
        "batch_size": 4,
        "num_workers": 0,
        "split": {"train": 0.5, "val": 0.25, "test": 0.25, "seed": 1},
    }
    dm = FieldCropDataModule(**{**args, **kwargs})
    dm.setup("fit")
    return dm


def test_splits_are_by_simulation_disjoint_saved_and_reproducible(tiny_store):
    dm = _dm(tiny_store)
    parts = [set(dm.splits[p]) for p in ("train", "val", "test")]
    assert set().union(*parts) == set(tiny_store.simulation_ids)
    assert sum(len(p) for p in parts) == len(tiny_store.simulation_ids)
    saved = json.loads((tiny_store.root / "splits.json").read_text())
    assert dm.splits in saved.values()
    assert _dm(tiny_store).splits == dm.splits
    assert split_simulations(
        [f"s{i}" for i in range(10)], {"train": 0.8, "val": 0.1, "test": 0.1}, 3
    ) == split_simulations([f"s{i}" for i in range(10)], {"train": 0.8, "val": 0.1, "test": 0.1}, 3)
    with pytest.raises(ValueError, match="cannot fill"):
        split_simulations(["a", "b"], {"train": 0.5, "val": 0.25, "test": 0.25}, 0)


def test_grouped_splits_keep_a_box_together_and_ungrouped_splits_are_unchanged():
    """Light cones of one particle-mesh run (a ``box``) all land in one part; without groups (or with one
    simulation per group) the split is bit for bit the one made before groups existed."""
    ids = [f"s{i}" for i in range(10)]
    fractions = {"train": 0.8, "val": 0.1, "test": 0.1}
    before = {"train": ["s0", "s1", "s2", "s4", "s5", "s6", "s7", "s9"], "val": ["s3"], "test": ["s8"]}
    assert split_simulations(ids, fractions, 3) == before  # made by the split code before groups
    assert split_simulations(ids, fractions, 3, groups=list(range(10))) == before
    twelve = [f"s{i}" for i in range(12)]
    assert split_simulations(twelve, {"train": 0.5, "val": 0.25, "test": 0.25}, 0) == {
        "train": ["s2", "s4", "s5", "s7", "s9", "s11"],
        "val": ["s0", "s3", "s6"],
        "test": ["s1", "s8", "s10"],
    }
    cones = [f"b{b}_c{k}" for b in range(8) for k in range(6)]
    boxes = [b for b in range(8) for _ in range(6)]
    splits = split_simulations(cones, {"train": 0.75, "val": 0.125, "test": 0.125}, 0, groups=boxes)
    assert sorted(c for members in splits.values() for c in members) == sorted(cones)
    assert [len(splits[p]) for p in ("train", "val", "test")] == [36, 6, 6]
    part_of_box = {}
    for part, members in splits.items():
        for cone in members:
            assert part_of_box.setdefault(cone.split("_")[0], part) == part  # a box never straddles parts
    by_box = split_simulations([f"b{b}" for b in range(8)], {"train": 0.75, "val": 0.125, "test": 0.125}, 0)
    assert {p: sorted({c.split("_")[0] for c in m}) for p, m in splits.items()} == by_box
    with pytest.raises(ValueError, match="counting groups: 2 boxes"):
        split_simulations(cones[:12], {"train": 0.5, "val": 0.25, "test": 0.25}, 0, groups=boxes[:12])


def test_items_are_padded_input_and_unpadded_target_cut_periodically(tiny_store):
    dm = _dm(tiny_store, augment=False)
    item = dm.val_set[5]
    assert item["input"].shape == (1, 16, 16, 16) and item["target"].shape == (3, 8, 8, 8)
    sim = dm.val_set.sim_ids[int(item["sim"])]
    corner = item["corner"].numpy()
    density, velocity = tiny_store.read(sim, "density"), tiny_store.read(sim, "velocity")
    ix = [np.arange(c - 4, c + 12) % 16 for c in corner]
    np.testing.assert_array_equal(item["input"].numpy(), density[np.ix_([0], *ix)])
    it = [np.arange(c, c + 8) % 16 for c in corner]
    np.testing.assert_array_equal(item["target"].numpy(), velocity[np.ix_(range(3), *it)])


def test_augmented_crop_pairs_obey_the_linear_operator(tiny_store):
    """Whole-box crops at random corners with random symmetries: the stored pair (density,
    velocity_linear) stays a (delta, v_lin(delta)) pair after augmentation."""
    layouts_in = [FieldLayout("density", "scalar", 1)]
    layouts_out = [FieldLayout("velocity_linear", "vector", 3)]
    from lss_lightning.data.crops import cube_symmetries
    from lss_lightning.data.dataset import CropGeometry

    ds = FieldCropDataset(
        tiny_store.root,
        tiny_store.simulation_ids,
        layouts_in,
        layouts_out,
        CropGeometry(16, 0),
        random_crops=12,
        symmetries=cube_symmetries(),
    )
    a_h_f = tiny_store.cosmology("sim_00000").a_h_f(tiny_store.redshift)
    torch.manual_seed(0)
    for i in range(12):
        item = ds[i]
        expected = linear_velocity(item["input"], tiny_store.box_size, a_h_f)
        np.testing.assert_allclose(
            item["target"].numpy(), expected.numpy(), atol=1e-3 * float(expected.abs().max())
        )


def test_redshift_space_fields_restrict_augmentation_to_16_symmetries(tiny_store):
    dm = _dm(tiny_store, inputs=["density_rsd"], targets=["velocity_rsd"])
    assert dm.redshift_space and len(dm.train_set.symmetries) == 16
    assert len(_dm(tiny_store).train_set.symmetries) == 48


def test_normalisation_statistics_come_from_training_simulations_only(tiny_store):
    dm = _dm(tiny_store)
    train = np.concatenate([tiny_store.read(s, "density").ravel() for s in dm.splits["train"]])
    assert dm.statistics["density"] == pytest.approx((train.mean(), train.std()), rel=1e-4, abs=1e-6)
    velocity = np.concatenate([tiny_store.read(s, "velocity").ravel() for s in dm.splits["train"]])
    assert dm.statistics["velocity"] == pytest.approx((0.0, np.sqrt(np.mean(velocity**2))), rel=1e-4)
    everything = np.concatenate([tiny_store.read(s, "density").ravel() for s in tiny_store.simulation_ids])
    assert dm.statistics["density"][1] != pytest.approx(everything.std(), rel=1e-6)


def test_normaliser_round_trip_and_log_transform():
    layouts = [FieldLayout("density", "scalar", 1, "log"), FieldLayout("velocity", "vector", 3)]
    norm = ChannelNormaliser(layouts)
    x = torch.cat([torch.rand(2, 1, 4, 4, 4) * 3 - 1, torch.randn(2, 3, 4, 4, 4) * 200], 1)
    stats = {
        "density": field_statistics([x[:, :1].numpy()], layouts[0]),
        "velocity": field_statistics([x[:, 1:].numpy()], layouts[1]),
    }
    norm.set_statistics(stats)
    y = norm(x)
    assert abs(float(y[:, 0].mean())) < 1e-5 and float(y[:, 0].std(unbiased=False)) == pytest.approx(
        1.0, rel=1e-4
    )
    assert float(y[:, 1:].square().mean()) == pytest.approx(1.0, rel=1e-4)
    vel_norm = ChannelNormaliser(layouts[1:])
    vel_norm.set_statistics(stats)
    np.testing.assert_allclose(
        vel_norm.inverse(vel_norm(x[:, 1:])).numpy(), x[:, 1:].numpy(), rtol=1e-5, atol=1e-3
    )
    assert "shift" in dict(norm.state_dict()) and bool(norm.state_dict()["fitted"])
    with pytest.raises(ValueError, match="scalar fields only"):
        FieldLayout("velocity", "vector", 3, "log")


def test_loader_with_two_workers_opens_files_lazily(tiny_store):
    dm = _dm(tiny_store, num_workers=2)
    assert dm.train_set._handles == {}  # nothing opened in the main process
    batches = list(dm.train_dataloader())
    assert len(batches) == -(-len(dm.train_set) // 4)
    assert batches[0]["input"].shape == (4, 1, 16, 16, 16) and batches[0]["target"].shape == (4, 3, 8, 8, 8)
    assert all(torch.isfinite(b["target"]).all() for b in batches)


def test_parameter_targets_are_the_simulation_parameters(tiny_lh_store):
    dm = FieldCropDataModule(
        store=str(tiny_lh_store.root),
        inputs=["density"],
        targets=["Omega_m", "s8"],
        crop=8,
        pad=0,
        batch_size=4,
        split={"train": 0.5, "val": 0.25, "test": 0.25, "seed": 0},
    )
    dm.setup("fit")
    assert dm.target_kind == "parameters" and dm.parameter_names == ["Omega_m", "sigma_8"]
    item = dm.train_set[7]
    sim = dm.train_set.sim_ids[int(item["sim"])]
    cosmo = tiny_lh_store.cosmology(sim)
    np.testing.assert_allclose(item["target"].numpy(), [cosmo.Omega_m, cosmo.sigma_8], rtol=1e-6)
    assert item["input"].shape == (1, 8, 8, 8)
    train = dm.parameter_table(dm.splits["train"])
    assert dm.parameter_statistics["Omega_m"]["min"] == pytest.approx(train[:, 0].min())
    assert "Omega_m" not in dm.statistics  # only fields get normalisation statistics


def test_mixed_targets_give_a_clear_error(tiny_lh_store):
    with pytest.raises(ValueError, match="mixes stored fields and cosmological parameters"):
        FieldCropDataModule(store=str(tiny_lh_store.root), inputs=["density"], targets=["density", "h"])
