"""The run flow behind `python train.py` / `hybridlearn-train`: compose (Hydra), validate, seed,
instantiate, fit/test/predict, record results.json."""

from __future__ import annotations

import functools
import importlib
import logging
import math
import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import BasePredictionWriter
from omegaconf import DictConfig, OmegaConf

from hybridlearn.core.checkpoint import check_fits
from hybridlearn.core.config import conf_dir, validate
from hybridlearn.core.errors import ConfigError, HybridlearnError
from hybridlearn.core.results import to_number, write_results
from hybridlearn.core.trainer import build_trainer, finish_loggers, run_config

log = logging.getLogger("hybridlearn")


@functools.cache
def run_suffix() -> str:
    """Milliseconds and process id, fixed for the process: with the time to the second in the run
    folder's name, two runs started together never share a folder."""
    return f"{int(time.time() * 1000) % 1000:03d}-{os.getpid()}"


def run_label(task_name: str) -> str:
    """A readable, unique run name for trackers (W&B): task, start time, and the overrides typed."""
    skip = ("experiment=", "logger=", "hydra", "paths.")
    extra = [o for o in _overrides() if not o.lstrip("+~").startswith(skip)]
    label = f"{task_name}_{time.strftime('%m%d-%H%M%S')}_{run_suffix().split('-', 1)[0]}"
    return label + (f" {' '.join(extra)}" if extra else "")


OmegaConf.register_new_resolver("run_suffix", run_suffix, replace=True)
OmegaConf.register_new_resolver("run_label", run_label, use_cache=True, replace=True)
OmegaConf.register_new_resolver("if", lambda cond, yes, no: yes if cond else no, replace=True)  # ${if:${flag},a,b}

# Data already lives in memory as whole batches; worker processes would only add overhead.
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*LeafSpec.*")


def _overrides() -> list[str]:
    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:  # composed by the API (tests), not by @hydra.main
        return []


def _is_multirun() -> bool:
    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


def load_entry(spec: str) -> Callable[[DictConfig, Path], dict]:
    module, _, fn = spec.partition(":")
    if not fn:
        raise ConfigError(f"entry must look like 'package.module:function' (got {spec!r})")
    try:
        return getattr(importlib.import_module(module), fn)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"entry {spec!r} cannot be loaded: {e}") from e


def _has_prediction_writer(trainer: L.Trainer) -> bool:
    return any(isinstance(cb, BasePredictionWriter) for cb in trainer.callbacks)


def _check_task(cfg: DictConfig, model: L.LightningModule, trainer: L.Trainer) -> None:
    """Refuse runs whose result would mean nothing, before any work is done."""
    task, ckpt_path = cfg.get("task", "fit"), cfg.get("ckpt_path")
    if task == "predict" and not (hasattr(model, "write_predictions") or _has_prediction_writer(trainer)):
        raise ConfigError(f"task=predict: {type(model).__name__} has nothing to predict; use task=fit or task=test")
    if task == "predict" and not ckpt_path and not _has_prediction_writer(trainer):
        raise ConfigError(
            "task=predict needs ckpt_path=<a .ckpt of this experiment> (predicting with untrained weights means nothing)"
        )
    if ckpt_path:
        check_fits(ckpt_path, model)


def _standard_flow(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    ckpt_path = cfg.get("ckpt_path")
    datamodule: L.LightningDataModule = instantiate(cfg.data)
    model: L.LightningModule = instantiate(cfg.model)
    trainer = build_trainer(cfg, output_dir)
    _check_task(cfg, model, trainer)
    weights_only = True if ckpt_path else None  # nothing in a checkpoint can run code

    metrics: dict[str, Any] = {}
    task = cfg.get("task", "fit")
    if task == "fit":
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=weights_only)
        metrics.update(trainer.callback_metrics)
        ckpt_cb = trainer.checkpoint_callback
        if ckpt_cb is not None and getattr(ckpt_cb, "best_model_path", ""):
            metrics.update(
                best_ckpt=ckpt_cb.best_model_path,
                best_score=ckpt_cb.best_model_score,
                last_ckpt=ckpt_cb.last_model_path,
            )
        if cfg.get("test", True) and trainer.state.status.value == "finished":
            best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            if best:
                log.info("testing the best checkpoint %s", best)
                trainer.test(model, datamodule=datamodule, ckpt_path=best, weights_only=True)
            else:  # fast_dev_run and friends save no checkpoint: test the weights in memory
                trainer.test(model, datamodule=datamodule)
            metrics.update(trainer.callback_metrics)
    elif task == "test":
        trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=weights_only)
        metrics.update(trainer.callback_metrics)
    else:
        writes = hasattr(model, "write_predictions")
        predictions = trainer.predict(
            model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=weights_only, return_predictions=writes
        )
        metrics.update(trainer.callback_metrics)
        if writes and trainer.is_global_zero:
            metrics.update(model.write_predictions(predictions or [], output_dir))

    metrics.update(getattr(model, "extra_results", None) or {})
    return metrics


def _root_error(e: BaseException) -> BaseException:
    """Hydra wraps errors raised in a constructor (InstantiationException): surface ours."""
    cause = e
    while cause is not None:
        if isinstance(cause, HybridlearnError):
            return cause
        cause = cause.__cause__
    return e


def write_results_rank0(run_dir: Path, **fields: Any) -> None:
    """DDP: every rank runs the job; rank 0 keeps the record."""
    if rank_zero_only.rank == 0:
        write_results(run_dir, **fields)


def _interrupted(trainers: list[L.Trainer]) -> dict[str, Any] | None:
    """{"last_ckpt": ...} when Ctrl-C stopped one of the run's Trainers (Lightning turns it into exit 1)."""
    for tr in reversed(trainers):
        if tr.interrupted:
            cb = tr.checkpoint_callback
            return {"last_ckpt": (getattr(cb, "last_model_path", "") or getattr(cb, "best_model_path", "")) or None}
    return None


def run(cfg: DictConfig) -> dict[str, Any] | None:
    """Run one job described by `cfg`; write `<output_dir>/results.json`; return its metrics."""
    output_dir = Path(cfg.paths.output_dir)
    started = time.time()
    record = {
        "task_name": cfg.get("task_name"),
        "seed": cfg.get("seed"),
        "overrides": _overrides(),
        "output_dir": str(output_dir.resolve()),
    }
    with run_config(cfg) as ctx:
        try:
            validate(cfg)
            strategy = str(OmegaConf.select(cfg, "trainer.strategy") or "")
            # ddp reruns the command for ranks 1..N-1, which in a local multirun would rerun the sweep
            if (
                strategy in ("ddp", "ddp_find_unused_parameters_true")
                and _is_multirun()
                and not os.environ.get("SLURM_NTASKS")
            ):
                raise ConfigError(
                    "a local multirun cannot start DDP ranks; use SLURM (hydra.launcher.tasks_per_node) or a single run"
                )
            output_dir.mkdir(parents=True, exist_ok=True)
            if cfg.get("print_config"):
                print(OmegaConf.to_yaml(cfg, resolve=False), end="", flush=True)
            if cfg.get("seed") is not None:
                L.seed_everything(cfg.seed, workers=True, verbose=False)
            if torch.cuda.is_available():
                torch.set_float32_matmul_precision(cfg.get("matmul_precision", "high"))
            entry = cfg.get("entry")
            metrics = load_entry(entry)(cfg, output_dir) if entry else _standard_flow(cfg, output_dir)
        except (Exception, KeyboardInterrupt, SystemExit) as e:
            stopped = _interrupted(ctx.trainers) if isinstance(e, (KeyboardInterrupt, SystemExit)) else None
            for tr in ctx.trainers:
                finish_loggers(tr, failed=True)
            if stopped is not None or isinstance(e, KeyboardInterrupt):
                write_results_rank0(
                    output_dir,
                    status="interrupted",
                    duration_s=round(time.time() - started, 3),
                    **(stopped or {}),
                    **record,
                )
                print(f"interrupted; resume with ckpt_path={(stopped or {}).get('last_ckpt')}", file=sys.stderr)
                raise SystemExit(130) from None
            if isinstance(e, SystemExit):
                raise
            e = _root_error(e)
            msg = str(e) if isinstance(e, HybridlearnError) else f"{type(e).__name__}: {e}"
            write_results_rank0(
                output_dir, status="failed", error=msg, duration_s=round(time.time() - started, 3), **record
            )
            if _is_multirun():
                # Mark the job and let the other jobs of the sweep finish; the summary flags it.
                log.error("job failed: %s\n%s", msg, traceback.format_exc())
                return None
            if isinstance(e, HybridlearnError):
                print(f"error: {msg}", file=sys.stderr)
                raise SystemExit(2) from None
            raise
        for tr in ctx.trainers:  # close W&B runs so each model (and each job of a sweep) leaves a complete run
            finish_loggers(tr)
    if rank_zero_only.rank == 0:  # DDP: every rank runs this function; one record per run
        write_results(
            output_dir, status="completed", metrics=metrics, duration_s=round(time.time() - started, 3), **record
        )
        print(f"Run directory: {output_dir.resolve()}")
    return metrics


def objective(cfg: DictConfig) -> float | None:
    """The Hydra task function: run the job; return `optimized_metric` for sweepers (Optuna)."""
    metrics = run(cfg)
    key = cfg.get("optimized_metric")
    if not key:
        return None
    value = to_number(metrics.get(key)) if metrics else None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return None  # a failed trial: the sweeper records it as failed and the search goes on
    return float(value)


def hydra_main(preset: list[str] | None = None) -> None:
    """Run the Hydra app on sys.argv; `preset` are overrides put first unless the user gives them."""
    for p in preset or []:
        key = p.split("=", 1)[0]
        if not any(a.split("=", 1)[0].lstrip("+~") == key for a in sys.argv[1:]):
            sys.argv.insert(1, p)
    try:
        config_path = str(conf_dir())
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    hydra.main(version_base="1.3", config_path=config_path, config_name="train")(objective)()


def train_main() -> None:
    """`hybridlearn-train experiment=... [overrides]` (= `python train.py ...`)."""
    hydra_main()
