"""hparams_search=lenet_optuna: a small Optuna (TPE) search end to end through train.py."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import train_cli

SEARCH = [
    "-m",
    "hparams_search=lenet_optuna",
    "experiment=lenet_mnist",
    "debug=limit",
    "data.train_subset=2000",
    "data.test_subset=500",
    "trainer.enable_progress_bar=false",
    "logger=csv",
]


def _trials(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/results.json")}


def test_optuna_search_runs_three_trials(tmp_path, data_dir):
    sweep = tmp_path / "search"
    p = train_cli([*SEARCH, "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={sweep}"])
    assert p.returncode == 0, p.stderr[-3000:]
    trials = _trials(sweep)
    assert sorted(trials) == ["0", "1", "2"]
    assert all(t["status"] == "completed" for t in trials.values())
    seen = []
    for t in trials.values():  # every trial got its own sampled values from the search space
        o = dict(s.split("=", 1) for s in t["overrides"])
        assert 3e-4 <= float(o["model.lr"]) <= 1e-2
        assert int(o["data.batch_size"]) in (64, 128, 256)
        assert float(o["model.weight_decay"]) in (0.0, 1e-4, 1e-3)
        seen.append((o["model.lr"], o["data.batch_size"], o["model.weight_decay"]))
    assert len(set(seen)) == 3
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["name"] == "optuna"
    assert set(best["best_params"]) == {
        "model.lr",
        "data.batch_size",
        "model.weight_decay",
        "model.net.dropout",
        "model.net.width",
    }
    # what train.py returned to the sweeper is each trial's val/acc: the best is the largest
    accs = [t["metrics"]["val/acc"] for t in trials.values()]
    assert best["best_value"] == pytest.approx(max(accs))
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert [r["status"] for r in rows] == ["completed"] * 3


def test_optuna_search_resumes_from_its_study_database(tmp_path, data_dir):
    """The study lives in a sqlite file beside the task's sweeps (hydra.sweeper.storage): the same
    command again, in a new sweep folder, continues it; the best is over every trial of the study."""
    first, again = tmp_path / "sweeps" / "first", tmp_path / "sweeps" / "again"
    assert train_cli([*SEARCH, "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={first}"]).returncode == 0
    assert (tmp_path / "sweeps" / "optuna.db").is_file()
    p = train_cli([*SEARCH, "hydra.sweeper.n_trials=1", f"hydra.sweep.dir={again}"])
    assert p.returncode == 0, p.stderr[-3000:]
    study = optuna.load_study(study_name="lenet_mnist", storage=f"sqlite:///{tmp_path / 'sweeps' / 'optuna.db'}")
    assert [t.number for t in study.trials] == [0, 1, 2] and {t.state.name for t in study.trials} == {"COMPLETE"}
    values = [t["metrics"]["val/acc"] for sweep in (first, again) for t in _trials(sweep).values()]
    assert sorted(t.value for t in study.trials) == pytest.approx(sorted(values))
    best = yaml.safe_load((again / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(values))  # the first sweep's trials count too
    assert sorted(_trials(first)) == ["0", "1"] and sorted(_trials(again)) == ["0"]  # nothing overwritten


def test_optuna_failed_trial_is_recorded_and_search_goes_on(tmp_path, data_dir):
    sweep = tmp_path / "search"
    # one search dimension: a valid learning rate or an invalid one; with this sampler seed the
    # trials draw -1 (fails validation), then 0.002 twice (optuna 2.10.1)
    p = train_cli(
        [
            *SEARCH,
            "hydra.sweeper.n_trials=3",
            "hydra.sweeper.params=null",
            "model.lr=choice(-1.0,0.002)",
            "hydra.sweeper.sampler.seed=11",
            f"hydra.sweep.dir={sweep}",
        ]
    )
    assert p.returncode == 1, p.stderr[-3000:]  # the multirun summary flags the failed job
    trials = _trials(sweep)
    assert sorted(trials) == ["0", "1", "2"]
    status = {k: (t["status"], dict(s.split("=", 1) for s in t["overrides"])["model.lr"]) for k, t in trials.items()}
    failed = [k for k, (s, lr) in status.items() if s == "failed"]
    assert failed and all(status[k][1] == "-1.0" for k in failed), status
    assert min(failed) < max(status), "the failing trial must not be the last: the search goes on after it"
    assert any(s == "completed" for s, _ in status.values()), status
    assert "model.lr must be > 0" in trials[failed[0]]["error"]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_params"] == {"model.lr": 0.002}


def test_gom_search_scores_inner_validation_only(tmp_path, data_dir):
    """hparams_search=gom_optuna: each trial is a k-fold CV with one member and no forests, its
    list-valued `model.net.hidden` reaches the model, and what the sweeper minimises is the mean of
    the folds' inner-validation km (never the test folds' km)."""
    sweep = tmp_path / "gom_search"
    p = train_cli(
        [
            "-m",
            "hparams_search=gom_optuna",
            "experiment=gom_cv",
            "cv.folds=2",
            "trainer.check_val_every_n_epoch=2",
            "hydra.sweeper.n_trials=2",
            "trainer.max_epochs=choice(2,4)",  # a command-line sweep replaces that search dimension
            "logger=none",
            f"hydra.sweep.dir={sweep}",
        ]
    )
    assert p.returncode == 0, p.stderr[-3000:]
    trials = _trials(sweep)
    assert sorted(trials) == ["0", "1"]
    for t in trials.values():
        assert t["status"] == "completed", t.get("error")
        o = dict(s.split("=", 1) for s in t["overrides"])
        m = t["metrics"]
        assert o["model.net.hidden"] in ("[128]", "[256]", "[512]", "[256,256]")
        assert all(f["epochs_trained"] == int(o["trainer.max_epochs"]) for f in m["cv/folds"])
        assert "cv/baseline_rf_unit_km" not in m and "cv/baseline_knn_km" in m  # forests off, the cheap baselines kept
        assert m["cv/val_km"] == pytest.approx(sum(f["val/km"] for f in m["cv/folds"]) / 2)
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    vals = [t["metrics"]["cv/val_km"] for t in trials.values()]
    assert best["best_value"] == pytest.approx(min(vals))
    tests = [t["metrics"]["cv/km"] for t in trials.values()]
    assert tests[0] != pytest.approx(vals[0])  # the test folds' km is a different number


def test_optuna_search_whose_every_trial_failed_says_so_in_one_line(tmp_path, data_dir):
    """Optuna's sweeper asks its study for the best trial after the trials: with none completed it
    raises; the answer is the jobs' table and the first job's error, not a composition error."""
    sweep = tmp_path / "search"
    p = train_cli(
        [
            *SEARCH,
            "hydra.sweeper.n_trials=2",
            "hydra.sweeper.params=null",
            "model.lr=choice(-1.0,-2.0)",
            f"hydra.sweep.dir={sweep}",
        ]
    )
    assert p.returncode == 2, p.stderr[-3000:]
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the sweep ended without a result"), last
    assert "all 2 jobs failed" in last and "job 0: " in last and "model.lr must be > 0" in last, last
    assert str(sweep / "summary.md") in last
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert [r["status"] for r in rows] == ["failed", "failed"]


def test_a_trial_over_several_seeds_is_scored_on_their_mean(tmp_path, data_dir):
    """repeat.seeds inside a search: each trial fits every seed, and the value the sweeper saw is the
    mean of the seeds' val/acc (read back from each seed's own results.json)."""
    sweep = tmp_path / "search"
    p = train_cli([*SEARCH, "hydra.sweeper.n_trials=2", "repeat.seeds=[1,2]", f"hydra.sweep.dir={sweep}"])
    assert p.returncode == 0, p.stderr[-3000:]
    means = []
    for trial in ("0", "1"):
        seeds = [json.loads((sweep / trial / f"seed_{s}" / "results.json").read_text()) for s in (1, 2)]
        accs = [r["metrics"]["val/acc"] for r in seeds]
        assert accs[0] != accs[1]  # two different fits
        mean = sum(accs) / 2
        assert json.loads((sweep / trial / "results.json").read_text())["metrics"]["val/acc"] == pytest.approx(mean)
        means.append(mean)
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(means))
