"""Console vs train.log: the console shows our own lines, warnings and the progress bar; Lightning's
notices (hardware banner, tips, model summary, callback notices) and its warnings go to train.log only.

Wired in conf/hydra/default.yaml (`job_logging`), and `logging.captureWarnings` sends Python
warnings through the same handlers once the run flow starts (core.runner).
"""

from __future__ import annotations

import logging
import os

_LIBRARY_LOGGERS = ("lightning", "pytorch_lightning", "torch", "wandb", "absl")


RANK_VARS = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")


def is_worker_process() -> bool:
    """A DDP process other than the first (Lightning starts them as `train.py ... hydra.run.dir=<the
    run>`): the first process owns the run folder and the console."""
    return any(os.environ.get(k, "0") not in ("", "0") for k in RANK_VARS)


class QuietConsole(logging.Filter):
    """Drop library INFO records and library warnings from the console handler (the file keeps them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "console", True) is False:  # written to the console another way (core.progress)
            return False
        if record.levelno < logging.WARNING and is_worker_process():  # one copy of each line, rank 0's
            return False
        name = record.name
        if name.startswith(_LIBRARY_LOGGERS) and record.levelno < logging.ERROR:
            return False
        if name == "py.warnings":  # warnings.warn, formatted with the file that raised it
            msg = record.getMessage()
            return not any(f"/{lib}/" in msg for lib in ("lightning", "lightning_fabric", "torchmetrics"))
        return True


def route_library_logs() -> None:
    """Lightning gives its loggers a stderr handler of their own; where the run logs through the root
    logger (Hydra's console + train.log), drop those so its lines reach train.log only, once."""
    logging.captureWarnings(True)
    if not logging.getLogger().handlers:  # the Python API without logging set up: leave Lightning as it is
        return
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        lg = logging.getLogger(name)
        for h in [h for h in lg.handlers if type(h) is logging.StreamHandler]:
            lg.removeHandler(h)
        lg.propagate = True
