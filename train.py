"""python train.py [overrides]: train (and evaluate) a model; see conf/train.yaml and README.md."""

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from lss_lightning.config import CONF_DIR
from lss_lightning.run import train


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    name = cfg.get("optimized_metric")
    if name and name not in metrics and HydraConfig.get().mode == RunMode.MULTIRUN:
        raise KeyError(f"optimized_metric={name} is not among the metrics of this run: {sorted(metrics)}")
    return metrics.get(name)  # what Hydra sweepers (Optuna) optimise


if __name__ == "__main__":
    main()
