"""Run folders before a run starts (a Hydra callback, so nothing heavy is imported yet):

- `ckpt_path=last` becomes the newest run's `checkpoints/last.ckpt` of the same `task_name`;
- a W&B run id is fixed up front and kept in the run's results.json, so a resumed run continues
  the same W&B run;
- the composed config is checked (core.config.validate) and the run folder must be creatable and
  must not hold another run: a finished run is never written over, unless it is resumed in place.

Every refusal is one line on stderr and exit 2, before the run folder is made.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

from hybridlearn.core.ckptfile import read_info
from hybridlearn.core.conf import check_task_name
from hybridlearn.core.config import validate
from hybridlearn.core.errors import ConfigError, HybridlearnError, report_error
from hybridlearn.core.logs import is_worker_process
from hybridlearn.core.results import FOLD, RESULTS, SEED

LAST = "last"
# what makes a folder a run of ours (or one `make reproduce` prepared): any other non-empty folder is
# someone's own, and a run never writes into it
RUN_MARKERS = (RESULTS, ".hydra", "reproduce_run.json")


def run_of(ckpt: str | Path) -> Path | None:
    """The run folder a checkpoint was written into (`<run>/checkpoints/x.ckpt`, a fold of a
    cross-validation: `<run>/fold_<k>/checkpoints/x.ckpt`, a seed of `repeat.seeds`:
    `<run>/seed_<s>/checkpoints/x.ckpt`, or a fit of a study, which may be a fold too:
    `<run>/runs/<fit>/[fold_<k>/]checkpoints/x.ckpt`), if it is one."""
    p = Path(ckpt).expanduser().resolve()
    if p.parent.name != "checkpoints":
        return None
    run = p.parent.parent
    if run.name.startswith((FOLD, SEED)) and (run.parent / RESULTS).exists():  # core.cv, core.repeat
        return run.parent
    fit = run.parent if run.name.startswith(FOLD) else run
    if fit.parent.name == "runs" and (fit.parent.parent / RESULTS).exists():
        return fit.parent.parent
    return run


def read_record(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / RESULTS).read_text())
    except (OSError, ValueError):
        return {}


def running_elsewhere(record: dict[str, Any]) -> int | None:
    """The pid of the live process on this machine that a `running` record names (another process
    is writing that run's folder), else None. A record of another machine (a cluster node) or of
    this very process is not checked."""
    pid = record.get("pid")
    if record.get("status") != "running" or not isinstance(pid, int) or pid == os.getpid():
        return None
    if record.get("host") != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid  # alive, another user's
    return pid


def newest_last_ckpt(log_dir: str | Path, task_name: str) -> Path:
    """`checkpoints/last.ckpt` of the newest run of `task_name` (run folders are named by start time)."""
    runs = Path(log_dir) / task_name / "runs"
    found = sorted(
        [*runs.glob("*/checkpoints/last.ckpt"), *runs.glob(f"*/{FOLD}*/checkpoints/last.ckpt")],
        key=lambda p: (run_of(p).name, p.stat().st_mtime),
    )
    if not found:
        raise ConfigError(
            f"ckpt_path=last: no run of task_name={task_name} with checkpoints/last.ckpt under {runs}; "
            "give ckpt_path=<a .ckpt> instead"
        )
    return found[-1]


def check_run_dir(run_dir: Path, ckpt_path: str | None) -> None:
    """The run folder must be a folder we can create, and hold no run of its own unless resumed in place."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"hydra.run.dir={run_dir} is a file; give a folder (or leave it to the default)")
    if run_dir.is_dir() and any(run_dir.iterdir()) and not any((run_dir / m).exists() for m in RUN_MARKERS):
        raise ConfigError(
            f"hydra.run.dir={run_dir} holds files that are not a run of this project; choose a new or empty folder"
        )
    if pid := running_elsewhere(read_record(run_dir)):
        raise ConfigError(
            f"hydra.run.dir={run_dir} is in use: its run is running in process {pid}; wait for it to end "
            "(or stop it) before resuming it, or choose a new folder"
        )
    if (run_dir / RESULTS).exists() or (run_dir / "checkpoints").is_dir():
        resumed = run_of(ckpt_path) if ckpt_path else None
        if resumed is None or resumed != run_dir.resolve():
            status = read_record(run_dir).get("status", "unknown")
            # a cross-validation resumes a fold, a repeat run a seed, a study (runs/<fit>/fold_<k>) too
            folds = sorted(
                [
                    *run_dir.glob(f"{FOLD}*/checkpoints/last.ckpt"),
                    *run_dir.glob(f"{SEED}*/checkpoints/last.ckpt"),
                    *run_dir.glob(f"runs/*/{FOLD}*/checkpoints/last.ckpt"),
                ]
            )
            last = folds[-1] if folds else run_dir / "checkpoints" / "last.ckpt"
            raise ConfigError(
                f"hydra.run.dir={run_dir} already holds a run (status {status}); choose a new folder, or resume "
                f"that run in place with ckpt_path={last}"
            )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(
            f"cannot create the run folder {run_dir} ({e.strerror or e}); set HYBRIDLEARN_LOG_DIR or "
            "paths.log_dir to a writable folder, or pick a shorter task_name"
        ) from None


def prepare(cfg: DictConfig, run_dir: Path | None) -> None:
    """Resolve `ckpt_path=last`, fix the W&B id, check the config and the run folder (in place)."""
    task_name = check_task_name(str(cfg.get("task_name") or ""))
    with read_write(cfg), open_dict(cfg):
        if cfg.get("ckpt_path") == LAST:
            cfg.ckpt_path = str(newest_last_ckpt(cfg.paths.log_dir, task_name))
            print(f"ckpt_path=last: resuming {cfg.ckpt_path}", flush=True)
        wandb = (cfg.get("logger") or {}).get("wandb")
        if wandb is not None and not wandb.get("id"):
            resumed = run_of(cfg.ckpt_path) if cfg.get("ckpt_path") else None
            old_id = read_record(resumed).get("wandb_id") if resumed else None
            wandb.id = old_id or secrets.token_hex(4)
            if old_id:
                wandb.resume = "allow"  # continue that W&B run instead of starting another
    validate(cfg)
    if cfg.get("ckpt_path"):
        check_checkpoint(cfg)
    if run_dir is not None:
        check_run_dir(run_dir, cfg.get("ckpt_path"))


def check_checkpoint(cfg: DictConfig) -> None:
    """`ckpt_path` is a checkpoint of this run's model, and a resumed fit can follow its schedule;
    read without torch (core.ckptfile), so a wrong file costs a fraction of a second."""
    info = read_info(cfg.ckpt_path)
    target = OmegaConf.select(cfg, "model._target_", default=None)
    if target and not cfg.get("entry") and info.module_class and info.module_class != target:
        theirs, ours = info.module_class.rsplit(".", 1)[-1], str(target).rsplit(".", 1)[-1]
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path} holds a {theirs}, not this experiment's {ours}; give a checkpoint of this experiment"
        )
    planned, epochs = info.planned_epochs, OmegaConf.select(cfg, "trainer.max_epochs", default=None)
    # an entry (a study) gives its fits their own trainer.max_epochs
    if (
        cfg.get("task", "fit") == "fit"
        and not cfg.get("entry")
        and info.schedule_steps
        and planned
        and epochs != planned
    ):
        done = info.epoch is not None and info.epoch + 1 >= planned
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path}: its learning-rate schedule was planned for {planned} epoch(s) and cannot "
            f"stretch to trainer.max_epochs={epochs}; "
            + (
                "the run has finished it: start a new run to train longer"
                if done
                else f"resume with trainer.max_epochs={planned}"
            )
        )


def _fail(e: Exception) -> None:
    """Inside Hydra (a callback) there is no main to return a code to: exit here."""
    raise SystemExit(report_error(e)) from None


SQLITE = "sqlite:///"  # an Optuna study in a file (hparams_search configs: beside the task's sweeps)


class RunGuard(Callback):
    """Hydra callback: `prepare` the config before Hydra makes the run folder and imports the run."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            run_dir = Path(str(OmegaConf.select(config, "hydra.run.dir")))
            # a DDP worker reruns the command in the first process's run folder, checked and in use
            prepare(config, None if is_worker_process() else run_dir)
        except HybridlearnError as e:
            _fail(e)
        except OmegaConfBaseException as e:  # an interpolation that cannot resolve, a wrong type
            _fail(ConfigError(str(e).splitlines()[0]))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(str(OmegaConf.select(config, "hydra.sweep.dir")))
        try:
            if sweep.exists() and not sweep.is_dir():
                raise ConfigError(f"hydra.sweep.dir={sweep} is a file; give a folder")
            if any(sweep.glob(f"*/{RESULTS}")):
                raise ConfigError(f"hydra.sweep.dir={sweep} already holds a sweep's runs; choose a new folder")
            # a search's sqlite study (hydra.sweeper.storage) opens before Hydra makes any folder
            storage = str(OmegaConf.select(config, "hydra.sweeper.storage", default="") or "")
            if storage.startswith(SQLITE):
                Path(storage.removeprefix(SQLITE)).parent.mkdir(parents=True, exist_ok=True)
        except ConfigError as e:
            _fail(e)
        except OSError as e:
            _fail(ConfigError(f"hydra.sweeper.storage={storage}: cannot make its folder ({e.strerror})"))
