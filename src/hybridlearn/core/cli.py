"""The run flow behind `python train.py` / `hybridlearn-train`: compose (Hydra), validate, seed,
instantiate, fit/test/predict, record results.json."""

from __future__ import annotations

import importlib
import logging
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from hybridlearn.core.config import conf_dir, validate
from hybridlearn.core.errors import ConfigError, HybridlearnError
from hybridlearn.core.results import write_results

log = logging.getLogger("hybridlearn")

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


def _instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a callbacks/logger group that has a `_target_` (null disables)."""
    if not group:
        return []
    return [instantiate(v) for v in group.values() if isinstance(v, DictConfig) and "_target_" in v]


def load_entry(spec: str) -> Callable[[DictConfig, Path], dict]:
    module, _, fn = spec.partition(":")
    if not fn:
        raise ConfigError(f"entry must look like 'package.module:function' (got {spec!r})")
    try:
        return getattr(importlib.import_module(module), fn)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"entry {spec!r} cannot be loaded: {e}") from e


def _standard_flow(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path and not Path(ckpt_path).is_file():
        raise ConfigError(f"ckpt_path={ckpt_path} is not a file; give the path of a .ckpt (e.g. <run>/checkpoints/last.ckpt)")
    datamodule: L.LightningDataModule = instantiate(cfg.data)
    model: L.LightningModule = instantiate(cfg.model)
    callbacks = _instantiate_group(cfg.get("callbacks"))
    loggers = _instantiate_group(cfg.get("logger"))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, default_root_dir=str(output_dir))
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False))

    metrics: dict[str, Any] = {}
    task = cfg.get("task", "fit")
    if task == "fit":
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True if ckpt_path else None)
        metrics.update(trainer.callback_metrics)
        ckpt_cb = trainer.checkpoint_callback
        if ckpt_cb is not None and getattr(ckpt_cb, "best_model_path", ""):
            metrics.update(best_ckpt=ckpt_cb.best_model_path, best_score=ckpt_cb.best_model_score,
                           last_ckpt=ckpt_cb.last_model_path)
        if cfg.get("test", True) and trainer.state.status.value == "finished":
            best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            if best:
                log.info("testing the best checkpoint %s", best)
                trainer.test(model, datamodule=datamodule, ckpt_path=best, weights_only=True)
            else:  # fast_dev_run and friends save no checkpoint: test the weights in memory
                trainer.test(model, datamodule=datamodule)
            metrics.update(trainer.callback_metrics)
    elif task == "test":
        trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True if ckpt_path else None)
        metrics.update(trainer.callback_metrics)
    else:
        trainer.predict(model, datamodule=datamodule, ckpt_path=ckpt_path, return_predictions=False)
        metrics.update(trainer.callback_metrics)

    metrics.update(getattr(model, "extra_results", None) or {})
    for lg in loggers:  # close W&B runs so each job (multirun included) leaves a complete run
        if type(lg).__name__ == "WandbLogger":
            lg.experiment.finish()
    return metrics


def _root_error(e: BaseException) -> BaseException:
    """Hydra wraps errors raised in a constructor (InstantiationException): surface ours."""
    cause = e
    while cause is not None:
        if isinstance(cause, HybridlearnError):
            return cause
        cause = cause.__cause__
    return e


def run(cfg: DictConfig) -> dict[str, Any] | None:
    """Run one job described by `cfg`; write `<output_dir>/results.json`; return its metrics."""
    output_dir = Path(cfg.paths.output_dir)
    started = time.time()
    record = {"task_name": cfg.get("task_name"), "seed": cfg.get("seed"), "overrides": _overrides(),
              "output_dir": str(output_dir.resolve())}
    try:
        validate(cfg)
        output_dir.mkdir(parents=True, exist_ok=True)
        if cfg.get("seed") is not None:
            L.seed_everything(cfg.seed, workers=True, verbose=False)
        if torch.cuda.is_available():
            torch.set_float32_matmul_precision(cfg.get("matmul_precision", "high"))
        entry = cfg.get("entry")
        metrics = load_entry(entry)(cfg, output_dir) if entry else _standard_flow(cfg, output_dir)
    except (Exception, KeyboardInterrupt) as e:
        e = _root_error(e)
        msg = str(e) if isinstance(e, HybridlearnError) else f"{type(e).__name__}: {e}"
        write_results(output_dir, status="failed", error=msg, duration_s=time.time() - started, **record)
        if _is_multirun() and isinstance(e, Exception):
            # Mark the job and let the other jobs of the sweep finish; the summary flags it.
            log.error("job failed: %s\n%s", msg, traceback.format_exc())
            return None
        if isinstance(e, HybridlearnError):
            print(f"error: {msg}", file=sys.stderr)
            raise SystemExit(2) from None
        raise
    write_results(output_dir, status="completed", metrics=metrics, duration_s=round(time.time() - started, 3), **record)
    print(f"Run directory: {output_dir.resolve()}")
    return metrics


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
    hydra.main(version_base="1.3", config_path=config_path, config_name="train")(run)()


def train_main() -> None:
    """`hybridlearn-train experiment=... [overrides]` (= `python train.py ...`)."""
    hydra_main()
