"""python -m lss_lightning.mocks store=PATH n_sims=... grid=... box_size=... redshift=... seed=...

OpenMP threads sleep while they wait (``OMP_WAIT_POLICY=PASSIVE`` unless set): generation often shares its
cores with other jobs, and one PM force call (128^3 particles, 256^3 mesh, 2 threads) took 1.46-1.49 s passive
against 2.5 and 12.9 s spinning beside two busy processes, for 0.89 against 0.79 s on an idle machine. It must
be set before torch loads OpenMP, so here, before any import of torch.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from lss_lightning.config import CONF_DIR
from lss_lightning.mocks.config import MockConfig
from lss_lightning.mocks.generate import generate_store
from lss_lightning.store.schema import StoreError

NOT_MOCK_SETTINGS = ("paths", "hydra", "task_name")  # conf/mocks.yaml's keys beside the mock settings


def mock_config(cfg: DictConfig) -> MockConfig:
    """The MockConfig of a composed ``mocks`` config (or of ``data.mocks`` in a training config)."""
    values = OmegaConf.to_container(cfg, resolve=True)
    return MockConfig.from_mapping({k: v for k, v in values.items() if k not in NOT_MOCK_SETTINGS})


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="mocks")
def main(cfg: DictConfig) -> None:
    mock = mock_config(cfg)
    try:
        store = generate_store(mock)
    except StoreError as err:  # a full disk, a store of other settings, ...: one message, exit code 1
        sys.exit(f"error: {err}")
    missing = store.missing()
    if missing:  # this shard is done, others are not (yet)
        print(
            f"shard {mock.shard} of {mock.num_shards} done: {store.root} still misses {len(missing)} of "
            f"{len(store.simulation_ids)} simulations ({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}), "
            "made by the other shards; rerun any shard to see what is left"
        )
        return
    print(
        f"field store ready: {store.root} ({len(store.simulation_ids)} simulations, fields {sorted(store.fields)})"
    )


if __name__ == "__main__":
    main()
