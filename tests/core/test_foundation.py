"""The core: config composition, the LeNet-5 MNIST run, results.json, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import CONF_DIR, compose_cfg, train_cli
from omegaconf import OmegaConf

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
# short names (experiment=gan is `defaults: [gan_mnist]` only; test_daily_use checks they compose the same)
ALIASES = {e for e in EXPERIMENTS if set(OmegaConf.load(CONF_DIR / "experiment" / f"{e}.yaml")) == {"defaults"}}


def test_experiments_exist():
    assert "lenet_mnist" in EXPERIMENTS and ALIASES == {"gan", "gom", "digits", "mnist", "style"}


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes(experiment, tmp_path):
    cfg = compose_cfg([f"experiment={experiment}"], tmp_path)
    assert cfg.task_name
    assert cfg.data is None or "_target_" in cfg.data or cfg.get("entry")


# fdr does not shorten the MNIST pretraining (a 1-batch model would be cached as the real one), so
# the test asks for a small one itself: a fresh machine would otherwise pretrain 20 epochs here
SMALL_PRETRAIN = {
    "lenet_digits_transfer": "model.pretrain",
    "digits_study": "study.variants.transfer.model.pretrain",
}


# `reproduce` drives the other experiments as subprocesses at the paper's scale: tests/reproduce runs it tiny
@pytest.mark.parametrize("experiment", [e for e in EXPERIMENTS if e != "reproduce" and e not in ALIASES])
def test_experiment_fast_dev_run(experiment, run_train, data_dir):
    key = SMALL_PRETRAIN.get(experiment)
    small = [f"{key}.epochs=1", f"{key}.subset=2000"] if key else []
    res = run_train([f"experiment={experiment}", "debug=fdr", *small])
    assert res["status"] == "completed", res.get("error")
    if res["metrics"].get("cv/forest_trees"):  # GOM's k-fold CV under fdr: 2 folds, 5-tree forests
        assert (len(res["metrics"]["cv/folds"]), res["metrics"]["cv/forest_trees"]) == (2, 5)
    assert res["seed"] is not None and f"experiment={experiment}" in res["overrides"]


def test_lenet_mnist_one_epoch_accuracy(run_train, data_dir):
    # One epoch over the 55k training images (~10 s on 2 cores), tested on the full 10k test set.
    res = run_train(
        [
            "experiment=lenet_mnist",
            "trainer.max_epochs=1",
            "trainer.enable_progress_bar=false",
            "logger=csv",
        ]
    )
    m = res["metrics"]
    assert res["status"] == "completed"
    assert m["test/acc"] >= 0.97, m
    out = Path(res["_dir"])
    assert (out / "checkpoints" / "last.ckpt").exists()
    assert Path(m["best_ckpt"]).exists() and Path(m["last_ckpt"]).name == "last.ckpt"
    # the CSV logger recorded train, val and test metrics
    header = (out / "csv" / "metrics.csv").read_text().splitlines()[0]
    for key in ("train/loss_epoch", "train/acc", "val/loss", "val/acc", "test/loss", "test/acc"):
        assert key in header

    # the best checkpoint rebuilds the module safely and reproduces the reported test accuracy
    from hydra.utils import instantiate

    from hybridlearn.core.checkpoint import load_module
    from hybridlearn.mnist.lenet import LeNet5

    model = load_module(LeNet5, m["best_ckpt"]).eval()
    dm = instantiate(compose_cfg(["experiment=lenet_mnist"], out).data)
    dm.setup()
    x, y = dm.tensors["test"]
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert acc == pytest.approx(m["test/acc"], abs=1e-6)


def test_cli_run_prints_dir_and_writes_results(tmp_path, data_dir):
    p = train_cli(["experiment=lenet_mnist", "debug=fdr", f"hydra.run.dir={tmp_path}/r", "model.lr=0.01"])
    assert p.returncode == 0, p.stderr[-2000:]
    assert f"Run directory: {tmp_path}/r" in p.stdout
    res = json.loads((tmp_path / "r" / "results.json").read_text())
    assert res["overrides"] == ["experiment=lenet_mnist", "debug=fdr", "model.lr=0.01"]
    assert res["status"] == "completed" and "test/acc" in res["metrics"]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["experiment=nope"], "unknown experiment 'nope'"),
        (["model.nonexistent_key=1"], "nonexistent_key"),
        (["model.lr=-0.1"], "model.lr must be > 0"),
        (["model.lr=0"], "model.lr must be > 0"),
        (["data.batch_size=0"], "data.batch_size must be >= 1"),
        (["data.batch_size=-5"], "data.batch_size must be >= 1"),
        (["ckpt_path=/nonexistent/last.ckpt"], "ckpt_path=/nonexistent/last.ckpt is not a file"),
    ],
)
def test_bad_config_fails_before_training(args, needle, tmp_path):
    p = train_cli(["experiment=lenet_mnist", f"hydra.run.dir={tmp_path}/r", *args], timeout=120)
    assert p.returncode != 0
    assert needle in p.stderr, p.stderr[-2000:]
    assert not (tmp_path / "r" / "checkpoints").exists()  # nothing trained


def test_missing_data_one_line_error(tmp_path):
    p = train_cli(
        [
            "experiment=lenet_mnist",
            f"hydra.run.dir={tmp_path}/r",
            f"paths.data_dir={tmp_path}/empty",
            "data.mirrors=[]",
        ],
        timeout=120,
    )
    assert p.returncode == 2
    err = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1
    assert f"{tmp_path}/empty/mnist" in err[0] and "train-images-idx3-ubyte.gz" in err[0] and "DATA_DIR" in err[0]
    assert "Traceback" not in p.stderr


def test_constructor_config_error_is_one_line(tmp_path):
    # raised inside MNISTDataModule.__init__, i.e. wrapped by Hydra's instantiate
    p = train_cli(["experiment=lenet_mnist", f"hydra.run.dir={tmp_path}/r", "data.value_range=bogus"], timeout=120)
    assert p.returncode == 2
    assert "error: data.value_range must be one of unit, tanh, standard (got 'bogus')" in p.stderr
    assert "Traceback" not in p.stderr
