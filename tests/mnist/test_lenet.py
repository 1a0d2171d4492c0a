"""The MNIST LeNet-5: the one cached pretraining (Lightning), the confusion matrix at test end,
task=predict, checkpoints that rebuild the module (its network, TTA) without its pretrained weights."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import build, compose_cfg, run_process
from hydra.utils import instantiate

from hybridlearn.core.checkpoint import load_module
from hybridlearn.core.errors import ConfigError
from hybridlearn.core.runner import run
from hybridlearn.core.trainer import TrainerFactory
from hybridlearn.mnist.conf import LeNet5Config, MNISTPretrainConfig
from hybridlearn.mnist.data import load_mnist, to_float
from hybridlearn.mnist.lenet import LeNet5, build_net
from hybridlearn.mnist.pretrain import pretrained_lenet

QUICK = [
    "experiment=lenet_mnist",
    "data.train_subset=3000",
    "data.test_subset=1000",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "logger=csv",
]


def test_pretraining_cached_by_settings_and_rng_neutral(data_dir, tmp_path):
    settings = dict(data_dir=str(data_dir), cache_dir=str(tmp_path / "cache"), epochs=1, subset=2000, augment=False)
    net = build_net()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    sd, info = pretrained_lenet(net, **settings)
    assert torch.equal(before, torch.get_rng_state()), "pretraining moved the caller's global RNG"
    assert 0.3 < info["mnist_test_acc"] <= 1 and Path(info["source"]).is_file()
    assert not torch.equal(sd["head.weight"], net.state_dict()["head.weight"])  # a trained copy, net untouched
    sd2, info2 = pretrained_lenet(build_net(), **settings)  # from the cache
    assert info2 == info and all(torch.equal(v, sd2[k]) for k, v in sd.items())
    pretrained_lenet(build_net(), **{**settings, "lr": 1e-3})  # other settings: another cache entry
    assert len(list((tmp_path / "cache").glob("lenet5_mnist_*.pt"))) == 2


def test_pretraining_augmentation_settings_are_applied(data_dir, tmp_path):
    """`augment` as settings reaches the pretraining's HandwritingAugment: {} is the defaults (the
    weights of augment=true, same seed), elastic + thicker strokes train other weights, and a
    misspelt key fails when the model is built, before any training."""
    settings = dict(data_dir=str(data_dir), cache_dir=str(tmp_path / "cache"), epochs=1, subset=512)
    default, _ = pretrained_lenet(build_net(), **settings, augment=True)
    spelled_out, _ = pretrained_lenet(build_net(), **settings, augment={})
    strong, _ = pretrained_lenet(build_net(), **settings, augment={"elastic": 1.5, "thickness": 1.0})
    assert all(torch.equal(v, spelled_out[k]) for k, v in default.items())
    assert not torch.equal(default["head.weight"], strong["head.weight"])
    with pytest.raises(ConfigError, match="model.pretrain.augment: Key 'elastc'"):
        pretrained_lenet(build_net(), **settings, augment={"elastc": 1.0})
    with pytest.raises(ConfigError, match="model.pretrain.epochs must be >= 1"):
        pretrained_lenet(build_net(), **{**settings, "epochs": 0})
    assert len(list((tmp_path / "cache").glob("lenet5_mnist_*.pt"))) == 3


def test_pretraining_inside_a_run_uses_its_trainer_but_not_its_limits(data_dir, tmp_path):
    """Inside a run the pretraining's Trainer comes from the run's TrainerFactory (its logger writes
    into <run>/lenet_pretrain/), but debug limits such as fast_dev_run do not change what is trained:
    the weights equal those trained outside any run with the same settings (the cache key)."""
    settings = dict(data_dir=str(data_dir), epochs=1, subset=1000, augment=True)
    plain, _ = pretrained_lenet(build_net(), cache_dir=str(tmp_path / "a"), **settings)
    cfg = compose_cfg(["experiment=lenet_mnist", "debug=fdr", "logger=csv"], tmp_path / "run")
    trainers = TrainerFactory(cfg)
    in_run, _ = pretrained_lenet(build_net(), trainers, cache_dir=str(tmp_path / "b"), **settings)
    assert all(torch.equal(v, in_run[k]) for k, v in plain.items())
    assert len(trainers.built) == 1  # the runner sees the pretraining's Trainer (W&B closing, Ctrl-C)
    rows = list(csv.DictReader((tmp_path / "run" / "lenet_pretrain" / "csv" / "metrics.csv").open()))
    assert [r for r in rows if r.get("pretrain/loss_epoch")]  # the run's logger recorded the pretraining


def test_constructing_a_pretrained_lenet_trains_nothing(data_dir, tmp_path):
    """`pretrained: mnist` is trained (or read from its cache) by prepare_helpers with the Trainers
    it is given, or by `setup` quietly; the constructor only remembers the settings."""
    settings = dict(data_dir=str(data_dir), cache_dir=str(tmp_path / "cache"), epochs=1, subset=1000, augment=False)
    config = LeNet5Config(pretrained="mnist", pretrain=MNISTPretrainConfig(**settings))
    model = build(config)
    assert not (tmp_path / "cache").exists(), "the constructor trained a LeNet-5"
    untrained = model.net.head.weight.detach().clone()
    trainers = TrainerFactory()
    model.prepare_helpers(trainers)
    want, _ = pretrained_lenet(build_net(), **settings)  # now from the cache
    assert torch.equal(model.net.head.weight, want["head.weight"]) and not torch.equal(untrained, want["head.weight"])
    assert len(trainers.built) == 1
    model.prepare_helpers(trainers)  # once
    assert len(trainers.built) == 1
    other = build(config)
    other.setup("fit")  # outside a run: the quiet default, here the cache
    assert torch.equal(other.net.head.weight, want["head.weight"])


def test_confusion_matrix_and_task_predict(data_dir, tmp_path):
    out = tmp_path / "fit"
    # a real process: with the `tf` extra installed, TensorBoard's writer imports TensorFlow, whose
    # logging outlives the test's captured streams
    p = run_process("train.py", [*QUICK, "logger=[csv,tensorboard]", f"hydra.run.dir={out}"])
    assert p.returncode == 0, p.stderr[-2000:]
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


def test_a_checkpoint_rebuilds_the_module_without_its_pretrained_weights(lenet_run, data_dir, tmp_path):
    """A run's checkpoint rebuilds its LeNet5 (network, TTA) from the config it keeps
    (core.checkpoint.load_module): the same predictions as the module the run's config builds with the
    checkpoint's weights, the run's test accuracy, and no `model.pretrained` file read (it is gone)."""
    pretrained = tmp_path / "pretrained.ckpt"
    shutil.copy(lenet_run / "checkpoints" / "last.ckpt", pretrained)
    out = tmp_path / "fit"
    overrides = [
        *QUICK,
        "logger=csv",
        f"model.pretrained={pretrained}",
        "+model/tta=rotations",
        "model.tta.rotate=[-6,6]",
        "model.net.dropout=0.2",
    ]
    cfg = compose_cfg(overrides, out)
    run(cfg)
    r = json.loads((out / "results.json").read_text())
    assert r["status"] == "completed", r.get("error")
    pretrained.unlink()
    model = load_module(LeNet5, r["metrics"]["best_ckpt"]).eval()
    assert model.tta is not None and model.tta.rotate == [-6.0, 6.0] and model.pending_weights is None
    assert model.net.classifier[2][1].p == 0.2  # the network of model.net
    raw = load_mnist(data_dir)
    x, y = to_float(raw["test_x"][:1000], "standard"), raw["test_y"][:1000]
    with torch.no_grad():
        probs = model.eval_logits(x).softmax(-1)
    assert float((probs.argmax(1) == y).float().mean()) == pytest.approx(r["metrics"]["test/acc"], abs=1e-6)
    # independently: the module the run's config builds, given the checkpoint's weights
    cfg.model.pretrained = None
    same = instantiate(cfg.model).eval()
    same.load_state_dict(torch.load(r["metrics"]["best_ckpt"], weights_only=True)["state_dict"])
    with torch.no_grad():
        torch.testing.assert_close(same.eval_logits(x).softmax(-1), probs, rtol=0, atol=1e-6)
        plain = same.net(x).softmax(-1)
    assert not torch.allclose(plain, probs, atol=1e-3)  # the TTA counts
    # a model built from the same settings starts from other (random) weights
    assert not torch.equal(build(LeNet5Config()).net.head.weight, model.net.head.weight)
