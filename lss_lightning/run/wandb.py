"""Weights & Biases runs that never prompt and resume under their own id.

- Offline by default (conf/logger/wandb.yaml); an online run without credentials is refused before it
  starts (``has_credentials``), because wandb.init would otherwise stop and prompt for an API key.
- Each W&B logger gets its run id before the run configuration is frozen into the model: the id saved in
  the checkpoint being resumed, so the W&B run continues, or a new one. The checkpoint carries it in
  ``lss_config.logger.<name>.id``.
"""

from __future__ import annotations

import netrc
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import DictConfig, open_dict

from lss_lightning.run import checkpoints


def wandb_loggers(cfg: DictConfig) -> Iterator[tuple[str, DictConfig]]:
    """(name, config) of every WandbLogger in cfg.logger."""
    for name, logger in (cfg.get("logger") or {}).items():
        if isinstance(logger, DictConfig) and str(logger.get("_target_", "")).endswith("WandbLogger"):
            yield name, logger


def is_offline(logger: DictConfig) -> bool:
    return bool(logger.get("offline", False)) or os.environ.get("WANDB_MODE") in ("offline", "disabled")


def has_credentials() -> bool:
    """True if a W&B API key is in the environment or in ~/.netrc for the W&B host (`wandb login` puts
    it there). Checked by hand so that a missing key is an error before training, not a prompt."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def assign_run_ids(cfg: DictConfig, resume: Path | None) -> None:
    """Set ``id`` of every W&B logger in ``cfg``: the resumed checkpoint's (if it had one) or a new one."""
    loggers = list(wandb_loggers(cfg))
    if not loggers:
        return
    saved = (checkpoints.load_config(resume) or {}) if resume is not None else {}
    for name, logger in loggers:
        previous = ((saved.get("logger") or {}).get(name) or {}).get("id")
        with open_dict(logger):
            logger.id = logger.get("id") or previous or new_run_id()


def new_run_id() -> str:
    """Eight characters of [0-9a-f], the shape of W&B's own run ids."""
    return secrets.token_hex(4)
