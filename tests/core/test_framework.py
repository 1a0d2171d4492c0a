"""Framework features any experiment gets without code of its own: a user's tiny experiment (data
module + model + YAML, in a temporary folder on Hydra's search path) gets seed summaries from
`-m seed=0,1,2`, one run over several seeds from `repeat.seeds=[3,5,7]` and k-fold cross-validation
from `cv.folds=3`, both resumable fold by fold or seed by seed."""

from __future__ import annotations

import json
import math
import textwrap

import pytest
from conftest import run_cli

TOY = '''
import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class ToyData(L.LightningDataModule):
    """120 points in 2-D, labelled by a line; 4 groups (e.g. writers) by index."""

    def __init__(self, n: int, batch_size: int):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 2, generator=g)
        self.y = (self.x[:, 0] + 0.5 * self.x[:, 1] > 0).long()
        self.train, self.val, self.test = list(range(0, 80)), list(range(80, 100)), list(range(100, n))
        self.batch_size = batch_size

    def cv_groups(self, group_by):
        return list(range(len(self.x))) if group_by is None else [f"g{i % 4}" for i in range(len(self.x))]

    def use_fold(self, train, test):
        cut = len(train) // 5
        self.val, self.train, self.test = train[:cut], train[cut:], list(test)

    def _loader(self, idx, shuffle=False):
        return DataLoader(TensorDataset(self.x[idx], self.y[idx]), batch_size=self.batch_size, shuffle=shuffle)

    def train_dataloader(self):
        return self._loader(self.train, shuffle=True)

    def val_dataloader(self):
        return self._loader(self.val)

    def test_dataloader(self):
        return self._loader(self.test)


class NoFolds(L.LightningDataModule):
    """A data module that cannot list its samples."""

    def __init__(self, n: int, batch_size: int):
        super().__init__()


class ToyModel(L.LightningModule):
    def __init__(self, lr: float):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Linear(2, 2)

    def _step(self, batch, split):
        x, y = batch
        logits = self.net(x)
        loss = nn.functional.cross_entropy(logits, y)
        self.log(f"{split}/loss", loss, on_epoch=True, on_step=False)
        self.log(f"{split}/acc", (logits.argmax(1) == y).float().mean(), on_epoch=True, on_step=False)
        return loss

    def training_step(self, batch, i):
        return self._step(batch, "train")

    def validation_step(self, batch, i):
        self._step(batch, "val")

    def test_step(self, batch, i):
        self._step(batch, "test")

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
'''

CONFIGS = {
    "data/toy.yaml": "_target_: toyexp.ToyData\nn: 120\nbatch_size: 16\n",
    "model/toy.yaml": "_target_: toyexp.ToyModel\nlr: 0.5\n",
    "experiment/toy.yaml": """
        # @package _global_
        defaults:
          - override /data: toy
          - override /model: toy
        task_name: toy
        trainer:
          max_epochs: 3
          enable_progress_bar: false
        callbacks:
          model_checkpoint: {monitor: val/acc, mode: max}
          learning_curves: null
        """,
}


@pytest.fixture
def toy(tmp_path, monkeypatch) -> list[str]:
    """A user's experiment outside the package: the overrides that select it."""
    (tmp_path / "toyexp.py").write_text(TOY)
    for name, text in CONFIGS.items():
        (tmp_path / "conf" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "conf" / name).write_text(textwrap.dedent(text).lstrip())
    monkeypatch.syspath_prepend(str(tmp_path))
    return [f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "experiment=toy", "logger=none"]


def test_seed_sweep_of_a_new_experiment_gets_a_seed_summary(toy, tmp_path):
    sweep = tmp_path / "sweep"
    p = run_cli("train.py", ["-m", *toy, "seed=0,1,2", "model.lr=0.1,0.5", f"hydra.sweep.dir={sweep}"])
    assert p.returncode == 0, p.stderr[-3000:]
    jobs = [json.loads(f.read_text()) for f in sorted(sweep.glob("*/results.json"))]
    assert len(jobs) == 6 and all(j["status"] == "completed" for j in jobs)
    md = (sweep / "seeds.md").read_text()
    for lr in ("0.1", "0.5"):
        accs = [j["metrics"]["test/acc"] for j in jobs if f"model.lr={lr}" in j["overrides"]]
        mean = sum(accs) / 3
        std = math.sqrt(sum((a - mean) ** 2 for a in accs) / 2)
        half = 4.302653 * std / math.sqrt(3)  # Student t, 2 degrees of freedom, 97.5 %
        row = next(line for line in md.splitlines() if line.startswith(f"| model.lr={lr} |"))
        d = max(0, 1 - math.floor(math.log10(std)))  # to the std's second significant digit
        assert f"{mean:.{d}f} ± {std:.{d}f} [{mean - half:.{d}f}, {mean + half:.{d}f}]" in row, row
        assert "| 3 | 0 | 0, 1, 2 |" in row
    assert (sweep / "seeds.csv").is_file() and (sweep / "seeds.png").stat().st_size > 5000


def test_cross_validation_of_a_new_experiment_pools_its_folds_and_resumes(toy, tmp_path):
    run = tmp_path / "cv"
    p = run_cli("train.py", [*toy, "cv.folds=3", "seed=1", f"hydra.run.dir={run}"])
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads((run / "results.json").read_text())
    assert r["status"] == "completed"
    folds = json.loads((run / "cv_folds.json").read_text())["test"]
    assert sorted(i for f in folds for i in f) == list(range(120))  # every sample held out exactly once
    rows = [json.loads((run / f"fold_{k}" / "results.json").read_text()) for k in range(3)]
    assert [x["n_test"] for x in rows] == [len(f) for f in folds] == [40, 40, 40]
    pooled = sum(x["metrics"]["test/acc"] * x["n_test"] for x in rows) / 120
    m = r["metrics"]
    assert m["cv/acc"] == pytest.approx(pooled)
    assert m["cv/acc_mean"] == pytest.approx(sum(x["metrics"]["test/acc"] for x in rows) / 3)
    assert len(m["cv/folds"]) == 3 and (run / "cv_folds.md").is_file()
    # a kill during fold 2: the finished folds are kept, fold 2 is trained again, in place
    first = (run / "fold_0" / "results.json").stat().st_mtime_ns
    (run / "fold_2" / "results.json").unlink()
    r2 = run_cli(
        "train.py",
        [*toy, "cv.folds=3", "seed=1", f"hydra.run.dir={run}", f"ckpt_path={run}/fold_2/checkpoints/last.ckpt"],
    )
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert (run / "fold_0" / "results.json").stat().st_mtime_ns == first
    assert json.loads((run / "fold_2" / "results.json").read_text())["status"] == "completed"


def test_grouped_folds_keep_each_group_in_one_fold(toy, tmp_path):
    run = tmp_path / "lowo"
    p = run_cli("train.py", [*toy, "cv.folds=4", "cv.group_by=group", f"hydra.run.dir={run}"])
    assert p.returncode == 0, p.stderr[-3000:]
    rows = json.loads((run / "results.json").read_text())["metrics"]["cv/folds"]
    assert sorted(r["group"] for r in rows) == ["g0", "g1", "g2", "g3"]  # leave one group out


def test_cv_needs_a_data_module_that_lists_its_samples(toy, tmp_path):
    p = run_cli("train.py", [*toy, "cv.folds=3", "data._target_=toyexp.NoFolds", f"hydra.run.dir={tmp_path / 'x'}"])
    assert p.returncode == 2 and "NoFolds cannot list its samples" in p.stderr, p.stderr[-2000:]


def test_one_run_over_several_seeds_reports_their_mean_and_resumes_seed_by_seed(toy, tmp_path):
    """repeat.seeds=[3,5,7]: each seed is the same fit a plain run of that seed makes (same numbers),
    the run's metrics are their mean (what a sweeper optimizes) with `_seed_std`, and a killed run
    resumes in place: finished seeds read back, the unfinished one trained again."""
    run = tmp_path / "rep"
    p = run_cli("train.py", [*toy, "repeat.seeds=[3,5,7]", "optimized_metric=val/acc", f"hydra.run.dir={run}"])
    assert p.returncode == 0, p.stderr[-3000:]
    seeds = {s: json.loads((run / f"seed_{s}" / "results.json").read_text())["metrics"] for s in (3, 5, 7)}
    plain = run_cli("train.py", [*toy, "seed=5", f"hydra.run.dir={tmp_path / 'plain5'}"])
    assert plain.returncode == 0, plain.stderr[-3000:]
    alone = json.loads((tmp_path / "plain5" / "results.json").read_text())["metrics"]
    assert seeds[5]["test/acc"] == alone["test/acc"] and seeds[5]["val/loss"] == alone["val/loss"]
    m = json.loads((run / "results.json").read_text())["metrics"]
    for key in ("test/acc", "val/loss"):
        vals = [seeds[s][key] for s in (3, 5, 7)]
        mean = sum(vals) / 3
        assert m[key] == pytest.approx(mean)
        assert m[f"{key}_seed_std"] == pytest.approx(math.sqrt(sum((v - mean) ** 2 for v in vals) / 2))
    assert [r["seed"] for r in m["repeat/seeds"]] == [3, 5, 7]
    assert "| 5 |" in (run / "seeds.md").read_text() and "val/acc" in p.stderr + p.stdout
    # a kill during seed 7: seeds 3 and 5 are read back (their files untouched), seed 7 trained again
    first = (run / "seed_3" / "results.json").stat().st_mtime_ns
    (run / "seed_7" / "results.json").write_text(json.dumps({"status": "running"}))
    resume = [*toy, "repeat.seeds=[3,5,7]", f"hydra.run.dir={run}", f"ckpt_path={run}/seed_7/checkpoints/last.ckpt"]
    r2 = run_cli("train.py", resume)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert (run / "seed_3" / "results.json").stat().st_mtime_ns == first
    again = json.loads((run / "results.json").read_text())["metrics"]
    assert json.loads((run / "seed_7" / "results.json").read_text())["status"] == "completed"
    assert again["test/acc"] == pytest.approx(m["test/acc"])


@pytest.mark.parametrize(
    "over, message",
    [
        (["repeat.seeds=[1,1]"], "repeat.seeds must list each seed once"),
        (["repeat.seeds=[1,2]", "cv.folds=2"], "repeat.seeds and cv.folds cannot be combined"),
        (["repeat.seeds=[-1]"], "repeat.seeds must hold seeds in [0,"),
    ],
)
def test_repeat_refuses_what_it_cannot_do(toy, tmp_path, over, message):
    p = run_cli("train.py", [*toy, *over, f"hydra.run.dir={tmp_path / 'x'}"])
    assert p.returncode == 2 and message in p.stderr, p.stderr[-2000:]
