"""The MNIST LeNet-5: the one cached pretraining (Lightning), the confusion matrix at test end,
task=predict."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from conftest import compose_cfg

from hybridlearn.core.errors import ConfigError
from hybridlearn.core.runner import run
from hybridlearn.core.trainer import TrainerFactory
from hybridlearn.mnist.lenet import LeNet5, LeNet5Net
from hybridlearn.mnist.pretrain import pretrained_lenet

QUICK = [
    "experiment=lenet_mnist",
    "data.train_subset=3000",
    "data.test_subset=1000",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "logger=tensorboard",
]


def test_pretraining_cached_by_settings_and_rng_neutral(data_dir, tmp_path):
    settings = dict(data_dir=str(data_dir), cache_dir=str(tmp_path / "cache"), epochs=1, subset=2000, augment=False)
    net = LeNet5Net()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    sd, info = pretrained_lenet(net, **settings)
    assert torch.equal(before, torch.get_rng_state()), "pretraining moved the caller's global RNG"
    assert 0.3 < info["mnist_test_acc"] <= 1 and Path(info["source"]).is_file()
    assert not torch.equal(sd["head.weight"], net.state_dict()["head.weight"])  # a trained copy, net untouched
    sd2, info2 = pretrained_lenet(LeNet5Net(), **settings)  # from the cache
    assert info2 == info and all(torch.equal(v, sd2[k]) for k, v in sd.items())
    pretrained_lenet(LeNet5Net(), **{**settings, "lr": 1e-3})  # other settings: another cache entry
    assert len(list((tmp_path / "cache").glob("lenet5_mnist_*.pt"))) == 2


def test_pretraining_augmentation_settings_are_applied(data_dir, tmp_path):
    """`augment` as settings reaches the pretraining's HandwritingAugment: {} is the defaults (the
    weights of augment=true, same seed), elastic + thicker strokes train other weights, and a
    misspelt key fails when the model is built, before any training."""
    settings = dict(data_dir=str(data_dir), cache_dir=str(tmp_path / "cache"), epochs=1, subset=512)
    default, _ = pretrained_lenet(LeNet5Net(), **settings, augment=True)
    spelled_out, _ = pretrained_lenet(LeNet5Net(), **settings, augment={})
    strong, _ = pretrained_lenet(LeNet5Net(), **settings, augment={"elastic": 1.5, "thickness": 1.0})
    assert all(torch.equal(v, spelled_out[k]) for k, v in default.items())
    assert not torch.equal(default["head.weight"], strong["head.weight"])
    with pytest.raises(ConfigError, match="model.pretrain.augment"):
        LeNet5(pretrained="mnist", pretrain={**settings, "augment": {"elastc": 1.0}})
    assert len(list((tmp_path / "cache").glob("lenet5_mnist_*.pt"))) == 3


def test_pretraining_inside_a_run_uses_its_trainer_but_not_its_limits(data_dir, tmp_path):
    """Inside a run the pretraining's Trainer comes from the run's TrainerFactory (its logger writes
    into <run>/lenet_pretrain/), but debug limits such as fast_dev_run do not change what is trained:
    the weights equal those trained outside any run with the same settings (the cache key)."""
    settings = dict(data_dir=str(data_dir), epochs=1, subset=1000, augment=True)
    plain, _ = pretrained_lenet(LeNet5Net(), cache_dir=str(tmp_path / "a"), **settings)
    cfg = compose_cfg(["experiment=lenet_mnist", "debug=fdr", "logger=csv"], tmp_path / "run")
    trainers = TrainerFactory(cfg)
    in_run, _ = pretrained_lenet(LeNet5Net(), trainers, cache_dir=str(tmp_path / "b"), **settings)
    assert all(torch.equal(v, in_run[k]) for k, v in plain.items())
    assert len(trainers.built) == 1  # the runner sees the pretraining's Trainer (W&B closing, Ctrl-C)
    rows = list(csv.DictReader((tmp_path / "run" / "lenet_pretrain" / "csv" / "metrics.csv").open()))
    assert [r for r in rows if r.get("pretrain/loss_epoch")]  # the run's logger recorded the pretraining


def test_constructing_a_pretrained_lenet_trains_nothing(data_dir, tmp_path):
    """`pretrained: mnist` is trained (or read from its cache) by prepare_helpers with the Trainers
    it is given, or by `setup` quietly; the constructor only remembers the settings."""
    settings = dict(data_dir=str(data_dir), cache_dir=str(tmp_path / "cache"), epochs=1, subset=1000, augment=False)
    model = LeNet5(pretrained="mnist", pretrain=settings)
    assert not (tmp_path / "cache").exists(), "the constructor trained a LeNet-5"
    untrained = model.net.head.weight.detach().clone()
    trainers = TrainerFactory()
    model.prepare_helpers(trainers)
    want, _ = pretrained_lenet(LeNet5Net(), **settings)  # now from the cache
    assert torch.equal(model.net.head.weight, want["head.weight"]) and not torch.equal(untrained, want["head.weight"])
    assert len(trainers.built) == 1
    model.prepare_helpers(trainers)  # once
    assert len(trainers.built) == 1
    other = LeNet5(pretrained="mnist", pretrain=settings)
    other.setup("fit")  # outside a run: the quiet default, here the cache
    assert torch.equal(other.net.head.weight, want["head.weight"])


def test_confusion_matrix_and_task_predict(data_dir, tmp_path):
    out = tmp_path / "fit"
    run(compose_cfg(QUICK, out))
    r = json.loads((out / "results.json").read_text())
    assert r["status"] == "completed", r.get("error")
    png = out / "confusion_matrix.png"
    assert png.stat().st_size > 5_000 and r["metrics"]["confusion_matrix"] == str(png)
    events = list((out / "tensorboard").rglob("events.out.tfevents.*"))
    assert any(b"test/confusion_matrix" in e.read_bytes() for e in events), "figure not in TensorBoard"

    ckpt = r["metrics"]["last_ckpt"]
    pred_dir = tmp_path / "predict"
    run(compose_cfg([*QUICK, "task=predict", f"ckpt_path={ckpt}"], pred_dir))
    p = json.loads((pred_dir / "results.json").read_text())
    assert p["status"] == "completed", p.get("error")
    path = Path(p["metrics"]["predictions"])
    assert path == pred_dir / "predictions.csv"
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 1000 == p["metrics"]["n"] and list(rows[0]) == ["index", "digit", "confidence", "label"]
    assert [int(x["index"]) for x in rows] == list(range(1000))
    assert all(0.1 <= float(x["confidence"]) <= 1 for x in rows)
    acc = sum(x["digit"] == x["label"] for x in rows) / len(rows)
    assert acc == pytest.approx(r["metrics"]["test/acc"], abs=1e-6) == p["metrics"]["predict/acc"]
