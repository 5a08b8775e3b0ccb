"""python eval.py ckpt_path=... [overrides]: evaluate a checkpoint on whole test boxes; see conf/eval.yaml."""

import hydra
from omegaconf import DictConfig

from lss_lightning.config import CONF_DIR
from lss_lightning.run import evaluate


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
