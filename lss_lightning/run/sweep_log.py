"""A record of every finished sweep trial, written as it finishes: ``<sweep dir>/trials.jsonl``, one JSON line
per trial (its number, overrides, status, returned value or error). hydra-optuna-sweeper writes
``optimization_results.yaml`` only once the whole sweep is over, so a sweep that is killed or stopped by failed
trials would otherwise leave nothing of the trials that did finish. A Hydra callback (conf/hparams_search/*):
it runs in each trial's process, after the job, whatever the launcher."""

from __future__ import annotations

import fcntl
import json
import logging
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class TrialLog(Callback):
    """Append one line per finished trial to ``trials.jsonl`` in the sweep directory (locked: trials of a
    parallel launcher on one filesystem append in turn)."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        hydra_cfg = config.hydra
        if hydra_cfg.mode is None or str(hydra_cfg.mode) != "RunMode.MULTIRUN":
            return
        ok = job_return.status == JobStatus.COMPLETED
        record = {
            "trial": hydra_cfg.job.get("num"),
            "overrides": list(job_return.overrides or []),
            "status": "completed" if ok else "failed",
            "value": _number(job_return._return_value) if ok else None,
            "error": None if ok else repr(job_return._return_value),
            "dir": str(hydra_cfg.runtime.output_dir),
        }
        path = Path(hydra_cfg.sweep.dir) / "trials.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.write(json.dumps(record) + "\n")
            handle.flush()
        log.info("trial %s %s; recorded in %s", record["trial"], record["status"], path)


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
