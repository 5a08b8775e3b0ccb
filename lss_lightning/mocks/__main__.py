"""python -m lss_lightning.mocks store=PATH n_sims=... grid=... box_size=... redshift=... seed=..."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from lss_lightning.config import CONF_DIR
from lss_lightning.mocks.generate import MockConfig, generate_store


def mock_config(cfg: DictConfig) -> MockConfig:
    """The MockConfig of a composed ``mocks`` config (or of ``data.mocks`` in a training config)."""
    values = OmegaConf.to_container(cfg, resolve=True)
    return MockConfig(**{k: values[k] for k in MockConfig.__dataclass_fields__ if k in values})


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="mocks")
def main(cfg: DictConfig) -> None:
    store = generate_store(mock_config(cfg))
    print(
        f"field store ready: {store.root} ({len(store.simulation_ids)} simulations, fields {sorted(store.fields)})"
    )


if __name__ == "__main__":
    main()
