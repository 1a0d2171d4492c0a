"""W&B as users expect it (offline runs parsed from their transaction log): every run finished,
failed ones marked failed, readable unique names, tags, checkpoints as artifacts with log_model."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import read_wandb_records
from test_runs import QUICK


def wandb_records(run_dir: Path, n_runs: int = 1) -> list[list]:
    """The records of every offline W&B run under `run_dir`, once each has its exit record."""
    files = sorted(Path(run_dir).rglob("offline-run-*/run-*.wandb"))
    assert len(files) == n_runs, files
    out = []
    for f in files:
        deadline = time.time() + 60  # wandb-core writes the log asynchronously after finish()
        while True:
            recs = read_wandb_records(f)
            if any(r.WhichOneof("record_type") == "exit" for r in recs):
                break
            assert time.time() < deadline, f"{f} never got its exit record (the run was left open)"
            time.sleep(0.5)
        out.append(recs)
    return out


def of_type(recs, kind: str):
    return [getattr(r, kind) for r in recs if r.WhichOneof("record_type") == kind]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")


def test_completed_run_name_tags_and_checkpoint_artifact(run_train, data_dir):
    res = run_train(
        [*QUICK, "debug=limit", "logger=wandb", "logger.wandb.log_model=true", "tags=[paper,quick]", "model.lr=0.003"]
    )
    assert res["status"] == "completed"
    (recs,) = wandb_records(Path(res["_dir"]) / "wandb")
    (run,) = of_type(recs, "run")
    assert run.display_name.startswith("debug_") and "model.lr=0.003" in run.display_name
    assert list(run.tags) == ["paper", "quick"]
    assert of_type(recs, "exit")[0].exit_code == 0
    artifacts = of_type(recs, "artifact")
    assert artifacts and any(a.type == "model" for a in artifacts), "log_model=true uploads the checkpoints"


def test_names_differ_between_runs(run_train, data_dir):
    names = []
    for i in range(2):
        res = run_train([*QUICK, "debug=limit", "trainer.max_epochs=1", "logger=wandb"], name=f"r{i}")
        (recs,) = wandb_records(Path(res["_dir"]) / "wandb")
        names.append(of_type(recs, "run")[0].display_name)
    assert names[0] != names[1]


def test_failed_run_is_marked_failed(run_train, tmp_path, data_dir):
    with pytest.raises(SystemExit):  # the model has nothing to predict: refused after the W&B run started
        run_train(["experiment=gom_mlp", "task=predict", "logger=wandb"])
    (recs,) = wandb_records(tmp_path / "run" / "wandb")  # run_train's folder for name="run"
    assert of_type(recs, "exit")[0].exit_code != 0
