"""Scale-out paths tested on this machine: Lightning DDP over 2 CPU processes (gloo), Hydra's
submitit launcher (the SLURM path, run locally), and the GPU/TPU/DDP trainer configs (compose only)."""

from __future__ import annotations

import csv
import inspect
import json
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import compose_cfg, run_process, train_cli

from hybridlearn.core.config import validate
from hybridlearn.core.errors import ConfigError

# per-process batch 64 x 2 processes = the global batch 128 of a single-process run
DDP = ["trainer=ddp_cpu", "trainer.devices=2", "data.batch_size=64"]
SMALL = [
    "experiment=lenet_mnist",
    "data.train_subset=2000",
    "data.test_subset=2000",
    "data.eval_batch_size=500",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "logger=csv",
]


def _results(run_dir: Path) -> dict:
    found = list(run_dir.rglob("results.json"))
    assert len(found) == 1, found
    return json.loads(found[0].read_text())


def _assert_two_ranks(p, run_dir: Path) -> None:
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-3000:]
    # Lightning's launch notices go to train.log, not to the console (core.logs)
    log = (run_dir / "train.log").read_text()
    assert "distributed_backend=gloo" in log and "Starting with 2 processes" in log, log[-3000:]
    assert out.count("Run directory:") == 1, "only rank 0 may finish the run (results.json, summary)"
    assert out.count("testing the best checkpoint") <= 1, "one copy of each console line (rank 0's)"


@pytest.mark.parametrize("name", ["gpu", "tpu", "ddp", "ddp_cpu"])
def test_trainer_configs_compose_and_validate(name, tmp_path):
    cfg = compose_cfg(["experiment=lenet_mnist", f"trainer={name}"], tmp_path)
    if cfg.trainer.accelerator == "gpu" and not Path("/proc/driver/nvidia/gpus").is_dir():
        with pytest.raises(ConfigError, match="trainer.accelerator=gpu, but this machine has no NVIDIA GPU"):
            validate(cfg)  # refused before torch, in one line (core.conf.TrainerConfig)
    else:
        validate(cfg)
    known = set(inspect.signature(L.Trainer.__init__).parameters)
    unknown = {k for k in cfg.trainer if not k.startswith("_")} - known
    assert not unknown, f"conf/trainer/{name}.yaml: not Trainer arguments: {unknown}"
    assert cfg.trainer.accelerator == {"gpu": "gpu", "tpu": "tpu", "ddp": "gpu", "ddp_cpu": "cpu"}[name]
    # no model here has BatchNorm, so sync_batchnorm would only add a wrapper pass
    assert not cfg.trainer.get("sync_batchnorm", False)


def test_ddp_cpu_two_processes_one_result_synced_metrics(tmp_path, data_dir):
    run = tmp_path / "ddp"
    p = run_process("train.py", [*SMALL, *DDP, f"hydra.run.dir={run}"])  # ranks are processes
    _assert_two_ranks(p, run)
    res = _results(run)
    assert res["status"] == "completed"
    assert sorted(f.name for f in (run / "checkpoints").iterdir()) == ["epoch_000.ckpt", "last.ckpt"]
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    # 2000 training images in batches of 64: 32 batches, split over 2 ranks = 16 steps
    assert ckpt["global_step"] == 16
    # the test metrics are those of the whole test set: the same checkpoint tested by one process
    # gives the same accuracy and loss (2000 images = 4 batches of 500, 2 per rank, no padding)
    single = train_cli(
        [*SMALL, "task=test", f"ckpt_path={res['metrics']['best_ckpt']}", f"hydra.run.dir={tmp_path / 'one'}"]
    )
    assert single.returncode == 0, single.stderr[-3000:]
    ref = _results(tmp_path / "one")["metrics"]
    for key in ("test/acc", "test/loss"):
        assert res["metrics"][key] == pytest.approx(ref[key], abs=1e-5), key


@pytest.mark.slow
def test_ddp_cpu_full_epoch_matches_single_process(tmp_path, data_dir):
    """1 full epoch of lenet_mnist, global batch 128 both ways: test accuracy within 0.5 point."""
    common = ["experiment=lenet_mnist", "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "logger=csv"]
    one = train_cli([*common, f"hydra.run.dir={tmp_path / 'one'}"])
    assert one.returncode == 0, one.stderr[-3000:]
    ddp = run_process("train.py", [*common, *DDP, f"hydra.run.dir={tmp_path / 'ddp'}"])
    _assert_two_ranks(ddp, tmp_path / "ddp")
    a, b = _results(tmp_path / "one")["metrics"]["test/acc"], _results(tmp_path / "ddp")["metrics"]["test/acc"]
    assert a > 0.95 and abs(a - b) < 0.005, (a, b)


def test_gan_manual_optimization_under_ddp(tmp_path, data_dir):
    run = tmp_path / "gan"
    p = run_process(
        "train.py",
        [
            "experiment=gan_mnist",
            *DDP,
            # the D step's loss does not reach G's weights: DDP must look for unused parameters
            "trainer.strategy=ddp_find_unused_parameters_true",
            "data.train_subset=512",
            "trainer.max_epochs=1",
            "model.fid.enabled=false",
            "callbacks.model_checkpoint.monitor=null",
            "~callbacks.gan_samples",
            "test=false",
            "trainer.enable_progress_bar=false",
            "logger=csv",
            f"hydra.run.dir={run}",
        ],
    )
    _assert_two_ranks(p, run)
    m = _results(run)["metrics"]
    assert all(torch.isfinite(torch.tensor(m[k])) for k in ("train/d_loss", "train/g_loss")), m
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    # 512 images in batches of 64 = 8 batches, 4 per rank; each makes a D step and a G step
    assert ckpt["global_step"] == 8
    assert len(ckpt["optimizer_states"]) == 2


def test_submitit_local_multirun_has_the_basic_launchers_summary(tmp_path, data_dir):
    args = ["-m", *SMALL, "data.train_subset=1000", "data.test_subset=500", "model.lr=0.002,0.005"]
    rows = {}
    for launcher in ("basic", "submitit_local"):
        sweep = tmp_path / launcher
        p = train_cli([*args, f"hydra/launcher={launcher}", f"hydra.sweep.dir={sweep}"])
        assert p.returncode == 0, p.stderr[-3000:]
        rows[launcher] = list(csv.DictReader((sweep / "summary.csv").open()))
    basic, sub = rows["basic"], rows["submitit_local"]
    assert [r["job"] for r in sub] == [r["job"] for r in basic] == ["0", "1"]
    assert list(sub[0]) == list(basic[0])  # same columns
    for b, s in zip(basic, sub):
        assert s["status"] == b["status"] == "completed"
        assert s["overrides"].replace("hydra/launcher=submitit_local", "") == b["overrides"].replace(
            "hydra/launcher=basic", ""
        )
        # same seed, data and model: the same run in another process (thread counts may differ)
        assert float(s["test/acc"]) == pytest.approx(float(b["test/acc"]), abs=0.01)
