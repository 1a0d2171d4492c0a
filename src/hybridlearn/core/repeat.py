"""One run, several training seeds (`repeat.seeds=[10,11,12]`) of any experiment: each seed is a normal
fit (and test, unless test=false) into `seed_<s>/` of the run folder, seeded as if `seed=<s>`; the
run's results.json holds, for every number all seeds measured, the mean over seeds under the metric's
own name, its spread as `<name>_seed_std`, and the per-seed table `repeat/seeds` (seeds.md/.csv).

So a sweeper's trial (Optuna's `optimized_metric: val/fid`) is scored on the mean over seeds: a choice
that is good on one seed and unsteady on others loses. A `-m seed=10,11,12` multirun gives the same
per-seed runs as separate jobs (core.multirun summarises them); this is the form one job can hold.
A killed run resumes in place (`ckpt_path=<run>/seed_<s>/checkpoints/last.ckpt hydra.run.dir=<run>`):
finished seeds are read back, each unfinished one resumes from its own last.ckpt, the rest start fresh."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from omegaconf import DictConfig, OmegaConf, open_dict

from hybridlearn.core.results import SEED, to_number, write_results, write_table
from hybridlearn.core.runs import read_record
from hybridlearn.core.trainer import TrainerFactory

log = logging.getLogger(__name__)
Flow = Callable[..., dict[str, Any]]  # core.runner's standard flow: (cfg, output_dir, trainers, metrics, name)


def seed_config(cfg: DictConfig, seed: int, seed_dir: Path) -> DictConfig:
    """The run's config as one plain run of `seed` would have it: the seed set, no repeat, resuming
    the seed's own last.ckpt when a killed run left one."""
    sub = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    last = seed_dir / "checkpoints" / "last.ckpt"
    with open_dict(sub):
        sub.seed = seed
        sub.repeat.seeds = []
        sub.ckpt_path = str(last) if last.is_file() else None
    return sub


def numbers(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numbers among a run's metrics (paths, tables and flags left out)."""
    out = {}
    for k, v in metrics.items():
        v = to_number(v)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[k] = float(v)
    return out


def over_seeds(rows: list[dict[str, float]]) -> dict[str, float]:
    """For each number every seed's row has: the mean under its name, the sample std as `<name>_seed_std`."""
    common = set.intersection(*(set(r) for r in rows)) - {"seed"}
    out = {}
    for k in sorted(common):
        vals = np.array([r[k] for r in rows])
        out[k] = float(vals.mean())
        out[f"{k}_seed_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
    return out


def repeat_seeds(cfg: DictConfig, output_dir: Path, trainers: TrainerFactory, flow: Flow) -> dict[str, Any]:
    """Run `flow` once per seed of `cfg.repeat.seeds` into `seed_<s>/` (finished seeds read back) and
    return the mean over seeds of each metric, its `_seed_std`, and the per-seed table `repeat/seeds`."""
    seeds = [int(s) for s in cfg.repeat.seeds]
    rows = []
    for i, s in enumerate(seeds):
        seed_dir = output_dir / f"{SEED}{s}"
        record = read_record(seed_dir)
        if record.get("status") == "completed":
            metrics = record["metrics"]
            log.info("repeat: seed %d (%d/%d) finished earlier", s, i + 1, len(seeds))
        else:
            log.info("repeat: seed %d (%d/%d)", s, i + 1, len(seeds))
            sub = seed_config(cfg, s, seed_dir)
            L.seed_everything(s, workers=True, verbose=False)
            seed_dir.mkdir(parents=True, exist_ok=True)
            started = time.time()
            write_results(seed_dir, status="running", seed=s)
            measured = flow(sub, seed_dir, trainers, {}, name=seed_dir.name)
            metrics = {k: to_number(v) for k, v in measured.items()}
            write_results(
                seed_dir, status="completed", seed=s, metrics=metrics, duration_s=round(time.time() - started, 3)
            )
        rows.append({"seed": s, **numbers(metrics)})
    summary = over_seeds(rows)
    table = [{"seed": r["seed"], **{k: r.get(k) for k in summary if not k.endswith("_seed_std")}} for r in rows]
    write_table(table, output_dir / "seeds", f"{len(seeds)} training seeds")
    shown = [k for k in dict.fromkeys((cfg.get("optimized_metric"), "test/acc", "test/fid")) if k and k in summary]
    if shown:
        log.info("repeat: %s", ", ".join(f"{k} {summary[k]:.4g} ± {summary[k + '_seed_std']:.2g}" for k in shown))
    return {**summary, "repeat/seeds": rows}
