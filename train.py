"""python train.py [overrides]: train (and evaluate) a model; see conf/train.yaml and README.md."""

import hydra
from omegaconf import DictConfig

from lss_lightning.config import CONF_DIR
from lss_lightning.run import train


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    return metrics.get(cfg.get("optimized_metric", "val/loss"))  # for Hydra sweepers


if __name__ == "__main__":
    main()
