"""The run flow behind `python train.py` / `hybridlearn-train`, loaded by `core.cli` once the config
is composed and checked: seed, instantiate, fit/test/predict, record results.json."""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import BasePredictionWriter
from omegaconf import DictConfig, OmegaConf

from hybridlearn.core.checkpoint import check_fits, instantiate_module, last_checkpoint, rebuild_module
from hybridlearn.core.ckptfile import read_info
from hybridlearn.core.cli import is_multirun, load_entry, overrides
from hybridlearn.core.cv import cross_validate
from hybridlearn.core.errors import ConfigError, HybridlearnError, TrainingError, report_error, root_error
from hybridlearn.core.logs import route_library_logs
from hybridlearn.core.memory import keep_freed_memory
from hybridlearn.core.repeat import repeat_seeds
from hybridlearn.core.results import to_number, write_results
from hybridlearn.core.runs import prepare, read_record, run_of
from hybridlearn.core.trainer import TrainerFactory, finish_loggers

log = logging.getLogger("hybridlearn")

# Data already lives in memory as whole batches; worker processes would only add overhead.
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*LeafSpec.*")


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


def with_typed_overrides(saved: dict[str, Any], cfg: DictConfig) -> DictConfig:
    """The checkpoint's model config with the `model.*` overrides typed on the command line on top
    (`task=predict model.n_predict=100`): the experiment's defaults do not change a trained model,
    what the user asks for does."""
    node = OmegaConf.create(saved)
    for o in overrides():
        key = o.lstrip("+~").split("=", 1)[0]
        if key.startswith("model.") and not o.startswith("~"):
            OmegaConf.update(node, key.removeprefix("model."), OmegaConf.select(cfg, key), force_add=True)
    return node


def model_from_checkpoint(ckpt_path: str, saved: dict[str, Any]) -> L.LightningModule:
    """The module a checkpoint's stored config describes; one line when that config no longer builds
    (a checkpoint of an older version of the code)."""
    try:
        return rebuild_module(saved)
    except Exception as e:  # noqa: BLE001 - Hydra wraps whatever the constructor raised
        cause = root_error(e)
        first = (str(cause.__cause__ or cause).splitlines() or [""])[0][:160]
        raise ConfigError(
            f"ckpt_path={ckpt_path} was written by another version of the code: its model config no longer "
            f"builds ({first}); evaluate it with that version, or train a new one"
        ) from None


def check_data_fits(model: L.LightningModule, datamodule: L.LightningDataModule, ckpt_path: str | None) -> None:
    """A model and a data module that both state what data they take or give (`data_signature()`:
    input shape, classes, value range, ...) must agree: one line naming each difference otherwise
    (a checkpoint evaluated on another data set: `task=test ckpt_path=... data=<group>`)."""
    want = model.data_signature() if callable(getattr(model, "data_signature", None)) else {}
    have = datamodule.data_signature() if callable(getattr(datamodule, "data_signature", None)) else {}
    diff = [f"{k} {want[k]!r} vs {have[k]!r}" for k in sorted(set(want) & set(have)) if want[k] != have[k]]
    if diff:
        what = f"ckpt_path={ckpt_path} holds a {type(model).__name__}" if ckpt_path else f"model {type(model).__name__}"
        raise ConfigError(
            f"{what} that does not fit the data of {type(datamodule).__name__} ({'; '.join(diff)}: model vs data); "
            "choose data settings that match the model, or another checkpoint"
        )


def _test(trainer: L.Trainer, model: L.LightningModule, datamodule: L.LightningDataModule, **kw: Any) -> dict:
    """trainer.test, reported in one line of ours instead of Lightning's table."""
    trainer.test(model, datamodule=datamodule, verbose=False, **kw)
    metrics = dict(trainer.callback_metrics)
    shown = {k: to_number(v) for k, v in sorted(metrics.items()) if k.startswith("test/")}
    log.info("test: %s", ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items()))
    return metrics


def _standard_flow(
    cfg: DictConfig, output_dir: Path, trainers: TrainerFactory, metrics: dict[str, Any], name: str = ""
) -> dict[str, Any]:
    """fit (then test the best checkpoint), test or predict; `metrics` (the caller's) fills as it goes,
    so a Ctrl-C during the final test still records what the fit measured. `name`: one fit of several
    (a seed of `repeat.seeds`), its Trainer's name."""
    if OmegaConf.select(cfg, "repeat.seeds", default=None):
        return repeat_seeds(cfg, output_dir, trainers, _standard_flow)
    if OmegaConf.select(cfg, "cv.folds", default=0):
        return cross_validate(cfg, output_dir, trainers)
    ckpt_path = cfg.get("ckpt_path")
    task = cfg.get("task", "fit")
    datamodule: L.LightningDataModule = instantiate(cfg.data)
    # evaluating: the model the checkpoint was trained as (its own config), on whatever data is configured
    saved = read_info(ckpt_path).config if ckpt_path and task != "fit" else None
    model: L.LightningModule = (
        model_from_checkpoint(ckpt_path, with_typed_overrides(saved, cfg)) if saved else instantiate_module(cfg.model)
    )
    if ckpt_path:  # before the Trainer exists: a bad file is one line, with nothing else printed
        check_fits(ckpt_path, model)
    check_data_fits(model, datamodule, ckpt_path)
    if hasattr(model, "prepare_helpers"):  # models it needs (an FID classifier), before its own Trainer
        model.prepare_helpers(trainers)
    trainer = trainers.build(output_dir, cfg=cfg, name=name) if name else trainers.build(output_dir)
    _check_task(cfg, model, trainer)
    weights_only = True if ckpt_path else None  # nothing in a checkpoint can run code

    if task == "fit":
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=weights_only)
        metrics.update(trainer.callback_metrics)
        ckpt_cb = trainer.checkpoint_callback
        if ckpt_cb is not None and getattr(ckpt_cb, "best_model_path", ""):
            metrics.update(
                best_ckpt=ckpt_cb.best_model_path,
                best_score=ckpt_cb.best_model_score,
                last_ckpt=last_checkpoint(trainer),
            )
        if cfg.get("test", True) and trainer.state.status.value == "finished":
            best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            if best:
                log.info("testing the best checkpoint %s", best)
                metrics.update(_test(trainer, model, datamodule, ckpt_path=best, weights_only=True))
            else:  # fast_dev_run and friends save no checkpoint: test the weights in memory
                metrics.update(_test(trainer, model, datamodule))
    elif task == "test":
        metrics.update(_test(trainer, model, datamodule, ckpt_path=ckpt_path, weights_only=weights_only))
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


def write_results_rank0(run_dir: Path, **fields: Any) -> None:
    """DDP: every rank runs the job; rank 0 keeps the record."""
    if rank_zero_only.rank == 0:
        write_results(run_dir, **fields)


def _interrupted(trainers: list[L.Trainer]) -> dict[str, Any] | None:
    """{"last_ckpt": ...} when Ctrl-C stopped one of the run's Trainers (Lightning turns it into exit 1)."""
    for tr in reversed(trainers):
        if tr.interrupted:
            return {"last_ckpt": last_checkpoint(tr) or None}
    return None


def _non_finite(metrics: dict[str, Any]) -> str | None:
    """The first metric that is NaN or infinite: such a run has not completed, whatever it printed."""
    for k, v in sorted(metrics.items()):
        v = to_number(v)
        if isinstance(v, str) and v in ("nan", "inf", "-inf"):
            return f"{k} is {v}"
    return None


def _fail(output_dir: Path, e: BaseException, started: float, record: dict[str, Any]) -> None:
    """Record a failed run; one line on stderr and exit 2 for our own errors (a traceback for bugs);
    in a multirun the job is marked and the sweep goes on (its summary flags the job)."""
    e = root_error(e)
    msg = str(e) if isinstance(e, HybridlearnError) else f"{type(e).__name__}: {e}"
    write_results_rank0(output_dir, status="failed", error=msg, duration_s=round(time.time() - started, 3), **record)
    if is_multirun():
        if isinstance(e, HybridlearnError):
            log.error("job failed: %s", msg)
        else:
            log.error("job failed: %s\n%s", msg, traceback.format_exc())
        return
    if isinstance(e, HybridlearnError):
        raise SystemExit(report_error(e)) from None
    raise e


def _start(cfg: DictConfig, output_dir: Path, record: dict[str, Any]) -> None:
    """Before any work: the checks of a job, the `running` record (with the pid and host), the seed."""
    prepare(cfg, None)  # checked already for a single run (RunGuard); here for each job of a sweep
    if OmegaConf.select(cfg, "logger.wandb.id"):
        record["wandb_id"] = cfg.logger.wandb.id  # a resumed run continues this W&B run
    strategy = str(OmegaConf.select(cfg, "trainer.strategy") or "")
    # ddp reruns the command for ranks 1..N-1, which in a local multirun would rerun the sweep
    if strategy in ("ddp", "ddp_find_unused_parameters_true") and is_multirun() and not os.environ.get("SLURM_NTASKS"):
        raise ConfigError(
            "a local multirun cannot start DDP ranks; use SLURM (hydra.launcher.tasks_per_node) or a single run"
        )
    output_dir.mkdir(parents=True, exist_ok=True)
    write_results_rank0(output_dir, status="running", pid=os.getpid(), host=socket.gethostname(), **record)
    keep_freed_memory(cfg.get("malloc_keep_mb"))  # before the run's tensors (core/memory.py)
    if cfg.get("print_config"):
        print(OmegaConf.to_yaml(cfg, resolve=False), end="", flush=True)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision(cfg.get("matmul_precision", "high"))


def run(cfg: DictConfig) -> dict[str, Any] | None:
    """Run one job described by `cfg`; write `<output_dir>/results.json`; return its metrics. An
    entry is called as `fn(cfg, output_dir, trainers)`, `trainers` the run's TrainerFactory.

    results.json says `running` (with the pid) from the start, so a killed run is visible as such.
    A study may set torch's thread count (`grid.threads`, `study.threads`): the caller gets its own back."""
    threads = torch.get_num_threads()
    try:
        return _run(cfg)
    finally:
        torch.set_num_threads(threads)


def _run(cfg: DictConfig) -> dict[str, Any] | None:
    route_library_logs()  # Lightning's notices and warnings: train.log only (once Hydra's logging is set up)
    output_dir = Path(cfg.paths.output_dir)
    started = time.time()
    record = {
        "task_name": cfg.get("task_name"),
        "seed": cfg.get("seed"),
        "overrides": overrides(),
        "output_dir": str(output_dir.resolve()),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
    }
    trainers = TrainerFactory(cfg)  # every Trainer of this run: W&B closing, Ctrl-C
    # resumed in place: what the stopped attempt measured stays (a fit that had finished trains no
    # further, so its train/val metrics exist only there); an entry (a study) measures everything again
    earlier = (
        read_record(output_dir).get("metrics") or {}
        if cfg.get("ckpt_path") and not cfg.get("entry") and run_of(cfg.ckpt_path) == output_dir.resolve()
        else {}
    )
    metrics: dict[str, Any] = {}
    try:
        _start(cfg, output_dir, record)
        entry = cfg.get("entry")
        if entry:
            metrics = load_entry(entry)(cfg, output_dir, trainers)
        else:
            metrics = _standard_flow(cfg, output_dir, trainers, metrics)
        bad = _non_finite(metrics)
        if bad:
            raise TrainingError(f"{bad}: the run diverged; lower the learning rate (model.lr) or check the data")
    except (Exception, KeyboardInterrupt, SystemExit) as e:
        stopped = _interrupted(trainers.built) if isinstance(e, (KeyboardInterrupt, SystemExit)) else None
        for tr in trainers.built:
            finish_loggers(tr, failed=True)
        if stopped is not None or isinstance(e, KeyboardInterrupt):
            so_far = {**metrics, **{k: v for tr in trainers.built for k, v in tr.callback_metrics.items()}}
            write_results_rank0(
                output_dir,
                status="interrupted",
                metrics={**earlier, **so_far},
                duration_s=round(time.time() - started, 3),
                **(stopped or {}),
                **record,
            )
            print(f"interrupted; resume with ckpt_path={(stopped or {}).get('last_ckpt')}", file=sys.stderr)
            raise SystemExit(130) from None
        if isinstance(e, SystemExit):
            raise
        _fail(output_dir, e, started, record)
        return None
    for tr in trainers.built:  # close W&B runs so each model (and each job of a sweep) leaves a complete run
        finish_loggers(tr)
    if rank_zero_only.rank == 0:  # DDP: every rank runs this function; one record per run
        metrics = {**earlier, **metrics}
        write_results(
            output_dir, status="completed", metrics=metrics, duration_s=round(time.time() - started, 3), **record
        )
        print(f"Run directory: {output_dir.resolve()}")
    return metrics
