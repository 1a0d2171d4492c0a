"""The study's leave-one-writer-out by core.cv (issue 34.2): the fold that holds out a writer is the
plain held-out-writer fit (`data.test_writer=<w>`), digit for digit, and a killed study resumes at its
finished folds."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import compose_cfg

from hybridlearn.core.errors import ConfigError
from hybridlearn.core.runs import prepare
from hybridlearn.core.trainer import TrainerFactory
from hybridlearn.digits.conf import study_settings
from hybridlearn.digits.fitting import PROBABILITIES, fit_one, fit_writers_out

WRITER, SEED, EPOCHS = "JuanRengifo", 3, 2


def test_writer_fold_is_the_held_out_writer_fit(data_dir, tmp_path):
    cfg = compose_cfg(
        [
            "experiment=digits_study",
            f"paths.cache_dir={tmp_path / 'cache'}",
            "logger=none",
            "trainer.enable_progress_bar=false",
            "study.variants.transfer.model.pretrain.epochs=1",
            "study.variants.transfer.model.pretrain.subset=2000",
            "study.variants.transfer.model.ensemble=1",
        ],
        tmp_path,
    )
    transfer, trainers = study_settings(cfg).variants.transfer, TrainerFactory(cfg)
    # the old way: one fit per writer (its MNIST pretraining is trained here, then read from the cache)
    old = fit_one(trainers, cfg, "old", SEED, EPOCHS, tmp_path, transfer, {"data": {"test_writer": WRITER}})
    folds = fit_writers_out(trainers, cfg, "lowo_transfer", SEED, EPOCHS, tmp_path, transfer, writers=3)
    assert sorted(folds) == ["JuanRengifo", "cossio", "jpossaz"]
    probs, labels, members = folds[WRITER]
    assert members == []  # one network: no member files
    assert torch.equal(labels, old["labels"])
    # the same split, initialisation, batches and augmentation draws: the same weights, so the same numbers
    assert torch.equal(probs, old["probs"])
    assert 0.2 < float((probs.argmax(1) == labels).float().mean()) == old["test_acc"]

    # a killed study: one fold's fit unfinished (its results.json says running), the others finished
    out = tmp_path / "runs" / f"lowo_transfer_seed{SEED}"
    fold = out / "fold_1"
    finished = {p: p.stat().st_mtime_ns for p in out.glob("fold_*/results.json") if p.parent != fold}
    record = json.loads((fold / "results.json").read_text())
    (fold / "results.json").write_text(json.dumps({**record, "status": "running"}))
    (fold / PROBABILITIES).unlink()
    again = fit_writers_out(trainers, cfg, "lowo_transfer", SEED, EPOCHS, tmp_path, transfer, writers=3)
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # finished folds read back, not refitted
    assert json.loads((fold / "results.json").read_text())["status"] == "completed"
    for w, (p, y, _) in folds.items():  # the unfinished fold resumed from its last.ckpt: the same model
        assert torch.equal(again[w][0], p) and torch.equal(again[w][1], y), w

    # ... which `train.py experiment=digits_study hydra.run.dir=<run> ckpt_path=<a fold's last.ckpt>` does:
    # the run guard takes a study's fold checkpoint for its run (its schedule is the fold's own)
    (tmp_path / "results.json").write_text(json.dumps({"status": "interrupted"}))
    with pytest.raises(ConfigError, match=r"already holds a run .*ckpt_path=.*runs/lowo_transfer_seed3/fold_2/"):
        prepare(cfg.copy(), tmp_path)
    resumed = cfg.copy()
    resumed.ckpt_path = str(fold / "checkpoints" / "last.ckpt")
    prepare(resumed, tmp_path)
