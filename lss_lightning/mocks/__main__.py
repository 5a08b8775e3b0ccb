"""python -m lss_lightning.mocks store=PATH n_sims=... grid=... box_size=... redshift=... seed=..."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from lss_lightning.config import CONF_DIR
from lss_lightning.data.store import StoreError
from lss_lightning.mocks.generate import MockConfig, generate_store


def mock_config(cfg: DictConfig) -> MockConfig:
    """The MockConfig of a composed ``mocks`` config (or of ``data.mocks`` in a training config)."""
    values = OmegaConf.to_container(cfg, resolve=True)
    return MockConfig(**{k: values[k] for k in MockConfig.__dataclass_fields__ if k in values})


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
