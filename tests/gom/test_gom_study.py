"""GOM through Lightning: every hybrid / CV fold is trained by the run's configured Trainer (one W&B
run per model, trainer overrides reach each), Lightning's EarlyStopping gives the paper's and the
hybrid's stopping rules, short files fail with one line, and the 116-feature (chromatic) set."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import compose_cfg, read_wandb_records

from hybridlearn.core.config import validate
from hybridlearn.core.download import md5sum
from hybridlearn.core.errors import ConfigError, DataError
from hybridlearn.gom import data as gom_data
from hybridlearn.gom.data import FEATURE_SETS, GOM_FILE, MIN_SPLIT_ROWS, ensure_gom, prepare_gom
from hybridlearn.gom.grid import NetSpec, train_sigmoid_grid
from hybridlearn.gom.nets import mlp_sizes

CHROMATIC = FEATURE_SETS["chromatic"]


@pytest.fixture(scope="module")
def real_rows(data_dir) -> list[str]:
    return (data_dir / "gom" / GOM_FILE).read_text().splitlines()


def _file(tmp_path: Path, rows: list[str], name: str = "gom.txt") -> Path:
    p = tmp_path / name
    p.write_text("\n".join(rows) + "\n")
    return p


def _chromatic_rows(real_rows: list[str], n: int) -> list[str]:
    """A file in the chromatic format: the real 68 features + 48 made-up chroma columns, lat, lon."""
    rng = np.random.default_rng(0)
    out = []
    for line in real_rows[:n]:
        c = line.split(",")
        out.append(",".join(c[:68] + [f"{v:.6f}" for v in rng.random(48)] + c[68:]))
    return out


# ------------------------------------------------------------------------------ stopping rules
def test_energy_threshold_stop_matches_grid(run_train, data_dir):
    """The paper's `average training energy < stop_energy` rule, through Lightning's EarlyStopping:
    a network that meets it stops at the grid engine's epoch, with the grid's numbers."""
    r = run_train(
        [
            "experiment=gom_mlp",
            "seed=0",
            "trainer.max_epochs=25",
            "logger=none",
            "model.net.depth=1",
            "model.net.width=5",
            "model.lr=0.9",
            "model.stop_energy=0.045",
        ]
    )
    assert r["status"] == "completed", r.get("error")
    m = r["metrics"]
    d = prepare_gom(data_dir, seed=0)
    g = train_sigmoid_grid(
        [NetSpec(tuple(mlp_sizes(68, 1, 5)), 0.9, 0)],
        d.x_train,
        d.y_train,
        d.x_val,
        d.y_val,
        epochs=25,
        stop_energy=0.045,
    )
    assert m["epochs_run"] == int(g.epochs_run[0]) < 25  # stopped early, at the same epoch
    assert m["history"]["train_energy"][-1] < 0.045 <= min(m["history"]["train_energy"][:-1])
    np.testing.assert_allclose(m["history"]["train_energy"], g.train_energy[0, : m["epochs_run"]], atol=1e-5)
    assert abs(m["best_val_energy"] - float(g.best_val[0])) <= 1e-5 and m["best_epoch"] == int(g.best_epoch[0])


def test_hybrid_patience_stops_like_the_rule(run_train):
    """`early_stop_patience`: the fit ends at the first epoch with `patience` validations in a row
    without a lower val loss, recomputed here from the logged history."""
    p = 2
    r = run_train(
        [
            "experiment=gom_hybrid",
            "model.autoencoder.hidden=5",
            "model.autoencoder.epochs=2",
            "model.lr=0.2",
            "trainer.max_epochs=40",
            f"model.early_stop_patience={p}",
            "model.early_stop_on=loss",
            "logger=none",
        ]
    )
    assert r["status"] == "completed", r.get("error")
    val = r["metrics"]["history"]["val_loss"]
    best, bad, expected = float("inf"), 0, None
    for epoch, v in enumerate(val, start=1):
        best, bad = (v, 0) if v < best else (best, bad + 1)
        if bad >= p:
            expected = epoch
            break
    assert expected is not None and expected < 40, val  # the rule fired inside the budget
    assert r["metrics"]["epochs_run"] == len(val) == expected


# ------------------------------------------------------------------------------ short files
def test_short_file_one_line_error(run_train, tmp_path, real_rows):
    p = _file(tmp_path, real_rows[:20])
    with pytest.raises(SystemExit) as e:
        run_train(["experiment=gom_mlp", f"data.file={p}", "trainer.max_epochs=1", "logger=none"])
    assert e.value.code == 2
    err = json.loads((tmp_path / "run" / "results.json").read_text())["error"]
    assert "\n" not in err and str(p) in err, err
    assert "12/4/4" in err and f"at least {MIN_SPLIT_ROWS} rows in every split" in err, err
    with pytest.raises(DataError, match="fewer folds"):  # 100 rows, 20 folds: test folds of 5
        prepare_gom(tmp_path, path=_file(tmp_path, real_rows[:100], "h.txt"), fold=(range(5, 100), range(5)))


def test_knn_baseline_adapts_k_to_a_short_file(run_train, tmp_path, real_rows):
    """50 rows: 30 training tracks, fewer than the largest k (40) the baseline tries."""
    p = _file(tmp_path, real_rows[:50])
    r = run_train(["experiment=gom_mlp", f"data.file={p}", "trainer.max_epochs=2", "logger=none"])
    assert r["status"] == "completed", r.get("error")
    m = r["metrics"]
    assert 1 <= m["test/baseline_knn_k"] <= 30 and m["test/baseline_knn_km"] > 0


# ------------------------------------------------------------------------------ feature sets
def test_chromatic_feature_set(tmp_path, real_rows, monkeypatch):
    """data.features=chromatic reads 116 feature columns (a small file in its format is made here) and sizes the models from it."""
    f = _file(tmp_path, _chromatic_rows(real_rows, 60))
    d = prepare_gom(tmp_path, seed=0, path=f, features="chromatic")
    assert d.n_features == 116 and d.x_train.shape == (36, 116) and d.features == "chromatic"
    np.testing.assert_array_equal(d.yd_test.numpy(), np.loadtxt(f, delimiter=",")[d.idx_test, 116:])
    assert prepare_gom(tmp_path, path=f, features="chromatic", n_features=100).x_val.shape[1] == 100
    with pytest.raises(DataError, match=r"expected 118 comma-separated columns \(116 features"):
        prepare_gom(tmp_path, path=_file(tmp_path, real_rows[:60], "d.txt"), features="chromatic")
    cfg = compose_cfg(["experiment=gom_cv", "data.features=chromatic"], tmp_path / "c")
    assert cfg.data.n_features == cfg.model.net.n_inputs == 116
    with pytest.raises(ConfigError, match=r"data.n_features must be <= 116, the feature columns of data.features="):
        validate(compose_cfg(["experiment=gom_cv", "data.features=chromatic", "data.n_features=117"], tmp_path / "c"))
    # the canonical file: not downloadable here -> one line naming it; a short copy is refused
    monkeypatch.setattr(gom_data, "GOM_ZIP_URLS", ())
    with pytest.raises(DataError, match=CHROMATIC.file):
        ensure_gom(tmp_path / "none", "chromatic")
    (tmp_path / "gom").mkdir()
    _file(tmp_path / "gom", _chromatic_rows(real_rows, 60), CHROMATIC.file)
    with pytest.raises(DataError, match=f"does not match the expected {CHROMATIC.md5}"):
        ensure_gom(tmp_path, "chromatic")


def test_chromatic_md5_pinned():
    """The 116-feature file is pinned like the default one, and the shared copy matches the pin."""
    assert CHROMATIC.md5 == "95ab9b156caba3208915dc13c0d106d8"
    assert md5sum(ensure_gom(os.environ["DATA_DIR"], "chromatic")) == CHROMATIC.md5


def test_study_with_116_features(run_train, tmp_path, real_rows):
    """Grids and hybrids with 116 inputs: M1 < 116 < M2 hidden units."""
    f = _file(tmp_path, _chromatic_rows(real_rows, 80))
    r = run_train(
        [
            "experiment=gom_study",
            "data.features=chromatic",
            f"data.file={f}",
            "grid.depths=[1]",
            "grid.widths=[2]",
            "grid.mlp_lrs=[0.1]",
            "grid.ae_hidden=[4,120]",
            "grid.ae_lrs=[0.1]",
            "grid.epochs=2",
            "study.hybrid_epochs=1",
            "model.autoencoder.epochs=2",
            "logger=none",
        ]
    )
    assert r["status"] == "completed", r.get("error")
    m = r["metrics"]
    assert m["autoencoder_M1_best"]["hidden"] == 4 and m["autoencoder_M2_best"]["hidden"] == 120
    assert m["hybrid"]["M1"]["test/km"] > 0 and m["hybrid"]["M2"]["test/km"] > 0


# ------------------------------------------------------------------------------ W&B: one run per model
def _wandb_runs(folder: Path) -> list[dict]:
    """name and config of every offline W&B run under `folder` (after its exit record is written)."""
    read = read_wandb_records
    runs = []
    for log in sorted(folder.glob("**/wandb/offline-run-*/run-*.wandb")):
        deadline = time.time() + 60  # wandb-core writes the log asynchronously after finish()
        while not any(rec.WhichOneof("record_type") == "exit" for rec in read(log)):
            assert time.time() < deadline, f"{log}: no exit record"
            time.sleep(0.5)
        recs = read(log)
        run = {"dir": log.parents[2], "name": None, "config": {}}
        for rec in recs:
            kind = rec.WhichOneof("record_type")
            items = rec.run.config.update if kind == "run" else rec.config.update if kind == "config" else []
            if kind == "run":
                run["name"] = rec.run.display_name
            for it in items:
                run["config"][it.key or "/".join(it.nested_key)] = json.loads(it.value_json)
        runs.append(run)
    return runs


def _trainer_setting(run: dict, key: str):
    tr = run["config"]["trainer"]
    return (tr.get("value", tr) if isinstance(tr, dict) else tr)[key]


def test_study_and_cv_models_have_their_own_wandb_runs(run_train, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    common = ["logger=wandb", "trainer.max_epochs=2", "trainer.log_every_n_steps=3", "model.autoencoder.epochs=2"]
    r = run_train(
        [
            "experiment=gom_study",
            "grid.depths=[1]",
            "grid.widths=[1,2]",
            "grid.mlp_lrs=[0.1]",
            "grid.ae_hidden=[4,70]",
            "grid.ae_lrs=[0.1]",
            "grid.epochs=2",
            *common,
        ],
        name="study",
    )
    assert r["status"] == "completed", r.get("error")
    cv = run_train(["experiment=gom_cv", "cv.folds=2", "study.forest_trees=5", *common], name="cv")
    assert cv["status"] == "completed", cv.get("error")
    for res, models in ((r, ["hybrid_M1", "hybrid_M2"]), (cv, ["fold_0", "fold_1"])):
        out = Path(res["_dir"])
        runs = _wandb_runs(out)
        # one run per trained model, in the model's own folder, named <run name>/<model>
        assert sorted(run["dir"].name for run in runs) == models
        names = sorted(run["name"] for run in runs)
        assert [n.rsplit("/", 1)[-1] for n in names] == models and len({n.rsplit("/", 1)[0] for n in names}) == 1
        for run in runs:  # the command line's trainer overrides reached every model
            assert _trainer_setting(run, "max_epochs") == 2 and _trainer_setting(run, "log_every_n_steps") == 3
        for m in models:  # and its checkpoints are in its folder
            assert list((out / m / "checkpoints").glob("*.ckpt")), m
    assert r["metrics"]["hybrid"]["M1"]["epochs_trained"] == 2
    assert all(f["epochs_trained"] == 2 for f in cv["metrics"]["cv/folds"])
