"""python -m lss_lightning.data.quijote set_name=latin_hypercube n_sims=2000 grid=128 redshift=0 [shard=k num_shards=K]

The Quijote root comes from $QUIJOTE_ROOT or root=PATH. Parallel over simulations with a multirun:
    python -m lss_lightning.data.quijote -m hydra/launcher=joblib hydra.launcher.n_jobs=4 \\
        num_shards=4 'shard=range(0,4)' threads=1
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, ListConfig, OmegaConf

from lss_lightning.config import CONF_DIR
from lss_lightning.data.quijote.convert import QuijoteConfig, convert_store


def quijote_config(cfg: DictConfig) -> QuijoteConfig:
    """The QuijoteConfig of a composed ``quijote`` config (only its own keys are resolved)."""
    values = {}
    for key in QuijoteConfig.__dataclass_fields__:
        if key in cfg:
            value = cfg[key]
            values[key] = (
                OmegaConf.to_container(value, resolve=True)
                if isinstance(value, DictConfig | ListConfig)
                else value
            )
    return QuijoteConfig(**values)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="quijote")
def main(cfg: DictConfig) -> None:
    qcfg = quijote_config(cfg)
    store = convert_store(qcfg)
    pending = store.missing()
    state = (
        "complete"
        if not pending
        else f"{len(pending)} simulations still to convert (other shards or a rerun)"
    )
    print(f"field store {store.root}: shard {qcfg.shard}/{qcfg.num_shards} done; store {state}")


if __name__ == "__main__":
    main()
